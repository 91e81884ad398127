"""The mlflow-users hook as the chart renders it: the read-only identities (the scoring
server's, the drift CronJob's) it makes from the Secrets the values name, read by secretKeyRef
only. What the hook's script does with them against a real MLflow server is tested in
tests/integration/test_mlflow_users_hook.py, and in the played chart (test_kube_play.py)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import yaml

from tests.chart.conftest import CHART, FIRST_INSTALL, KubeTools, pod_templates, values_arguments
from tests.chart.test_chart import notes

SERVING_VALUES = ["--values", str(CHART / "ci" / "serving-values.yaml")]
DRIFT_VALUES = ["--values", str(CHART / "ci" / "drift-values.yaml")]
#: the Secret serving.existingSecret names in the ci values (never rendered by the chart)
SERVING_SECRET = "mlrig-serving-identity"


def hook_job(kube_tools: KubeTools, *args: str) -> dict[str, Any]:
    (job,) = [
        item
        for item in kube_tools.render(*args)
        if item["kind"] == "Job" and item["metadata"]["name"] == "mlrig-mlflow-users"
    ]
    return job


def hook_env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def readers(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The read-only identities the hook is told to make (MLRIG_READERS)."""
    return json.loads(hook_env(job)["MLRIG_READERS"]["value"])


def identity_env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The hook's variables that carry a read-only identity's user name or password."""
    return {
        name: item
        for name, item in hook_env(job).items()
        if name.endswith(("_USERNAME", "_PASSWORD")) and "PIPELINE" not in name
        and not name.startswith("MLFLOW_ADMIN")
    }  # fmt: skip


def test_without_serving_the_hook_makes_only_the_pipelines_user(kube_tools: KubeTools) -> None:
    job = hook_job(kube_tools, *values_arguments(FIRST_INSTALL))
    assert readers(job) == []
    assert identity_env(job) == {}


def test_with_serving_the_hook_reads_the_serving_identity_from_its_secret(
    kube_tools: KubeTools,
) -> None:
    job = hook_job(kube_tools, *SERVING_VALUES)
    assert readers(job) == [
        {"role": "serving", "secret": SERVING_SECRET, "registeredModels": ["mlrig-iris"]}
    ]
    assert identity_env(job) == {
        f"MLRIG_SERVING_{key.upper()}": {
            "name": f"MLRIG_SERVING_{key.upper()}",
            "valueFrom": {"secretKeyRef": {"name": SERVING_SECRET, "key": f"mlflow-{key}"}},
        }
        for key in ("username", "password")
    }
    (hook,) = [pod for pod in pod_templates([job])]
    assert hook.secret_refs() == {"mlrig-mlflow", "mlrig-mlflow-pipeline", SERVING_SECRET}
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(job, version, strict=True)


def test_the_serving_identitys_secret_is_never_rendered_nor_its_values(
    kube_tools: KubeTools,
) -> None:
    """The operator makes the Secret; the chart only names it (its values are not in the
    chart's values to leak)."""
    objects = kube_tools.render(*SERVING_VALUES)
    assert SERVING_SECRET not in {
        item["metadata"]["name"] for item in objects if item["kind"] == "Secret"
    }
    manifests = yaml.safe_dump_all(objects)
    assert "mlflow-password" in manifests  # named as a key ...
    assert not [
        item
        for item in identity_env(hook_job(kube_tools, *SERVING_VALUES)).values()
        if "value" in item
    ]  # ... never given as a value


def test_no_serving_identity_when_the_server_reads_elsewhere(kube_tools: KubeTools) -> None:
    """KServe reads the model from S3, and serving.trackingUri is another MLflow: the chart's
    MLflow gets no serving user."""
    kserve = hook_job(
        kube_tools, *SERVING_VALUES,
        "--set", "serving.kserve.enabled=true",
        "--set", "serving.kserve.storageUri=s3://mlrig-mlflow/artifacts/1/models/m-1/artifacts",
    )  # fmt: skip
    elsewhere = hook_job(
        kube_tools, *SERVING_VALUES, "--set", "serving.trackingUri=https://mlflow.example.com"
    )
    for job in (kserve, elsewhere):
        assert readers(job) == []
        assert identity_env(job) == {}


def test_the_drift_cronjob_shares_the_serving_identity_unless_it_names_its_own(
    kube_tools: KubeTools,
) -> None:
    shared = hook_job(kube_tools, *DRIFT_VALUES, "--set", "drift.schedule.model=mlrig-wine")
    assert readers(shared) == [
        {"role": "serving", "secret": SERVING_SECRET,
         "registeredModels": ["mlrig-iris", "mlrig-wine"]},
    ]  # fmt: skip
    assert set(identity_env(shared)) == {"MLRIG_SERVING_USERNAME", "MLRIG_SERVING_PASSWORD"}

    own = hook_job(kube_tools, *DRIFT_VALUES, "--set", "drift.schedule.existingSecret=drift-id")
    assert readers(own) == [
        {"role": "serving", "secret": SERVING_SECRET, "registeredModels": ["mlrig-iris"]},
        {"role": "drift", "secret": "drift-id", "registeredModels": ["mlrig-iris"]},
    ]
    drift_password = identity_env(own)["MLRIG_DRIFT_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert drift_password == {"name": "drift-id", "key": "mlflow-password"}

    alone = hook_job(
        kube_tools, *DRIFT_VALUES,
        "--set", "serving.enabled=false", "--set", "drift.schedule.model=mlrig-iris",
    )  # fmt: skip
    assert readers(alone) == [
        {"role": "drift", "secret": SERVING_SECRET, "registeredModels": ["mlrig-iris"]}
    ]
    assert set(identity_env(alone)) == {"MLRIG_DRIFT_USERNAME", "MLRIG_DRIFT_PASSWORD"}


def test_the_notes_name_each_read_only_user_and_what_it_reads(kube_tools: KubeTools) -> None:
    printed = notes(kube_tools, *DRIFT_VALUES, "--set", "drift.schedule.existingSecret=drift-id")
    assert f"serving: Secret {SERVING_SECRET}, READ on mlrig-iris" in printed
    assert "drift: Secret drift-id, READ on mlrig-iris" in printed
    assert "read-only MLflow users" not in notes(kube_tools, *values_arguments(FIRST_INSTALL))
