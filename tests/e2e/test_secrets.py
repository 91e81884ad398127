"""No credential leaves the environment: a whole run with a canary in every credential variable
(and in an uncommitted edit of a tracked file) writes none of them anywhere mlrig writes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrig.dvc.dag import stage_graph
from mlrig.stacks.local.processes import free_port
from tests.support.project import FEW_EXPERIMENTS, clean_environment, copy_repository, run_mlrig

pytestmark = pytest.mark.e2e

#: every credential variable mlrig, DVC, boto3, MLflow or ClearML read, each with its canary
CANARIES = {
    "MLFLOW_TRACKING_USERNAME": "canary-mlflow-user-4b1d",
    "MLFLOW_TRACKING_PASSWORD": "canary-mlflow-password-77c2",
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-0e9a",
    "AWS_ACCESS_KEY_ID": "CANARYAWSKEYID5F3A",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-9d41",
    "AWS_SESSION_TOKEN": "canary-aws-session-token-2c88",
    "CLEARML_API_ACCESS_KEY": "CANARYCLEARMLACCESS61B0",
    "CLEARML_API_SECRET_KEY": "canary-clearml-secret-a5e7",
    "MLRIG_GITLAB_TOKEN": "canary-gitlab-token-3f6d",
    "PGPASSWORD": "canary-pg-password-8a12",
    "MINIO_ROOT_PASSWORD": "canary-minio-password-c4d9",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "canary-flask-secret-1b7e",
}
URI_USER, URI_PASSWORD = "canary-uri-user-6e02", "canary-uri-password-d3b5"
#: an uncommitted edit of the tracked .dvc/config: ClearML stored `git diff` in every task
DVC_CONFIG_SECRET = "canary-dvc-config-secret-90fa"


def wait_for(url: str, server: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow server did not answer at {url}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real MLflow server on loopback (no auth: the canary credentials are only sent): its
    address and its store (runs and artifacts)."""
    store = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    with (store / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", "--workers", "1"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"),
                *("--artifacts-destination", (store / "artifacts").as_uri()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # as the local stack runs it: without MLflow 3's job runner, whose seven huey
            # consumers take half a core while the server is up
            env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        yield f"127.0.0.1:{port}", store
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def texts_of(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every file's bytes under `path`, the members of zip files (ClearML sessions) included."""
    for file in sorted(path.rglob("*")):
        if not file.is_file() or file.is_symlink():
            continue
        data = file.read_bytes()
        yield str(file), data
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    yield f"{file}!{member}", archive.read(member)


def written_since(before: dict[str, bytes], folders: list[Path]) -> Iterator[tuple[str, bytes]]:
    """The files under `folders` that are new or changed since `before` (the clone's own
    files, this test among them, hold the canaries as text)."""
    for folder in folders:
        for name, data in texts_of(folder):
            if before.get(name) != data:
                yield name, data


def leaks(secrets: list[str], places: Iterator[tuple[str, bytes]]) -> list[str]:
    return [
        f"{secret} in {where}"
        for where, data in places
        for secret in secrets
        if secret.encode() in data
    ]


def test_a_run_writes_no_credential_anywhere(
    tmp_path: Path, mlflow_server: tuple[str, Path]
) -> None:
    address, server_store = mlflow_server
    root = tmp_path / "clone"
    root.mkdir()
    copy_repository(root, FEW_EXPERIMENTS)
    config = root / ".dvc" / "config"
    subprocess.run(["git", "ls-files", "--error-unmatch", config], cwd=root, check=True)
    config.write_text(
        config.read_text()
        + "['remote \"unused\"']\n    url = s3://unused-bucket/dvc\n"
        + f"    secret_access_key = {DVC_CONFIG_SECRET}\n"
    )
    tracking_uri = f"http://{URI_USER}:{URI_PASSWORD}@{address}"
    before = dict(texts_of(root))
    home = tmp_path / "home"
    home.mkdir()

    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run"],
        cwd=root,
        # ClearML writes ~/.clearml/.session.json: a home of its own, to look in too
        env=clean_environment(root)
        | CANARIES
        | {"MLFLOW_TRACKING_URI": tracking_uri, "HOME": str(home)}
        # the clone's own mlrig, as in a user's checkout: ClearML looked at the repository of
        # the module that opened the task, and put its `git diff` in the task
        | {"PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=1800,  # a safety net: a loaded 2-core machine ran it for 15 minutes
    )

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    secrets = [*CANARIES.values(), URI_USER, URI_PASSWORD]
    found = leaks(
        secrets, iter([("stdout", result.stdout.encode()), ("stderr", result.stderr.encode())])
    )
    # the server's database is MLflow's (its runs are read below); the artifacts are mlrig's
    written = written_since(before, [root, home, server_store / "artifacts"])
    found += leaks([*secrets, DVC_CONFIG_SECRET], written)
    sessions = list((root / ".mlrig/clearml/offline").glob("*.zip"))
    assert len(sessions) >= len(stage_graph(root)), (
        "the run recorded no ClearML sessions to look in"
    )

    from mlflow import MlflowClient

    client = MlflowClient(f"http://{address}")
    runs = client.search_runs([client.get_experiment_by_name("mlrig").experiment_id])
    assert runs, "the run recorded no MLflow runs to look in"
    for run in runs:
        # MLflow names the run's user after the login (mlflow.user): a name, not a secret
        tags = {key: value for key, value in run.data.tags.items() if key != "mlflow.user"}
        recorded = repr((run.data.params, tags)).encode()
        found += leaks([*secrets, DVC_CONFIG_SECRET], iter([(f"run {run.info.run_id}", recorded)]))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("command", ["run", "doctor"])
def test_a_password_in_the_tracking_uri_is_not_shown(tmp_path: Path, command: str) -> None:
    root = tmp_path / "clone"
    root.mkdir()
    copy_repository(root)
    closed_port = free_port()  # nothing listens on it
    before = dict(texts_of(root))

    result = run_mlrig(
        command, cwd=root, MLFLOW_TRACKING_URI=f"http://alice:s3cret@127.0.0.1:{closed_port}"
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert f"127.0.0.1:{closed_port}" in output  # the host is named, its password is not
    assert "s3cret" not in output
    assert not leaks(["s3cret"], written_since(before, [root]))
