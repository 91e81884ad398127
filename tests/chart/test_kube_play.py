"""The chart's own pods, started with `podman kube play` here: MLflow, SeaweedFS and PostgreSQL,
the hooks that make the buckets and the pipeline's MLflow user, the pipeline run with the
pipeline's identity (never an admin's), and the pods the ClearML agent's glue makes from the
chart's step pod template."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from botocore.exceptions import ClientError

from mlrig.dvc.dag import stage_graph
from mlrig.executors.clearml.compile import PipelineDescription, describe_pipeline
from mlrig.executors.clearml.store import StepStore
from mlrig.executors.clearml.submit import (
    prepare_submission,
    remote_store,
    step_task_arguments,
    take_results,
    with_records,
)
from mlrig.images.build import ImageBuild, build_server_images
from mlrig.images.engine import Engine
from mlrig.settings import Settings
from mlrig.stacks.chart import (
    CHART,
    LOCAL_VALUES,
    Played,
    PlayLayout,
    local_image_digests,
    merged_values,
    play_down,
    playable_pod_spec,
    podman,
    up,
)
from tests.chart.conftest import KubeTools
from tests.support.clearml import glue_pod
from tests.support.project import (
    FEW_EXPERIMENTS,
    REPO_ROOT,
    checkout_lock,
    clean_environment,
    copy_repository,
)

pytestmark = [pytest.mark.containers, pytest.mark.integration]


@pytest.fixture(scope="module")
def played(kube_tools: KubeTools, step_images: tuple[Engine, list[ImageBuild]]) -> Iterator[Played]:
    """The chart played with helm/mlrig/local/podman-values.yaml; removed afterwards.

    The server images are built FROM the OS image the step images' fixture makes.
    """
    engine, _ = step_images
    if engine.name != "podman":
        pytest.skip("kube play needs podman")
    with checkout_lock("images"):
        build_server_images(Settings(project_dir=REPO_ROOT), engine)
    layout = PlayLayout(REPO_ROOT)
    # what a play killed in another checkout leaves: `up` replaces it rather than stop on it
    podman("volume", "create", "data-mlrig-postgresql", check=False)
    try:
        yield up(REPO_ROOT)
    finally:
        play_down(layout)
    # nothing of the play is left: no pod, no volume, no Secret (the next play starts clean)
    pods = podman("pod", "ls", "--format", "{{.Name}}").split()
    volumes = podman("volume", "ls", "--format", "{{.Name}}").split()
    secrets = podman("secret", "ls", "--format", "{{.Name}}").split()
    left = [name for name in [*pods, *volumes, *secrets] if "mlrig-" in name]
    assert not left, f"the play left {left}"


def admin_auth(played: Played) -> tuple[str, str]:
    """MLflow's admin (user admin, the chart's default): for checks, never for the pipeline."""
    return ("admin", played.secrets["mlrig-mlflow"]["admin-password"])


def pipeline_auth(played: Played) -> tuple[str, str]:
    return (
        played.environment["MLFLOW_TRACKING_USERNAME"],
        played.environment["MLFLOW_TRACKING_PASSWORD"],
    )


def s3_client(played: Played, secret: str) -> Any:
    """An S3 client of the played SeaweedFS with the keys of one of the chart's Secrets."""
    keys = played.secrets[secret]
    return boto3.client(
        "s3",
        endpoint_url=played.environment["AWS_ENDPOINT_URL"],
        aws_access_key_id=keys["access-key"],
        aws_secret_access_key=keys["secret-key"],
        region_name=played.environment["AWS_DEFAULT_REGION"],
    )


def test_the_chart_pods_serve_mlflow_behind_basic_auth(played: Played) -> None:
    uri = played.environment["MLFLOW_TRACKING_URI"]
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(f"{uri}/health", timeout=60).status_code == 200
    assert requests.get(search, timeout=60).status_code == 401
    assert requests.get(search, auth=admin_auth(played), timeout=60).status_code == 200
    assert requests.get(search, auth=pipeline_auth(played), timeout=60).status_code == 200
    assert set(played.workloads) == {"mlrig-mlflow", "mlrig-seaweedfs", "mlrig-postgresql"}
    assert played.hooks == ["mlrig-bucket-init", "mlrig-mlflow-users"]  # by hook weight
    assert "NetworkPolicy/mlrig-default" in played.skipped


def test_the_chart_pods_run_as_their_non_root_users(played: Played) -> None:
    users = {}
    for workload in played.workloads:
        container = f"{workload}-pod-0-{workload.removeprefix('mlrig-')}"
        inspected = subprocess.run(
            ["podman", "inspect", container], capture_output=True, text=True, check=True
        )
        (config,) = json.loads(inspected.stdout)
        users[workload] = config["Config"]["User"]
        assert config["HostConfig"]["ReadonlyRootfs"] is True, workload
        assert config["State"]["Status"] == "running", workload
        # pinned: the image runs by the digest `chart play` read from podman's store
        assert "@sha256:" in config["ImageName"], (workload, config["ImageName"])
    assert users == {
        "mlrig-mlflow": "1001:0",
        "mlrig-seaweedfs": "1001:0",
        "mlrig-postgresql": "1001:1001",
    }


