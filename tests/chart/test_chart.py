"""helm/mlrig and k8s/: lint, schemas, Pod Security, policy check, and no secret in a manifest."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlrig.images.build import find_uv
from tests.chart.conftest import CHART, VALUES_FILES, KubeTools, pod_specs, values_arguments
from tests.support.project import REPO_ROOT

#: the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CHECKOV = "checkov==3.3.30"

# Keys mlrig passes to the official clearml chart, each documented in its values.yaml:
# github.com/clearml/clearml-helm-charts, charts/clearml/values.yaml (chart 7.14.4, commit
# 747c018): `clearml.existingSecret` ("Pass Clearml secrets using an existing secret", keys
# apiserver_key, apiserver_secret, secure_auth_token_secret, test_user_key, test_user_secret)
# and `apiserver.service.type`, `fileserver.service.type`, `webserver.service.type` (NodePort
# there). `enabled` is the condition in our Chart.yaml, not a key of that chart.
CLEARML_DOCUMENTED_KEYS = {
    "clearml.existingSecret",
    "apiserver.service.type",
    "fileserver.service.type",
    "webserver.service.type",
}
CLEARML_SECRET_KEYS = {
    "apiserver_key",
    "apiserver_secret",
    "secure_auth_token_secret",
    "test_user_key",
    "test_user_secret",
}


def leaf_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys |= leaf_keys(value, f"{path}.") if isinstance(value, dict) else {path}
    return keys


def secret_values(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Every value of every rendered Secret, by `<secret>/<key>`."""
    return {
        f"{item['metadata']['name']}/{key}": value
        for item in objects
        if item["kind"] == "Secret"
        for key, value in item.get("stringData", {}).items()
    }


@pytest.mark.parametrize("values", VALUES_FILES)
def test_chart_lints_strictly(kube_tools: KubeTools, values: str) -> None:
    result = kube_tools.helm_run(
        "lint", "--strict", str(kube_tools.chart), *values_arguments(values)
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_rendered_object_matches_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]],
    kustomized: dict[str, list[dict[str, Any]]],
    version: str,
) -> None:
    sources = {f"chart:{name}": objects for name, objects in rendered.items()}
    sources |= {f"k8s/overlays/{name}": objects for name, objects in kustomized.items()}
    errors = []
    for source, objects in sources.items():
        assert objects, f"{source} rendered nothing"
        # the glue's task-pod template is a Pod too, applied by the glue's kubectl
        templates = [
            yaml.safe_load(item["data"]["template.yaml"])
            for item in objects
            if item["kind"] == "ConfigMap" and "template.yaml" in item.get("data", {})
        ]
        for item in objects + [{**pod, "metadata": {"name": "task"}} for pod in templates]:
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{source} {item['kind']}/{item['metadata']['name']}: {error}")
    assert not errors, "\n".join(errors)


def test_every_pod_passes_pod_security_restricted(
    rendered: dict[str, list[dict[str, Any]]], kustomized: dict[str, list[dict[str, Any]]]
) -> None:
    problems = []
    specs = [
        spec
        for objects in [*rendered.values(), *kustomized.values()]
        for spec in pod_specs(objects)
    ]
    assert len(specs) >= 10
    for name, spec in specs:
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True or pod.get("seccompProfile") != {
            "type": "RuntimeDefault"
        }:
            problems.append(f"{name}: pod runAsNonRoot/seccompProfile")
        if spec.get("hostNetwork"):
            problems.append(f"{name}: hostNetwork")
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container.get("securityContext", {})
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{container['name']}: allowPrivilegeEscalation")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}/{container['name']}: capabilities.drop ALL")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}/{container['name']}: readOnlyRootFilesystem")
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            if "/tmp" not in mounts:
                problems.append(f"{name}/{container['name']}: no writable /tmp")
            if not container.get("resources", {}).get("limits"):
                problems.append(f"{name}/{container['name']}: no resource limits")
    assert not problems, "\n".join(problems)


