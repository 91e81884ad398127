"""The scoring server's request log (`serving.logRequests`) and the drift CronJob
(`drift.schedule`) as the chart renders them: what runs, with which identities, where it may
connect, and the values it refuses.

The generic checks (Kubernetes schemas, Pod Security restricted, lint, checkov, digests) cover
helm/mlrig/ci/drift-values.yaml with every other values file (test_chart.py); the CronJob is
also validated here on its own, so a failure names it.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import CHART, FIRST_INSTALL, KubeTools, pod_templates, values_arguments
from tests.chart.test_chart_access import applying, reachable

DRIFT_VALUES = CHART / "ci" / "drift-values.yaml"
GIT_SERVER = "203.0.113.10/32"


@pytest.fixture(scope="module")
def objects(kube_tools: KubeTools) -> list[dict[str, Any]]:
    return kube_tools.render("--values", str(DRIFT_VALUES))


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_neither_is_rendered_unless_asked(kube_tools: KubeTools) -> None:
    objects = kube_tools.render(*values_arguments(FIRST_INSTALL))
    assert not [o for o in objects if o["kind"] == "CronJob"]
    names = {o["metadata"]["name"] for o in objects}
    assert not names & {"mlrig-s3-serving", "mlrig-s3-drift", "mlrig-drift"}
    served = kube_tools.render(*values_arguments("serving-values.yaml"))
    (server,) = named(served, "Deployment", "mlrig-serving")["spec"]["template"]["spec"][
        "containers"
    ]
    assert "MLRIG_SERVE_REQUEST_LOG" not in env_of(server)


def test_the_cronjob_runs_mlrig_drift_on_the_request_log_under_tini(
    objects: list[dict[str, Any]],
) -> None:
    cronjob = named(objects, "CronJob", "mlrig-drift")
    assert cronjob["spec"]["schedule"] == "0 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (drift,) = pod["containers"]
    assert drift["command"] == [
        "/usr/bin/tini", "-g", "--", "mlrig", "drift",
        "--data", "s3://mlrig-requests/requests/mlrig-iris/",
        "--model", "mlrig-iris", "--no-record", "--json",
    ]  # fmt: skip
    assert drift["image"].startswith("registry.example.com/mlrig/serve@sha256:")
    assert drift["workingDir"] == "/workspace/project"
    checkout, remote = pod["initContainers"]
    assert "https://git.example.com/team/mlrig.git" in env_of(checkout).values()
    assert checkout["image"].startswith("docker.io/alpine/git@sha256:")
    assert "--default" in remote["args"][0]  # DVC's file system reads the default remote
    assert env_of(remote)["DVC_BUCKET"] == "mlrig-dvc"
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(cronjob, version, strict=True)


def test_the_cronjob_only_reads_with_its_own_keys_and_the_read_only_mlflow_user(
    objects: list[dict[str, Any]],
) -> None:
    (pod,) = [p for p in pod_templates(objects) if p.name == "CronJob/mlrig-drift"]
    assert pod.secret_refs() == {"mlrig-serving-identity", "mlrig-s3-drift"}
    env = env_of(pod.spec["containers"][0])
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "mlrig-s3-drift"
    assert env["MLFLOW_TRACKING_USERNAME"]["secretKeyRef"] == {
        "name": "mlrig-serving-identity", "key": "mlflow-username"
    }  # fmt: skip
    assert pod.spec["securityContext"]["runAsNonRoot"] is True
    assert pod.spec["automountServiceAccountToken"] is False


def test_the_scoring_server_logs_with_keys_that_write_only_its_prefix(
    objects: list[dict[str, Any]],
) -> None:
    deployment = named(objects, "Deployment", "mlrig-serving")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(server)
    assert env["MLRIG_SERVE_REQUEST_LOG"] == "s3://mlrig-requests/requests"
    assert env["MLRIG_SERVE_REQUEST_LOG_BATCH_REQUESTS"] == "500"
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "mlrig-s3-serving"
    assert env["AWS_ENDPOINT_URL"] == "http://mlrig-s3:8333"
    # SeaweedFS writes the scoped identities from these (its start script, tested for real in
    # test_seaweedfs_identities.py); the bucket-init hook creates the request log's bucket
    store = named(objects, "StatefulSet", "mlrig-seaweedfs")
    store_env = env_of(store["spec"]["template"]["spec"]["containers"][0])
    assert store_env["MLRIG_SERVING_ACCESS_KEY"]["secretKeyRef"]["name"] == "mlrig-s3-serving"
    assert store_env["MLRIG_DRIFT_ACCESS_KEY"]["secretKeyRef"]["name"] == "mlrig-s3-drift"
    assert store_env["MLRIG_REQUESTS_BUCKET"] == "mlrig-requests"
    assert store_env["MLRIG_REQUESTS_PREFIX"] == "requests"
    assert store_env["MLRIG_DRIFT_DATA_BUCKET"] == "mlrig-requests"
    hook = named(objects, "Job", "mlrig-bucket-init")
    hook_env = env_of(hook["spec"]["template"]["spec"]["containers"][0])
    assert hook_env["MLRIG_BUCKETS"] == "mlrig-dvc,mlrig-mlflow,mlrig-requests"


def test_each_reaches_what_it_needs_and_nothing_else(objects: list[dict[str, Any]]) -> None:
    pods = {pod.component: pod for pod in pod_templates(objects)}
    assert reachable(objects, pods["drift"].labels) == {("mlflow", 5000), ("seaweedfs", 8333)}
    assert reachable(objects, pods["serving"].labels) == {("mlflow", 5000), ("seaweedfs", 8333)}
    cidrs = {
        peer["ipBlock"]["cidr"]
        for spec in applying(objects, pods["drift"].labels, "Egress")
        for rule in spec.get("egress", [])
        for peer in rule["to"]
        if "ipBlock" in peer
    }
    assert cidrs == {GIT_SERVER}
    callers = {
        value
        for spec in applying(objects, pods["seaweedfs"].labels, "Ingress")
        for rule in spec.get("ingress", [])
        for peer in rule["from"]
        for expression in peer.get("podSelector", {}).get("matchExpressions", [])
        for value in expression["values"]
    }
    assert {"serving", "drift"} <= callers
    admitted = [
        spec
        for spec in applying(objects, pods["mlflow"].labels, "Ingress")
        if any(
            "drift" in expression["values"]
            for rule in spec.get("ingress", [])
            for peer in rule["from"]
            for expression in peer.get("podSelector", {}).get("matchExpressions", [])
        )
    ]
    assert admitted, "MLflow does not admit the drift CronJob"
    drift_policy = named(objects, "NetworkPolicy", "mlrig-drift")["spec"]
    assert drift_policy["ingress"] == []  # nothing calls it


def test_missing_drift_values_are_reported_together(kube_tools: KubeTools) -> None:
    result = kube_tools.template(
        *values_arguments(FIRST_INSTALL), "--set", "drift.schedule.enabled=true"
    )
    assert result.returncode != 0
    for problem in (
        "drift.schedule.enabled needs drift.schedule.model or serving.model",
        "needs drift.schedule.data (an s3:// prefix or file) or serving.logRequests.enabled",
        "needs drift.schedule.source.gitUrl",
        "needs drift.schedule.existingSecret or serving.existingSecret",
        "the drift image (drift.schedule.image, else serving.image) needs its digest",
    ):
        assert problem in result.stderr, problem
    assert "Traceback" not in result.stderr


def test_data_elsewhere_is_read_with_keys_allowed_its_bucket(kube_tools: KubeTools) -> None:
    objects = kube_tools.render(
        "--values", str(DRIFT_VALUES),
        "--set", "serving.logRequests.enabled=false",
        "--set", "drift.schedule.data=s3://team-data/new/customers.parquet",
    )  # fmt: skip
    cronjob = named(objects, "CronJob", "mlrig-drift")
    (drift,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert drift["command"][6] == "s3://team-data/new/customers.parquet"
    store = named(objects, "StatefulSet", "mlrig-seaweedfs")
    store_env = env_of(store["spec"]["template"]["spec"]["containers"][0])
    assert store_env["MLRIG_DRIFT_DATA_BUCKET"] == "team-data"
    assert "MLRIG_SERVING_ACCESS_KEY" not in store_env  # the server logs nothing


def test_an_external_store_needs_the_scoped_keys_named(kube_tools: KubeTools) -> None:
    result = kube_tools.template(
        "--values", str(DRIFT_VALUES),
        "--set", "objectStore.provider=external",
        "--set", "objectStore.external.endpoint=https://s3.example.com",
        "--set", "objectStore.identities.pipeline.existingSecret=p",
        "--set", "objectStore.identities.mlflow.existingSecret=m",
    )  # fmt: skip
    assert result.returncode != 0
    assert "needs objectStore.identities.serving.existingSecret" in result.stderr
    assert "write under s3://mlrig-requests/requests/ only" in result.stderr
    assert "needs objectStore.identities.drift.existingSecret" in result.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "serving.logRequests.prefix=/leading",
        "serving.logRequests.bucket=Bad_Bucket",
        "serving.logRequests.batchRequests=0",
        "drift.schedule.data=https://example.com/x.csv",
        "drift.schedule.extra=1",
    ],
)
def test_the_schema_rejects_malformed_values(kube_tools: KubeTools, setting: str) -> None:
    result = kube_tools.template("--values", str(DRIFT_VALUES), "--set", setting)
    assert result.returncode != 0


def test_kserve_cannot_log_requests(kube_tools: KubeTools) -> None:
    result = kube_tools.template(
        "--values", str(DRIFT_VALUES),
        "--set", "serving.kserve.enabled=true",
        "--set", "serving.kserve.storageUri=s3://mlrig-mlflow/artifacts/1/m/artifacts",
    )  # fmt: skip
    assert result.returncode != 0
    assert "serving.logRequests needs the chart's scoring server" in result.stderr


def test_the_values_file_documents_every_new_key() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["serving"]["logRequests"]) == {
        "enabled", "bucket", "prefix", "batchRequests", "batchSeconds"
    }  # fmt: skip
    assert values["drift"]["schedule"]["enabled"] is False
