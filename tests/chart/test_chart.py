"""helm/mlrig and k8s/: lint, schemas, Pod Security, policy check, the values' conventions."""

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
from tests.chart.conftest import (
    CHART,
    FIRST_INSTALL,
    VALUES_FILES,
    KubeTools,
    pod_specs,
    pod_templates,
    values_arguments,
)
from tests.support.project import REPO_ROOT

#: the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CHECKOV = "checkov==3.3.30"
#: kinds of CRDs the chart may render: not in the Kubernetes schemas (checked by their own test)
CUSTOM_KINDS = {"ServiceMonitor"}
#: the step pod template's image is a placeholder: the glue replaces it with each task's own,
#: which it starts only under the trusted prefix by digest (test_agent.py)
TASK_IMAGE_COMPONENTS = {"step"}

# Keys mlrig passes to the official clearml chart (helm/clearml-server-values.yaml, its second
# release), each documented in its values.yaml: github.com/clearml/clearml-helm-charts,
# charts/clearml/values.yaml (chart 7.14.4, commit 747c018): `clearml.existingSecret` ("Pass
# Clearml secrets using an existing secret", keys apiserver_key, apiserver_secret,
# secure_auth_token_secret, test_user_key, test_user_secret) and `apiserver.service.type`,
# `fileserver.service.type`, `webserver.service.type` (NodePort there).
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
#: values whose children are a Kubernetes object passed as is, documented by their parent
PASSTHROUGH_KEYS = {
    "podSecurityContext", "containerSecurityContext", "resources", "namespaceSelector",
    "podSelector", "ingressNamespaceSelector", "metricsNamespaceSelector",
}  # fmt: skip


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