def test_namespaces_enforce_pod_security_restricted_and_deny_by_default(
    kustomized: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, objects in kustomized.items():
        kinds = {item["kind"] for item in objects}
        assert {"Namespace", "ResourceQuota", "LimitRange", "CronJob"} <= kinds, overlay
        (namespace,) = [item for item in objects if item["kind"] == "Namespace"]
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", overlay
        assert namespace["metadata"]["name"] == f"mlrig-{overlay}"
        policies = {
            item["metadata"]["name"]: item for item in objects if item["kind"] == "NetworkPolicy"
        }
        deny = policies["default-deny"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        database = policies["postgresql"]["spec"]["ingress"]
        assert [
            peer["podSelector"]["matchLabels"] for rule in database for peer in rule["from"]
        ] == [{"app.kubernetes.io/component": "mlflow"}]


def test_no_credential_is_a_literal_or_leaks_into_another_object(kube_tools: KubeTools) -> None:
    """Generated Secrets hold random values (two renders differ) found nowhere else."""
    first, second = kube_tools.render(), kube_tools.render()
    first_secrets, second_secrets = secret_values(first), secret_values(second)
    assert set(first_secrets) == {
        "mlrig-mlflow/admin-password",
        "mlrig-mlflow/flask-secret-key",
        "mlrig-postgresql/password",
        "mlrig-s3/access-key",
        "mlrig-s3/secret-key",
    }
    for key, value in first_secrets.items():
        assert re.fullmatch(r"[A-Za-z0-9]{20,}", value), key
        assert value != second_secrets[key], f"{key} is the same in two renders: a literal"
    others = yaml.safe_dump_all([item for item in first if item["kind"] != "Secret"])
    leaked = [key for key, value in first_secrets.items() if value in others]
    assert not leaked, f"secret values outside their Secret: {leaked}"


def test_existing_secrets_replace_every_generated_one(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["external-values.yaml"]
    assert secret_values(objects) == {}
    names = {
        ref["secretKeyRef"]["name"]
        for _, spec in pod_specs(objects)
        for container in spec["containers"]
        for env in container.get("env", [])
        if (ref := env.get("valueFrom"))
    }
    assert names == {"team-mlflow", "team-postgresql", "team-s3"}


def test_clearml_server_keys_are_generated_not_the_clearml_charts_defaults(
    kube_tools: KubeTools,
) -> None:
    # the Secret the clearml chart reads through clearml.existingSecret (rendered by our chart)
    template = kube_tools.template(
        "--set", "clearml.enabled=true", "--show-only", "templates/clearml-server-secret.yaml"
    )
    assert template.returncode == 0, template.stderr
    secret = yaml.safe_load(template.stdout)
    assert secret["metadata"]["name"] == "mlrig-clearml-server"
    assert set(secret["stringData"]) == CLEARML_SECRET_KEYS
    defaults = {"GGS9F4M6XB2DXJ5AFT9F", "2oGujVFhPfaozhpuz2GzQfA5OyxmMsR3WVJpsCR5hrgHFs20PO"}
    assert not defaults & set(secret["stringData"].values())


def test_values_passed_to_the_clearml_chart_are_documented_there() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["clearml"]
    passed = leaf_keys({key: value for key, value in values.items() if key != "enabled"})
    assert passed, "no value is passed to the clearml chart"
    assert passed <= CLEARML_DOCUMENTED_KEYS, passed - CLEARML_DOCUMENTED_KEYS


def test_bad_values_are_reported_together(kube_tools: KubeTools) -> None:
    result = kube_tools.template(
        "--set", "objectStore.external.enabled=true,agent.enabled=true,mlflow.ingress.enabled=true"
    )
    assert result.returncode != 0
    for problem in (
        "objectStore.external.enabled needs objectStore.external.endpoint",
        "objectStore.external.enabled needs objectStore.existingSecret",
        "agent.enabled needs agent.existingSecret",
        "mlflow.ingress.enabled needs mlflow.ingress.host",
    ):
        assert problem in result.stderr


@pytest.mark.parametrize(
    "setting", ["mlflow.extra=1", "objectStore.minio.image.color=red", "unknown=1"]
)
def test_the_schema_rejects_unknown_keys(kube_tools: KubeTools, setting: str) -> None:
    result = kube_tools.template("--set", setting)
    assert result.returncode != 0
    assert "additional properties" in result.stderr


def test_schema_forbids_additional_properties_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "additionalProperties" not in node:
            open_objects.append(path)
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")

    walk(schema, "")
    assert not open_objects


def test_pods_roll_when_their_config_changes(kube_tools: KubeTools) -> None:
    def mlflow_checksum(*args: str) -> str:
        (deployment,) = [
            item
            for item in kube_tools.render("--show-only", "templates/mlflow-deployment.yaml", *args)
        ]
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert mlflow_checksum() == mlflow_checksum()
    assert mlflow_checksum() != mlflow_checksum("--set", "mlflow.auth.defaultPermission=EDIT")


def test_policy_check_has_no_findings(
    rendered: dict[str, list[dict[str, Any]]],
    kustomized: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    """checkov on every rendering; exceptions are in .checkov.yaml, each with its reason."""
    for name, objects in [*rendered.items(), *kustomized.items()]:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(objects))
    result = subprocess.run(
        [find_uv(), "tool", "run", "--quiet", "--from", CHECKOV, "checkov",
         "--directory", str(tmp_path), "--config-file", str(REPO_ROOT / ".checkov.yaml"),
         "--output", "json", "--quiet", "--compact"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode not in (0, 1):
        pytest.fail(f"checkov did not run: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for part in reports
        for check in part.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    passed = sum(part.get("summary", {}).get("passed", 0) for part in reports)
    assert passed > 500, "checkov checked almost nothing"
