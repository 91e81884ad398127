"""Who can do what in the rendered chart and k8s/: each role's Secrets, the Secrets kept, the
GitOps render that names what to create, and NetworkPolicies that close egress."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    FIRST_INSTALL,
    VALUES_FILES,
    KubeTools,
    PodTemplate,
    pod_templates,
    values_arguments,
)

#: the Secrets each role reads in a first install (generated names), and nothing more
SECRETS_BY_ROLE = {
    "mlflow": {"mlrig-mlflow", "mlrig-postgresql", "mlrig-s3-mlflow"},
    "postgresql": {"mlrig-postgresql"},
    "seaweedfs": {"mlrig-s3", "mlrig-s3-pipeline", "mlrig-s3-mlflow"},
    "bucket-init": {"mlrig-s3"},
    "mlflow-users": {"mlrig-mlflow", "mlrig-mlflow-pipeline"},
}
#: all a pipeline's pod (a step, the CronJob) may hold: the pipeline's own identities
PIPELINE_SECRETS = {"mlrig-mlflow-pipeline", "mlrig-s3-pipeline"}
#: where each role's pods may connect (component, port), besides DNS, in a first install
EGRESS_BY_ROLE = {
    "mlflow": {("postgresql", 5432), ("seaweedfs", 8333)},
    "step": {("mlflow", 5000), ("seaweedfs", 8333)},
    "pipeline": {("mlflow", 5000), ("seaweedfs", 8333)},
    "bucket-init": {("mlflow", 5000), ("seaweedfs", 8333)},
    "mlflow-users": {("mlflow", 5000), ("seaweedfs", 8333)},
    "postgresql": set(),
    "seaweedfs": set(),
}
#: who may connect to each role's pods (component), in a first install
INGRESS_BY_ROLE = {
    "postgresql": {"mlflow"},
    "seaweedfs": {"mlflow", "bucket-init", "step", "pipeline"},
    "mlflow": {"step", "pipeline", "mlflow-users"},
}
RELEASE_LABELS = {"app.kubernetes.io/name": "mlrig", "app.kubernetes.io/instance": "mlrig"}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches the labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
    return True


def policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item["spec"] for item in objects if item["kind"] == "NetworkPolicy"]


def applying(objects: list[dict[str, Any]], labels: dict[str, str], kind: str) -> list[dict]:
    """The policies of one type (Ingress or Egress) that select a pod with these labels."""
    return [
        spec
        for spec in policies(objects)
        if kind in spec["policyTypes"] and selects(spec["podSelector"], labels)
    ]


def component_of(peer: dict[str, Any]) -> str:
    expressions = peer["podSelector"].get("matchExpressions", [])
    (values,) = [e["values"] for e in expressions if e["key"] == "app.kubernetes.io/component"]
    (component,) = values
    return component


def reachable(objects: list[dict[str, Any]], labels: dict[str, str]) -> set[tuple[str, int]]:
    """(component, port) of the release's pods that a pod with these labels may connect to."""
    found = set()
    for spec in applying(objects, labels, "Egress"):
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    continue  # DNS, or a CIDR checked apart
                if peer["podSelector"].get("matchLabels") != RELEASE_LABELS:
                    continue  # the ClearML release's pods, checked apart
                found |= {(component_of(peer), port["port"]) for port in rule["ports"]}
    return found


