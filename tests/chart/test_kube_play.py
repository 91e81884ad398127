"""The chart's own pods, started with `podman kube play` here: MLflow, S3 and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import REPO_ROOT, clean_environment, copy_repository
from mlrig.errors import MlrigError
from mlrig.images import LOCAL_OS_IMAGE, build_server_images, find_engine, make_os_image
from mlrig.kube_play import Played, PlayLayout, play_down, up
from mlrig.settings import Settings
from tests.chart.conftest import KubeTools

pytestmark = [pytest.mark.containers, pytest.mark.integration]


@pytest.fixture(scope="module")
def played(kube_tools: KubeTools) -> Iterator[Played]:
    """The chart played with helm/mlrig/local/podman-values.yaml; removed afterwards."""
    settings = Settings(project_dir=REPO_ROOT)
    try:
        engine = find_engine(settings)
    except MlrigError as error:
        pytest.skip(str(error))
    if engine.name != "podman":
        pytest.skip("kube play needs podman")
    if not settings.base_image and not engine.image_exists(LOCAL_OS_IMAGE):
        # no registry here: the OS image is made with debootstrap, as `make base-image` does
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            pytest.skip("no base image, and debootstrap (as root) cannot make one")
        make_os_image(settings, engine)
    build_server_images(settings, engine)
    layout = PlayLayout(REPO_ROOT)
    try:
        yield up(REPO_ROOT)
    finally:
        play_down(layout)


def test_the_chart_pods_serve_mlflow_behind_basic_auth(played: Played) -> None:
    uri = played.environment["MLFLOW_TRACKING_URI"]
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(f"{uri}/health", timeout=5).status_code == 200
    assert requests.get(search, timeout=5).status_code == 401
    admin = (
        played.environment["MLFLOW_TRACKING_USERNAME"],
        played.environment["MLFLOW_TRACKING_PASSWORD"],
    )
    assert requests.get(search, auth=admin, timeout=5).status_code == 200
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


def test_doctor_passes_against_the_chart_pods(played: Played, tmp_path: Path) -> None:
    project = tmp_path / "project"
    copy_repository(project)
    environment = clean_environment(project) | played.environment | {"MLRIG_DVC_REMOTE": "chart"}
    endpoint = played.environment["AWS_ENDPOINT_URL"]
    for arguments in (
        ["remote", "add", "--local", "chart", "s3://mlrig-dvc/dvc"],
        ["remote", "modify", "--local", "chart", "endpointurl", endpoint],
    ):
        subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=project, check=True)
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