def only(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container_env(pod_spec: dict[str, Any], container: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec["containers"] if c["name"] == container]
    return {env["name"]: env.get("value", env.get("valueFrom")) for env in found.get("env", [])}


@pytest.mark.parametrize("values", VALUES_FILES)
def test_chart_lints_strictly(kube_tools: KubeTools, values: str) -> None:
    result = kube_tools.helm_run(
        "lint", "--strict", str(kube_tools.chart), *values_arguments(values)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_renders_as_cloned_with_no_download(kube_tools: KubeTools) -> None:
    """No dependency to fetch (the ClearML server is a second release), no charts/ folder."""
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert "dependencies" not in metadata
    assert not (CHART / "charts").exists()
    assert kube_tools.chart == CHART
    result = kube_tools.template(*values_arguments(FIRST_INSTALL))
    assert result.returncode == 0, result.stderr


def test_a_bare_render_names_the_digests_and_secrets_it_needs(kube_tools: KubeTools) -> None:
    """The defaults pin no image of their own making and generate nothing without being asked."""
    result = kube_tools.template()
    assert result.returncode != 0
    for needed in (
        "mlflow.image.digest is empty",
        "objectStore.seaweedfs.image.digest is empty",
        "generateSecrets=true for a first helm install",
        "mlrig-mlflow (admin-password, flask-secret-key): then set mlflow.auth.existingSecret",
        "mlrig-s3-pipeline (access-key, secret-key): then set "
        "objectStore.identities.pipeline.existingSecret",
    ):
        assert needed in result.stderr, needed
    assert "Traceback" not in result.stderr


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
            if item["kind"] in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{source} {item['kind']}/{item['metadata']['name']}: {error}")
    assert not errors, "\n".join(errors)


def test_the_service_monitor_scrapes_the_metrics_sidecar(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The ServiceMonitor (a CRD: no Kubernetes schema) names the Service's metrics port."""
    objects = rendered["gitops-values.yaml"]
    monitor = only(objects, "ServiceMonitor", "mlrig-mlflow")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    service = only(objects, "Service", "mlrig-mlflow")
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics" and ports["metrics"]["port"] == 9464
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    spec = only(objects, "Deployment", "mlrig-mlflow")["spec"]["template"]["spec"]
    sidecar = container_env(spec, "metrics")
    assert sidecar["MLRIG_METRICS_PORT"] == "9464"
    (mlflow,) = [c for c in spec["containers"] if c["name"] == "mlflow"]
    assert mlflow["args"][-2:] == ["--expose-prometheus", "/metrics"]
    assert "ServiceMonitor" not in {o["kind"] for o in rendered[FIRST_INSTALL]}


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
        if pod.get("runAsUser") == 0:
            problems.append(f"{name}: pod runAsUser 0")
        if spec.get("hostNetwork"):
            problems.append(f"{name}: hostNetwork")
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container.get("securityContext", {})
            if context.get("runAsUser") == 0 or context.get("runAsNonRoot") is False:
                problems.append(f"{name}/{container['name']}: runs as root")
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


def test_every_empty_dir_has_a_size_limit(
    rendered: dict[str, list[dict[str, Any]]], kustomized: dict[str, list[dict[str, Any]]]
) -> None:
    unbounded = [
        f"{source}: {pod.name} volume {volume['name']}"
        for source, objects in [*rendered.items(), *kustomized.items()]
        for pod in pod_templates(objects)
        for volume in pod.spec.get("volumes", [])
        if "emptyDir" in volume and not volume["emptyDir"].get("sizeLimit")
    ]
    assert not unbounded, "\n".join(unbounded)


def test_every_image_of_the_chart_runs_by_digest(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    by_tag = [
        f"{source}: {pod.name} {container['image']}"
        for source, objects in rendered.items()
        for pod in pod_templates(objects)
        if pod.component not in TASK_IMAGE_COMPONENTS
        for container in pod.containers()
        if not re.search(r"@sha256:[0-9a-f]{64}$", container["image"])
    ]
    assert not by_tag, "\n".join(by_tag)


def test_a_registry_mirror_pull_secrets_and_a_workload_identity_reach_every_server_pod(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["gitops-values.yaml"]
    account = only(objects, "ServiceAccount", "mlrig")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlrig"
    }
    pods = list(pod_templates(objects))
    assert {pod.component for pod in pods} == {
        "mlflow", "postgresql", "seaweedfs", "bucket-init", "mlflow-users"
    }  # fmt: skip
    for pod in pods:
        assert pod.spec["serviceAccountName"] == "mlrig", pod.name
        assert pod.spec["automountServiceAccountToken"] is False, pod.name
        assert pod.spec["imagePullSecrets"] == [{"name": "registry-example-com"}], pod.name
        for container in pod.containers():
            assert container["image"].startswith("registry.example.com/"), container["image"]
    seaweedfs = only(objects, "StatefulSet", "mlrig-seaweedfs")["spec"]["template"]["spec"]
    assert seaweedfs["containers"][0]["image"].startswith(
        "registry.example.com/chrislusf/seaweedfs@sha256:"
    )
    assert seaweedfs["nodeSelector"] == {"node.kubernetes.io/storage": "fast"}
    assert seaweedfs["tolerations"][0]["key"] == "dedicated"


def test_placement_and_extra_env_apply_per_component(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["gitops-values.yaml"]
    mlflow = only(objects, "Deployment", "mlrig-mlflow")["spec"]["template"]["spec"]
    anti = mlflow["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    (spread,) = mlflow["topologySpreadConstraints"]
    # a spread names no selector in values: the component's own pods are what it spreads
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    assert container_env(mlflow, "mlflow")["MLFLOW_LOGGING_LEVEL"] == "INFO"
    postgresql = only(objects, "StatefulSet", "mlrig-postgresql")["spec"]["template"]["spec"]
    assert container_env(postgresql, "postgresql")["POSTGRES_INITDB_ARGS"] == "--data-checksums"
    assert "nodeSelector" not in mlflow and "affinity" not in postgresql


def test_disruption_budgets_and_the_database_startup_probe(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    gitops = rendered["gitops-values.yaml"]
    budgets = {
        o["metadata"]["name"]: o["spec"] for o in gitops if o["kind"] == "PodDisruptionBudget"
    }
    assert budgets["mlrig-mlflow"]["maxUnavailable"] == 1
    assert budgets["mlrig-postgresql"]["minAvailable"] == 1
    assert budgets["mlrig-seaweedfs"]["minAvailable"] == 1
    defaults = {
        o["metadata"]["name"] for o in rendered[FIRST_INSTALL] if o["kind"] == "PodDisruptionBudget"
    }
    assert defaults == {"mlrig-mlflow"}  # a single database or store blocks drains only if asked
    database = only(gitops, "StatefulSet", "mlrig-postgresql")["spec"]["template"]["spec"]
    probe = database["containers"][0]["startupProbe"]
    assert probe["exec"]["command"][0] == "pg_isready"
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 300


def test_mlflow_answers_only_its_own_host_names(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """No private-range wildcard: the probes call /health, which MLflow answers whatever the
    Host, and metrics have their own port."""
    for name, objects in rendered.items():
        spec = only(objects, "Deployment", "mlrig-mlflow")["spec"]["template"]["spec"]
        hosts = container_env(spec, "mlflow")["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
        assert all("*" not in host.split(":")[0] for host in hosts), (name, hosts)
        assert {"mlrig-mlflow:*", "mlrig-mlflow.mlrig.svc.cluster.local", "localhost:*"} <= set(
            hosts
        )
        probes = [
            spec["containers"][0][probe]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        ]
        assert {probe["httpGet"]["path"] for probe in probes} == {"/health"}
    gitops = rendered["gitops-values.yaml"]
    spec = only(gitops, "Deployment", "mlrig-mlflow")["spec"]["template"]["spec"]
    assert "mlflow.example.com:*" in container_env(spec, "mlflow")["MLFLOW_SERVER_ALLOWED_HOSTS"]


def test_the_ingress_takes_hosts_and_tls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingress = only(rendered["gitops-values.yaml"], "Ingress", "mlrig-mlflow")["spec"]
    assert ingress["tls"] == [
        {"secretName": "mlflow-example-com-tls", "hosts": ["mlflow.example.com"]}
    ]
    (rule,) = ingress["rules"]
    assert rule["host"] == "mlflow.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "mlrig-mlflow",
        "port": {"name": "http"},
    }
    assert "tls" not in only(rendered["external-values.yaml"], "Ingress", "mlrig-mlflow")["spec"]


def notes(kube_tools: KubeTools, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster)."""
    result = kube_tools.helm_run(
        "install", "mlrig", str(kube_tools.chart), "--namespace", "mlrig", "--dry-run=client",
        "--hide-secret", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_warn_when_basic_auth_would_travel_without_tls(kube_tools: KubeTools) -> None:
    clear = notes(kube_tools, *values_arguments("external-values.yaml"))
    assert "WARNING: MLflow's basic auth sends the password" in clear
    assert "mlflow.example.com without TLS" in clear
    assert "http://mlflow.example.com/" in clear
    secured = notes(kube_tools, *values_arguments("gitops-values.yaml"))
    assert "WARNING" not in secured
    assert "https://mlflow.example.com/" in secured
    exposed = notes(
        kube_tools, *values_arguments(FIRST_INSTALL), "--set", "mlflow.service.type=LoadBalancer"
    )
    assert "WARNING: the MLflow Service is a LoadBalancer" in exposed
    assert "MLFLOW_TRACKING_USERNAME=pipeline" in exposed


def test_no_credential_is_a_literal_or_leaks_into_another_object(kube_tools: KubeTools) -> None:
    """Generated Secrets hold random values (two renders differ) found nowhere else."""
    first = kube_tools.render(*values_arguments(FIRST_INSTALL))
    second = kube_tools.render(*values_arguments(FIRST_INSTALL))
    first_secrets, second_secrets = secret_values(first), secret_values(second)
    assert set(first_secrets) == {
        "mlrig-mlflow/admin-password",
        "mlrig-mlflow/flask-secret-key",
        "mlrig-mlflow-pipeline/password",
        "mlrig-postgresql/password",
        "mlrig-s3/access-key",
        "mlrig-s3/secret-key",
        "mlrig-s3-pipeline/access-key",
        "mlrig-s3-pipeline/secret-key",
        "mlrig-s3-mlflow/access-key",
        "mlrig-s3-mlflow/secret-key",
    }
    for key, value in first_secrets.items():
        assert re.fullmatch(r"[A-Za-z0-9]{20,}", value), key
        assert value != second_secrets[key], f"{key} is the same in two renders: a literal"
    others = yaml.safe_dump_all([item for item in first if item["kind"] != "Secret"])
    leaked = [key for key, value in first_secrets.items() if value in others]
    assert not leaked, f"secret values outside their Secret: {leaked}"


def test_clearml_server_keys_are_generated_not_the_clearml_charts_defaults(
    kube_tools: KubeTools,
) -> None:
    # the Secret the clearml release reads through clearml.existingSecret (rendered by mlrig)
    template = kube_tools.template(
        *values_arguments(FIRST_INSTALL), "--set", "clearmlServer.enabled=true",
        "--show-only", "templates/clearml-server-secret.yaml",
    )  # fmt: skip
    assert template.returncode == 0, template.stderr
    secret = yaml.safe_load(template.stdout)
    assert secret["metadata"]["name"] == "mlrig-clearml-server"
    assert set(secret["stringData"]) == CLEARML_SECRET_KEYS
    defaults = {"GGS9F4M6XB2DXJ5AFT9F", "2oGujVFhPfaozhpuz2GzQfA5OyxmMsR3WVJpsCR5hrgHFs20PO"}
    assert not defaults & set(secret["stringData"].values())
    second_release = yaml.safe_load((REPO_ROOT / "helm" / "clearml-server-values.yaml").read_text())
    assert second_release["clearml"]["existingSecret"] == secret["metadata"]["name"]


def test_values_passed_to_the_clearml_chart_are_documented_there() -> None:
    values = yaml.safe_load((REPO_ROOT / "helm" / "clearml-server-values.yaml").read_text())
    passed = leaf_keys(values)
    assert passed, "no value is passed to the clearml chart"
    assert passed <= CLEARML_DOCUMENTED_KEYS, passed - CLEARML_DOCUMENTED_KEYS


def test_bad_values_are_reported_together(kube_tools: KubeTools) -> None:
    result = kube_tools.template(
        *values_arguments(FIRST_INSTALL),
        "--set", "objectStore.provider=external,agent.enabled=true,mlflow.ingress.enabled=true",
        "--set", "mlflow.ingress.hosts=null,mlflow.pipelineUser.username=admin",
    )  # fmt: skip
    assert result.returncode != 0
    for problem in (
        "objectStore.provider external needs objectStore.external.endpoint",
        "objectStore.provider external needs objectStore.identities.pipeline.existingSecret",
        "objectStore.provider external needs objectStore.identities.mlflow.existingSecret",
        "agent.enabled needs agent.existingSecret",
        "agent.enabled with networkPolicy.enabled needs networkPolicy.apiServer.cidrs",
        "mlflow.ingress.enabled needs mlflow.ingress.hosts",
        "mlflow.pipelineUser.username must differ from mlflow.auth.adminUsername",
    ):
        assert problem in result.stderr, problem


@pytest.mark.parametrize(
    "setting",
    ["mlflow.extra=1", "objectStore.seaweedfs.image.color=red", "unknown=1", "hooks.extra=1"],
)
def test_the_schema_rejects_unknown_keys(kube_tools: KubeTools, setting: str) -> None:
    result = kube_tools.template(*values_arguments(FIRST_INSTALL), "--set", setting)
    assert result.returncode != 0
    assert "additional properties" in result.stderr


def test_schema_forbids_additional_properties_at_every_level() -> None:
    """Every object of the schema closes its keys, but for Kubernetes objects passed as is
    (checked against the Kubernetes schemas once rendered)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object":
            closed = node.get("additionalProperties")
            passthrough = closed is True and "Kubernetes object" in node.get("description", "")
            if closed is None or (closed is True and not passthrough):
                open_objects.append(path)
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    assert not open_objects


def test_every_value_has_a_doc_comment() -> None:
    """values.yaml's first line points at the schema, and every key has a `# --` comment above
    it (the children of a Kubernetes object passed as is are documented by their parent)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=values.schema.json"
    undocumented, parents = [], []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z][\w.-]*):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1)) + (2 if match.group(2) else 0)
        parents = [(depth, key) for depth, key in parents if depth < indent]
        key = match.group(3)
        if not any(parent in PASSTHROUGH_KEYS for _, parent in parents):
            above = number - 1
            while (
                above >= 0 and lines[above].strip().startswith("#") and "# --" not in lines[above]
            ):
                above -= 1
            if above < 0 or "# --" not in lines[above]:
                undocumented.append(f"line {number + 1}: {key}")
        parents.append((indent, key))
    assert not undocumented, "\n".join(undocumented)


def test_pods_roll_when_their_config_changes(kube_tools: KubeTools) -> None:
    def mlflow_checksum(*args: str) -> str:
        only_mlflow = ["--show-only", "templates/mlflow-deployment.yaml"]
        values = values_arguments("gitops-values.yaml")
        (deployment,) = kube_tools.render(*values, *only_mlflow, *args)
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