def test_the_hook_made_the_pipelines_user_with_edit_on_its_experiments_and_models(
    played: Played,
) -> None:
    """What the mlflow-users hook did through MLflow's auth API, read back as the admin."""
    uri, admin = played.environment["MLFLOW_TRACKING_URI"], admin_auth(played)
    username = played.environment["MLFLOW_TRACKING_USERNAME"]
    assert username == "pipeline"
    user = requests.get(
        f"{uri}/api/2.0/mlflow/users/get", params={"username": username}, auth=admin, timeout=30
    )
    assert user.status_code == 200, user.text
    assert user.json()["user"]["is_admin"] is False
    experiment = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "mlrig"}, auth=admin, timeout=30,
    ).json()["experiment"]  # fmt: skip
    for resource_type, resource_id in (
        ("experiment", experiment["experiment_id"]),
        ("registered_model", "mlrig-breast_cancer"),
    ):
        held = requests.get(
            f"{uri}/api/3.0/mlflow/users/permissions/get",
            params={"username": username, "resource_type": resource_type,
                    "resource_id": resource_id},
            auth=admin, timeout=30,
        )  # fmt: skip
        assert held.status_code == 200, held.text
        assert held.json()["permission"] == "EDIT", resource_type


def test_the_buckets_hook_made_both_buckets(played: Played) -> None:
    admin = s3_client(played, "mlrig-s3")
    names = {bucket["Name"] for bucket in admin.list_buckets()["Buckets"]}
    assert {"mlrig-dvc", "mlrig-mlflow"} <= names


