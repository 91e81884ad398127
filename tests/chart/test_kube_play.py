"""The chart's own pods, started with `podman kube play` here: MLflow, S3 and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from conftest import REPO_ROOT, clean_environment, copy_repository
from mlrig.dag import stage_graph
from mlrig.images import (
    Engine,
    ImageBuild,
    build_server_images,
)
from mlrig.kube_play import Played, PlayLayout, play_down, up
from mlrig.settings import Settings
from tests.chart.conftest import KubeTools

pytestmark = [pytest.mark.containers, pytest.mark.integration]


@pytest.fixture(scope="module")
def played(kube_tools: KubeTools, step_images: tuple[Engine, list[ImageBuild]]) -> Iterator[Played]:
    """The chart played with helm/mlrig/local/podman-values.yaml; removed afterwards.

    The server images are built FROM the OS image the step images' fixture makes.
    """
    engine, _ = step_images
    if engine.name != "podman":
        pytest.skip("kube play needs podman")
    build_server_images(Settings(project_dir=REPO_ROOT), engine)
    layout = PlayLayout(REPO_ROOT)
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
    copy_repository(project)
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