def first_install(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered[FIRST_INSTALL]


def cronjob(kustomized: dict[str, list[dict[str, Any]]]) -> PodTemplate:
    (pod,) = [pod for pod in pod_templates(kustomized["prod"]) if pod.name.startswith("CronJob/")]
    return pod


def step_pods(rendered: dict[str, list[dict[str, Any]]]) -> list[PodTemplate]:
    """The step pod template of each queue of the glue (agent-values.yaml has two queues)."""
    pods = [pod for pod in pod_templates(rendered["agent-values.yaml"]) if pod.component == "step"]
    assert len(pods) == 2, [pod.name for pod in pods]
    return pods


def step_pod(rendered: dict[str, list[dict[str, Any]]]) -> PodTemplate:
    return step_pods(rendered)[0]


# --- credentials -------------------------------------------------------------------------------


def test_each_server_role_reads_only_its_own_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    found = {pod.component: pod.secret_refs() for pod in pod_templates(first_install(rendered))}
    assert found == SECRETS_BY_ROLE
    glue = [pod for pod in pod_templates(rendered["agent-values.yaml"]) if pod.component == "agent"]
    assert [pod.secret_refs() for pod in glue] == [{"clearml-agent-keys"}] * 2  # one per queue


def test_the_cronjob_runs_as_the_pipeline_never_an_admin(
    kustomized: dict[str, list[dict[str, Any]]],
) -> None:
    """No MLflow admin password, no S3 root keys: the pipeline's user and its DVC-bucket keys."""
    pod = cronjob(kustomized)
    assert pod.secret_refs() == PIPELINE_SECRETS
    (runner,) = [c for c in pod.spec["containers"] if c["name"] == "pipeline"]
    env = {e["name"]: e.get("value") for e in runner["env"]}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert env["MLFLOW_TRACKING_USERNAME"] == values["mlflow"]["pipelineUser"]["username"]
    assert env["MLFLOW_TRACKING_USERNAME"] != values["mlflow"]["auth"]["adminUsername"]
    assert env["AWS_ENDPOINT_URL"] == "http://mlrig-s3:8333"  # the chart's S3 Service
    assert pod.labels.items() >= RELEASE_LABELS.items()  # the chart's policies apply to it


def test_a_step_pod_holds_only_the_pipelines_identities(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """No MLflow admin password, no S3 root keys, no agent's ClearML keys (the glue adds the
    task's own token): whoever enqueues a task gets the pipeline's rights and no more."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for pod in step_pods(rendered):
        assert pod.secret_refs() == PIPELINE_SECRETS, pod.name
        (step,) = pod.spec["containers"]
        env = {e["name"]: e.get("value") for e in step["env"]}
        assert env["MLFLOW_TRACKING_USERNAME"] == values["mlflow"]["pipelineUser"]["username"]
        assert not {"CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"} & set(env), pod.name
        assert env["CLEARML_API_HOST"] == "https://api.clearml.example.com"
        assert pod.spec["automountServiceAccountToken"] is False, pod.name


def test_the_pipeline_env_helper_gives_the_pipelines_identities_only(
    kube_tools: KubeTools, tmp_path: Path
) -> None:
    """`mlrig.pipelineEnv`, what the step pod template is to include, rendered in a pod."""
    chart = tmp_path / "mlrig"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-pipeline-env-pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\nspec:\n  containers:\n"
        "    - name: step\n      image: step\n      env:\n"
        '        {{- include "mlrig.pipelineEnv" . | nindent 8 }}\n'
    )
    result = kube_tools.helm_run(
        "template", "mlrig", str(chart), "--namespace", "mlrig", *values_arguments(FIRST_INSTALL),
        "--show-only", "templates/zz-pipeline-env-pod.yaml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pod = yaml.safe_load(result.stdout)
    probe = PodTemplate("Pod/probe", {}, pod["spec"])
    assert probe.secret_refs() == PIPELINE_SECRETS
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_USERNAME"] == "pipeline"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlrig-mlflow:5000"
    assert env["AWS_ENDPOINT_URL"] == "http://mlrig-s3:8333"
    assert not [name for name in env if name.startswith("CLEARML_")]


def test_generated_secrets_are_kept_when_the_release_is_uninstalled(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    secrets = [
        (name, item)
        for name, objects in rendered.items()
        for item in objects
        if item["kind"] == "Secret"
    ]
    assert len({item["metadata"]["name"] for _, item in secrets}) >= 6
    for name, item in secrets:
        annotations = item["metadata"].get("annotations", {})
        assert annotations.get("helm.sh/resource-policy") == "keep", (name, item["metadata"])


def test_a_gitops_render_names_only_existing_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["gitops-values.yaml"]
    assert [item for item in objects if item["kind"] == "Secret"] == []
    names = set().union(*(pod.secret_refs() for pod in pod_templates(objects)))
    assert names == {
        "team-mlflow", "team-mlflow-pipeline", "team-postgresql",
        "team-s3-admin", "team-s3-pipeline", "team-s3-mlflow",
    }  # fmt: skip


def test_a_gitops_render_without_an_existing_secret_fails_naming_it(
    kube_tools: KubeTools,
) -> None:
    """No cluster to read a Secret back from: new credentials at every render would lock the
    pipeline out of its own data, so the render stops and says what to create."""
    result = kube_tools.template(
        *values_arguments("gitops-values.yaml"),
        "--set", "objectStore.identities.pipeline.existingSecret=",
        "--set", "mlflow.pipelineUser.existingSecret=",
    )  # fmt: skip
    assert result.returncode != 0
    assert "these Secrets are not in the cluster and generateSecrets is false" in result.stderr
    assert "mlrig-s3-pipeline (access-key, secret-key): then set " in result.stderr
    assert "mlrig-mlflow-pipeline (password): then set mlflow.pipelineUser.existingSecret" in (
        result.stderr
    )
    assert "mlrig-postgresql (" not in result.stderr  # given: team-postgresql


# --- network -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES)
def test_egress_is_closed(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    """Every egress rule names its destinations: pods by label, DNS, or a CIDR the values
    gave (networkPolicy.extraEgress, the API server's); never the whole Internet."""
    settings = yaml.safe_load((CHART / "ci" / values).read_text())
    network = settings.get("networkPolicy", {})
    allowed = {entry["cidr"] for entry in network.get("extraEgress", [])}
    allowed |= set(network.get("apiServer", {}).get("cidrs", []))
    problems = []
    for spec in policies(rendered[values]):
        for rule in spec.get("egress", []):
            if not rule.get("to"):
                problems.append(f"{spec['podSelector']}: a rule to anywhere")
            for peer in rule.get("to", []):
                cidr = peer.get("ipBlock", {}).get("cidr")
                if cidr is not None and cidr not in allowed:
                    problems.append(f"{spec['podSelector']}: {cidr}")
            if not rule.get("ports"):
                problems.append(f"{spec['podSelector']}: a rule on every port")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("values", VALUES_FILES)
def test_every_pod_of_the_release_is_closed_by_default(
    rendered: dict[str, list[dict[str, Any]]],
    kustomized: dict[str, list[dict[str, Any]]],
    values: str,
) -> None:
    objects = rendered[values]
    pods = [*pod_templates(objects), cronjob(kustomized)]
    for pod in pods:
        for kind in ("Ingress", "Egress"):
            assert applying(objects, pod.labels, kind), f"{pod.name}: no {kind} policy"


def test_each_role_reaches_what_it_needs_and_nothing_else(
    rendered: dict[str, list[dict[str, Any]]], kustomized: dict[str, list[dict[str, Any]]]
) -> None:
    objects = first_install(rendered)
    pods = {pod.component: pod for pod in pod_templates(objects)}
    pods |= {"step": step_pod(rendered), "pipeline": cronjob(kustomized)}
    found = {role: reachable(objects, pod.labels) for role, pod in pods.items()}
    assert found == EGRESS_BY_ROLE
    for role, callers in INGRESS_BY_ROLE.items():
        (spec,) = [s for s in applying(objects, pods[role].labels, "Ingress") if s.get("ingress")]
        peers = [peer for rule in spec["ingress"] for peer in rule["from"] if "podSelector" in peer]
        assert {component for peer in peers for component in _components(peer)} == callers, role


def _components(peer: dict[str, Any]) -> list[str]:
    expressions = peer["podSelector"].get("matchExpressions", [])
    return [
        v for e in expressions if e["key"] == "app.kubernetes.io/component" for v in e["values"]
    ]


def test_the_glue_reaches_the_api_server_and_the_clearml_release(
    kube_tools: KubeTools,
) -> None:
    objects = kube_tools.render(
        *values_arguments("agent-values.yaml"),
        "--set", "clearmlServer.enabled=true,agent.apiHost=",
    )  # fmt: skip
    glue = {"app.kubernetes.io/component": "agent", **RELEASE_LABELS}
    rules = [rule for spec in applying(objects, glue, "Egress") for rule in spec.get("egress", [])]
    api = [rule for rule in rules if rule["to"][0].get("ipBlock", {}).get("cidr") == "10.0.0.1/32"]
    assert [[p["port"] for p in rule["ports"]] for rule in api] == [[443, 6443]]
    clearml = [rule["to"][0]["podSelector"] for rule in rules if "podSelector" in rule["to"][0]]
    # the clearml chart labels its API server's pods so (templates/_helpers.tpl, chart 7.14.4)
    apiserver = {
        "app.kubernetes.io/name": "mlrig-clearml",
        "app.kubernetes.io/instance": "mlrig-clearml-apiserver",
    }
    assert any(selects(selector, apiserver) for selector in clearml)
    step = {"app.kubernetes.io/component": "step", **RELEASE_LABELS}
    fileserver = apiserver | {"app.kubernetes.io/instance": "mlrig-clearml-fileserver"}
    step_rules = [r for spec in applying(objects, step, "Egress") for r in spec.get("egress", [])]
    step_peers = [p["podSelector"] for r in step_rules for p in r["to"] if "podSelector" in p]
    assert any(selects(s, fileserver) for s in step_peers)
    assert not any(selects(s, fileserver) for s in clearml)  # the glue needs the API only
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap" and "glue.py" in o["data"]]
    glues = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("mlrig-agent-")
    ]
    assert len(glues) == 2  # one per queue, each selected by the glue's policy
    for deployment in glues:
        pod = deployment["spec"]["template"]
        assert applying(objects, pod["metadata"]["labels"], "Egress")
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["CLEARML_API_HOST"] == "http://mlrig-clearml-apiserver:8008"
    assert configmap