def test_mlflows_metrics_sidecar_serves_the_servers_counters(played: Played) -> None:
    """No password: the sidecar's own port (MLflow's /metrics answers its admin only)."""
    uri = played.environment["MLFLOW_TRACKING_URI"]
    requests.get(f"{uri}/api/2.0/mlflow/experiments/search", auth=pipeline_auth(played), timeout=30)
    metrics = requests.get("http://127.0.0.1:25464/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "mlflow_http_request_total{" in metrics.text
    assert requests.get(f"{uri}/metrics", auth=pipeline_auth(played), timeout=30).status_code == 403


def chart_project(played: Played, project: Path) -> dict[str, str]:
    """A fresh copy of the repository whose DVC remote is the chart's S3; its environment."""
    copy_repository(project, FEW_EXPERIMENTS)
    endpoint = played.environment["AWS_ENDPOINT_URL"]
    for arguments in (
        ["remote", "add", "--local", "chart", "s3://mlrig-dvc/dvc"],
        ["remote", "modify", "--local", "chart", "endpointurl", endpoint],
    ):
        subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=project, check=True)
    return clean_environment(project) | played.environment | {"MLRIG_DVC_REMOTE": "chart"}


def test_doctor_passes_against_the_chart_pods(played: Played, tmp_path: Path) -> None:
    project = tmp_path / "project"
    environment = chart_project(played, project)
    endpoint = played.environment["AWS_ENDPOINT_URL"]
    doctor = subprocess.run(
        [sys.executable, "-m", "mlrig", "doctor"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"MLflow at {played.environment['MLFLOW_TRACKING_URI']}: reachable, auth ok" in (
        doctor.stdout + doctor.stderr
    )
    assert f"s3://mlrig-dvc/dvc at {endpoint}" in doctor.stdout + doctor.stderr


def test_the_whole_pipeline_runs_in_containers_against_the_chart_pods(
    played: Played, step_images: tuple[Engine, list[ImageBuild]], tmp_path: Path
) -> None:
    """Runs and the champion land in the chart's MLflow and the data in its S3, written with the
    pipeline's identity alone (client.env: its MLflow user, its DVC-bucket keys); no process
    stack."""
    project = tmp_path / "project"
    environment = chart_project(played, project)
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run", "--executor", "containers", "--json"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["stages_run"]) == set(stage_graph(project))
    trained = [stage for stage in summary["stages_run"] if stage.startswith("train@")]
    assert trained and summary["runs_recorded"] == len(trained)
    champion = summary["champion"]
    uri = played.environment["MLFLOW_TRACKING_URI"]
    alias = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/alias",
        params={"name": champion["registered_model"], "alias": "champion"},
        auth=pipeline_auth(played),
        timeout=30,
    )
    assert alias.status_code == 200, alias.text
    assert alias.json()["model_version"]["version"] == champion["version"]
    # the model the hook made and gave the pipeline's user EDIT on: a version, aliases moved
    assert champion["registered_model"] == "mlrig-breast_cancer"
    # the DVC bucket through the pipeline's keys, MLflow's through the server's own keys
    assert s3_client(played, "mlrig-s3-pipeline").list_objects_v2(Bucket="mlrig-dvc")["KeyCount"]
    assert s3_client(played, "mlrig-s3-mlflow").list_objects_v2(Bucket="mlrig-mlflow")["KeyCount"]
    assert not (project / ".mlrig" / "stack").exists()  # no process stack was started


def test_the_step_identity_cannot_delete_a_model_or_read_another_bucket(played: Played) -> None:
    """With what a step pod holds: the registry refuses a delete it can read, and S3 refuses
    every bucket but the DVC one (where the same keys do work)."""
    uri, pipeline = played.environment["MLFLOW_TRACKING_URI"], pipeline_auth(played)
    model = {"name": "mlrig-breast_cancer"}
    readable = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/get", params=model, auth=pipeline, timeout=30
    )
    assert readable.status_code == 200, readable.text
    deleted = requests.delete(
        f"{uri}/api/2.0/mlflow/registered-models/delete", json=model, auth=pipeline, timeout=30
    )
    assert deleted.status_code == 403, deleted.text
    still = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/get", params=model, auth=admin_auth(played),
        timeout=30,
    )  # fmt: skip
    assert still.status_code == 200
    grant = {
        "username": "pipeline",
        "resource_type": "registered_model",
        "resource_id": model["name"],
    }
    escalated = requests.post(
        f"{uri}/api/3.0/mlflow/users/permissions/grant", json=grant | {"permission": "MANAGE"},
        auth=pipeline, timeout=30,
    )  # fmt: skip
    assert escalated.status_code == 403, escalated.text

    admin, steps = s3_client(played, "mlrig-s3"), s3_client(played, "mlrig-s3-pipeline")
    admin.create_bucket(Bucket="mlrig-other")
    admin.put_object(Bucket="mlrig-other", Key="secret.txt", Body=b"not the pipeline's")
    admin.put_object(Bucket="mlrig-mlflow", Key="probe/secret.txt", Body=b"MLflow's")
    try:
        steps.put_object(Bucket="mlrig-dvc", Key="probe/mine.txt", Body=b"the pipeline's")
        assert steps.get_object(Bucket="mlrig-dvc", Key="probe/mine.txt")["Body"].read()
        for bucket, key in (("mlrig-mlflow", "probe/secret.txt"), ("mlrig-other", "secret.txt")):
            attempts = {
                "get": partial(steps.get_object, Bucket=bucket, Key=key),
                "list": partial(steps.list_objects_v2, Bucket=bucket),
                "put": partial(steps.put_object, Bucket=bucket, Key="planted.txt", Body=b"x"),
            }
            for action, attempt in attempts.items():
                with pytest.raises(ClientError) as refused:
                    attempt()
                assert refused.value.response["Error"]["Code"] == "AccessDenied", (bucket, action)
        with pytest.raises(ClientError):
            steps.create_bucket(Bucket="mlrig-planted")
    finally:
        steps.delete_object(Bucket="mlrig-dvc", Key="probe/mine.txt")
        admin.delete_object(Bucket="mlrig-mlflow", Key="probe/secret.txt")
        admin.delete_object(Bucket="mlrig-other", Key="secret.txt")
        admin.delete_bucket(Bucket="mlrig-other")


# ClearML pipeline steps: the pod clearml-agent's k8s glue would create for a step, from the
# chart's pod template, started with podman against the chart's pods. No ClearML server can
# run here: the pods run ClearML offline, so they report no task status (tested live only).
#: the agent's Secret the chart's values name: the glue's, which no step pod reads
AGENT_SECRET = "mlrig-clearml-agent"


@dataclass(frozen=True)
class Submission:
    """A project submitted as far as it goes without a server: workspace and steps uploaded."""

    project: Path
    settings: Settings
    description: PipelineDescription
    store: StepStore


@pytest.fixture(scope="module")
def step_pod_template(played: Played, kube_tools: KubeTools) -> dict[str, Any]:
    """The glue's pod template as the chart renders it for this machine: it reads the
    pipeline's Secrets only (the played chart made them), never the agent's."""
    local = merged_values(REPO_ROOT / CHART / "values.yaml", REPO_ROOT / LOCAL_VALUES)
    digests = [f"{key}={digest}" for key, digest in local_image_digests(local).items()]
    objects = kube_tools.render(
        "--values", str(REPO_ROOT / LOCAL_VALUES),
        "--values", str(REPO_ROOT / CHART / "ci" / "agent-values.yaml"),
        "--set", f"agent.existingSecret={AGENT_SECRET}", "--set", ",".join(digests),
    )  # fmt: skip
    # the pod template of the default queue (each queue's glue has its own)
    (configmap,) = [
        item
        for item in objects
        if item["kind"] == "ConfigMap" and item["metadata"]["name"] == "mlrig-agent-default"
    ]
    return yaml.safe_load(configmap["data"]["template.yaml"])


