"""The chart's scoring server (`serving.enabled`): what it renders, who may call it, how a
rollout patches it, and the KServe InferenceService checked against KServe's CRD schema.

The generic checks (Kubernetes schemas, Pod Security restricted, lint, checkov) cover
helm/mlrig/ci/serving-values.yaml with every other values file (test_chart.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlrig.serving.rollout import VERSION_ANNOTATION, version_patch
from tests.chart.conftest import CHART, FIRST_INSTALL, KubeTools, values_arguments

SERVING_VALUES = CHART / "ci" / "serving-values.yaml"
KSERVE_SCHEMA = Path(__file__).parent / "kserve-inferenceservice-v1beta1.schema.json"
KSERVE = [
    "--values", str(SERVING_VALUES),
    "--set", "serving.kserve.enabled=true",
    "--set", "serving.kserve.storageUri=s3://mlrig-mlflow/artifacts/1/models/m-1/artifacts",
    "--set", "serving.version=3",
]  # fmt: skip


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The serving component's objects by kind."""
    return {
        item["kind"]: item
        for item in objects
        if item["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "serving"
    }


@pytest.fixture(scope="module")
def serving(kube_tools: KubeTools) -> dict[str, dict[str, Any]]:
    return by_kind(kube_tools.render("--values", str(SERVING_VALUES)))


def test_nothing_is_served_unless_asked(kube_tools: KubeTools) -> None:
    assert by_kind(kube_tools.render(*values_arguments(FIRST_INSTALL))) == {}


def test_serving_renders_its_workload_and_what_guards_it(
    serving: dict[str, dict[str, Any]],
) -> None:
    assert set(serving) == {
        "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "NetworkPolicy",
    }  # fmt: skip
    deployment = serving["Deployment"]["spec"]
    assert "replicas" not in deployment  # the HPA owns them
    # a rollout never takes an old pod down before a new one is ready
    assert deployment["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    (container,) = deployment["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/ping"
    volumes = deployment["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]
    assert (
        serving["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (serving["Deployment"]["metadata"]["name"])
    )


def test_its_identity_comes_from_the_named_secret_only(
    serving: dict[str, dict[str, Any]],
) -> None:
    (container,) = serving["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlrig-serving-identity"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlrig-mlflow:5000"


def test_the_pods_serve_the_version_their_annotation_pins(
    kube_tools: KubeTools, serving: dict[str, dict[str, Any]]
) -> None:
    template = serving["Deployment"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    pin = next(item for item in container["env"] if item["name"] == "MLRIG_SERVE_VERSION_PIN")
    assert pin["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{VERSION_ANNOTATION}']"
    )
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == ""  # the alias's at start
    pinned = by_kind(
        kube_tools.render("--values", str(SERVING_VALUES), "--set", "serving.version=7")
    )
    assert pinned["Deployment"]["spec"]["template"]["metadata"]["annotations"] == {
        VERSION_ANNOTATION: "7"
    }


def test_the_rollout_patch_applies_to_the_rendered_deployment(
    kube_tools: KubeTools, serving: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """`mlrig serve rollout`'s patch, applied by the real kubectl (--local: no cluster)."""
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(serving["Deployment"]))
    result = subprocess.run(
        [str(kube_tools.kubectl), "patch", "--local", "--filename", str(manifest),
         "--type", "merge", "--patch", json.dumps(version_patch("8")), "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    patched = json.loads(result.stdout)
    assert patched["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == "8"
    assert patched["spec"]["template"]["spec"] == serving["Deployment"]["spec"]["template"]["spec"]


def test_only_the_ingress_controller_and_named_namespaces_may_call_it(
    kube_tools: KubeTools, serving: dict[str, dict[str, Any]]
) -> None:
    (rule,) = serving["NetworkPolicy"]["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "ingress-nginx",
        "apps",
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    closed = by_kind(
        kube_tools.render(
            "--values", str(SERVING_VALUES),
            "--set", "serving.networkPolicy.ingressControllerNamespace=",
            "--set", "serving.networkPolicy.allowedNamespaces=null",
        )
    )  # fmt: skip
    assert closed["NetworkPolicy"]["spec"]["ingress"] == []  # no one


def test_missing_serving_values_are_reported_together(kube_tools: KubeTools) -> None:
    result = kube_tools.template(
        *values_arguments(FIRST_INSTALL),
        "--set", "serving.enabled=true,serving.ingress.enabled=true",
    )  # fmt: skip
    assert result.returncode != 0
    assert "serving.image.digest is empty" in result.stderr
    result = kube_tools.template(
        *values_arguments(FIRST_INSTALL),
        "--set", "serving.enabled=true,serving.ingress.enabled=true,serving.kserve.enabled=true",
    )  # fmt: skip
    assert result.returncode != 0
    for problem in (
        "serving.enabled needs serving.model",
        "serving.enabled needs serving.existingSecret",
        "serving.ingress.enabled needs serving.ingress.host",
        "serving.kserve.enabled needs serving.kserve.storageUri",
    ):
        assert problem in result.stderr


@pytest.mark.parametrize(
    "setting",
    ["serving.extra=1", "serving.kserve.protocol=v2", "serving.version=latest",
     "serving.existingSecret.password=x"],
)  # fmt: skip
def test_the_schema_rejects_unknown_or_malformed_serving_values(
    kube_tools: KubeTools, setting: str
) -> None:
    result = kube_tools.template("--values", str(SERVING_VALUES), "--set", setting)
    assert result.returncode != 0


def test_kserve_renders_an_inferenceservice_instead(kube_tools: KubeTools) -> None:
    objects = by_kind(kube_tools.render(*KSERVE))
    assert set(objects) == {"InferenceService", "NetworkPolicy"}
    service = objects["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "mlflow"}
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"].startswith("s3://mlrig-mlflow/")
    assert service["metadata"]["annotations"][VERSION_ANNOTATION] == "3"
    selector = objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]
    assert selector == {"serving.kserve.io/inferenceservice": service["metadata"]["name"]}


def test_the_inferenceservice_matches_kserves_crd_schema(kube_tools: KubeTools) -> None:
    schema = json.loads(KSERVE_SCHEMA.read_text())
    service = by_kind(kube_tools.render(*KSERVE))["InferenceService"]
    jsonschema.validate(service, schema)
    # the schema can fail: a field KServe does not have, a wrong type
    for broken in (
        {**service, "spec": {"predictor": {**service["spec"]["predictor"], "modell": {}}}},
        {**service, "spec": {"predictor": {"minReplicas": "one"}}},
        {**service, "spec": {}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
