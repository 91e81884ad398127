"""The chart's own pods, started with `podman kube play` here: MLflow, S3 and PostgreSQL, and
the pods the ClearML agent's glue makes from the chart's step pod template."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml

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
    create_secret,
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


def test_the_chart_pods_serve_mlflow_behind_basic_auth(played: Played) -> None:
    uri = played.environment["MLFLOW_TRACKING_URI"]
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(f"{uri}/health", timeout=60).status_code == 200
    assert requests.get(search, timeout=60).status_code == 401
    admin = (
        played.environment["MLFLOW_TRACKING_USERNAME"],
        played.environment["MLFLOW_TRACKING_PASSWORD"],
    )
    assert requests.get(search, auth=admin, timeout=60).status_code == 200
    assert set(played.workloads) == {"mlrig-mlflow", "mlrig-minio", "mlrig-postgresql"}
    assert "Job/mlrig-bucket-init" in played.skipped


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
    assert users == {
        "mlrig-mlflow": "1001:0",
        "mlrig-minio": "1001:0",
        "mlrig-postgresql": "1001:1001",
    }


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
    """Runs and the champion land in the chart's MLflow and the data in its S3; no process stack."""
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
    admin = (
        played.environment["MLFLOW_TRACKING_USERNAME"],
        played.environment["MLFLOW_TRACKING_PASSWORD"],
    )
    alias = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/alias",
        params={"name": champion["registered_model"], "alias": "champion"},
        auth=admin,
        timeout=30,
    )
    assert alias.status_code == 200, alias.text
    assert alias.json()["model_version"]["run_id"] == champion["mlflow_run_id"]
    s3 = boto3.client(
        "s3",
        endpoint_url=played.environment["AWS_ENDPOINT_URL"],
        aws_access_key_id=played.environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=played.environment["AWS_SECRET_ACCESS_KEY"],
        region_name=played.environment["AWS_DEFAULT_REGION"],
    )
    for bucket in ("mlrig-dvc", "mlrig-mlflow"):
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0, bucket
    assert not (project / ".mlrig" / "stack").exists()  # no process stack was started


# ClearML pipeline steps: the pod clearml-agent's k8s glue would create for a step, from the
# chart's pod template, started with podman against the chart's pods. No ClearML server can
# run here: the pods run ClearML offline, so they report no task status (tested live only).
AGENT_SECRET = "mlrig-clearml-agent"


@dataclass(frozen=True)
class Submission:
    """A project submitted as far as it goes without a server: workspace and steps uploaded."""

    project: Path
    settings: Settings
    description: PipelineDescription
    store: StepStore


@pytest.fixture(scope="module")
def step_pod_template(played: Played, kube_tools: KubeTools) -> Iterator[dict[str, Any]]:
    """The glue's pod template as the chart renders it for this machine, its Secret created."""
    objects = kube_tools.render(
        "--values", str(REPO_ROOT / LOCAL_VALUES),
        "--values", str(REPO_ROOT / CHART / "ci" / "agent-values.yaml"),
        "--set", f"agent.existingSecret={AGENT_SECRET}",
    )  # fmt: skip
    # the pod template of the default queue (each queue's glue has its own)
    (configmap,) = [
        item
        for item in objects
        if item["kind"] == "ConfigMap" and item["metadata"]["name"] == "mlrig-agent-default"
    ]
    layout = PlayLayout(REPO_ROOT)
    create_secret(AGENT_SECRET, {"access-key": "unused", "secret-key": "unused"}, layout.folder)
    yield yaml.safe_load(configmap["data"]["template.yaml"])
    podman("secret", "rm", AGENT_SECRET, check=False)


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