@pytest.fixture(scope="module")
def submission(
    played: Played, step_images: tuple[Engine, list[ImageBuild]], tmp_path_factory: Any
) -> Iterator[Submission]:
    project = tmp_path_factory.mktemp("clearml") / "project"
    environment = chart_project(played, project)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            patch.setenv(name, environment[name])
        settings = Settings(project_dir=project, dvc_remote="chart")
        description = prepare_submission(settings, describe_pipeline(settings, "default"))
        yield Submission(project, settings, description, remote_store(settings))


@dataclass(frozen=True)
class PodRun:
    exit_code: int
    log: str
    user: str
    read_only_root: bool


def run_step_pod(template: dict[str, Any], submission: Submission, stage: str) -> PodRun:
    """The glue's pod of one step, played until it exits, then removed."""
    (step,) = [step for step in submission.description.steps if step.name == stage]
    arguments = step_task_arguments(submission.description, step)["docker_args"]
    # as clearml-agent's get_task_container reads them; offline: no server to report to
    container_arguments = [*shlex.split(arguments), "-e", "CLEARML_OFFLINE_MODE=1"]
    task_id = f"test-{stage.replace('@', '-')}"
    pod = glue_pod(template, task_id, step.image, container_arguments)
    name = pod["metadata"]["name"]
    playable_pod_spec(pod["spec"], name)
    layout = PlayLayout(REPO_ROOT)
    path = layout.folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(pod))
    container = f"{name}-{pod['spec']['containers'][0]['name']}"
    podman("kube", "play", str(path), conf=layout.containers_conf)
    try:
        exit_code = int(podman("wait", container).strip())
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
        (inspected,) = json.loads(podman("inspect", container))
    finally:
        podman("kube", "down", str(path), conf=layout.containers_conf, check=False)
        for volume in pod["spec"].get("volumes", []):
            podman("volume", "rm", "--force", volume["name"], check=False)
    return PodRun(
        exit_code=exit_code,
        log=logs.stdout + logs.stderr,
        user=inspected["Config"]["User"],
        read_only_root=inspected["HostConfig"]["ReadonlyRootfs"],
    )


def test_the_glue_pods_of_two_steps_hand_over_through_the_remote(
    step_pod_template: dict[str, Any], submission: Submission
) -> None:
    """Each pod starts empty: it fetches the workspace, then the record of the step before it."""
    steps = {step.name: step for step in submission.description.steps}
    store = submission.store

    ingest = run_step_pod(step_pod_template, submission, "ingest")
    assert ingest.exit_code == 0, ingest.log
    assert "task test-ingest's status is not reported" in ingest.log
    assert f"recorded ingest under input key {steps['ingest'].input_key[:12]}" in ingest.log
    assert (ingest.user, ingest.read_only_root) == ("1001:0", True)
    validate = run_step_pod(step_pod_template, submission, "validate")
    assert validate.exit_code == 0, validate.log

    ingested = store.get_record(steps["ingest"].input_key, "ingest")["outs"]
    read = store.get_record(steps["validate"].input_key, "validate")["deps"]
    (table,) = [dep for dep in read if dep["path"] == "outputs/ingest"]
    assert table["md5"] == ingested[0]["md5"]  # validate read what the ingest pod made

    # what `--wait` does at the end: the checkout as the pods left it
    take_results(submission.settings, [steps["ingest"], steps["validate"]])
    project = submission.project
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert lock["ingest"] == store.get_record(steps["ingest"].input_key, "ingest")
    assert (project / "outputs" / "validate" / "report.json").is_file()
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "ingest", "validate"],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "up to date" in status.stdout, status.stdout


def test_a_second_submission_leaves_out_what_the_remote_holds(
    step_pod_template: dict[str, Any], submission: Submission
) -> None:
    """After the two pods ran, only the other stages are submitted; a changed validate param
    makes validate (and what follows it) run again, never ingest."""
    settings, store = submission.settings, submission.store
    again = with_records(describe_pipeline(settings, "default"), store)
    recorded = {step.name for step in again.steps if step.recorded}
    assert recorded == {"ingest", "validate"}, "run after the hand-over test"

    params_path = submission.project / "params.yaml"
    params_path.write_text(params_path.read_text().replace("min_rows: 20", "min_rows: 21"))
    changed = with_records(describe_pipeline(settings, "default"), store)
    assert {step.name for step in changed.steps if step.recorded} == {"ingest"}
    assert {step.name for step in changed.submitted()} == set(stage_graph(submission.project)) - {
        "ingest"
    }
