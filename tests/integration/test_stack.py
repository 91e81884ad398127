"""The pipeline against real servers on loopback: PostgreSQL, S3 and an MLflow server with auth.

One stack is started for the module in a scratch copy of the repository and stopped at the end.
The faults are injected on the real servers: a killed MLflow server, a dead S3 endpoint, wrong
credentials, a wrong endpoint, a missing bucket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.project import FEW_EXPERIMENTS
from tests.support.stack import Stack, start_stack

if TYPE_CHECKING:
    from mlflow import MlflowClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from start_stack()


def test_stack_is_healthy_and_keeps_its_secrets(stack: Stack) -> None:
    status = stack.mlrig("stack", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert all(service["healthy"] for service in json.loads(status.stdout))
    for path in (
        ".mlrig/stack/stack.env",
        ".mlrig/stack/secrets.json",
        ".mlrig/stack/mlflow/basic_auth.ini",
    ):
        mode = stat.S_IMODE((stack.root / path).stat().st_mode)
        assert mode == 0o600, f"{path} is {oct(mode)}"
    env_lines = stack.mlrig("stack", "env").stdout
    for secret in stack.secrets().values():
        assert secret not in stack.up_output
        assert secret not in env_lines
    assert "stack.env" in env_lines


def test_mlflow_server_requires_auth(stack: Stack) -> None:
    import requests

    uri = stack.client_env()["MLFLOW_TRACKING_URI"]
    anonymous = requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert anonymous.status_code == 401
    secrets = stack.secrets()
    admin = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/search?max_results=1",
        timeout=10,
        auth=("admin", secrets["mlflow_admin_password"]),
    )
    assert admin.status_code == 200


def test_doctor_passes_on_the_stack(stack: Stack) -> None:
    result = stack.mlrig("doctor", "--stack", "local", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["DVC remote"]["passed"] and "s3://mlrig-dvc" in checks["DVC remote"]["detail"]
    assert checks["MLflow"]["passed"]


@pytest.fixture(scope="module")
def local_run(stack: Stack) -> dict:
    """`make run` before the stack, as a user following the README does: the local store."""
    result = stack.mlrig("run", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def stack_run(stack: Stack, local_run: dict) -> dict:
    """Then the same, unchanged pipeline against the stack: DVC finds every stage cached."""
    result = stack.mlrig("run", "--stack", "local", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def server_client(stack: Stack) -> MlflowClient:
    from mlflow import MlflowClient

    env = stack.client_env()
    os.environ.update(
        {key: env[key] for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    )
    return MlflowClient(env["MLFLOW_TRACKING_URI"])


def s3_objects(stack: Stack, bucket: str, as_mlflow_server: bool = False) -> list[str]:
    """The keys in `bucket`, listed with the clients' S3 keys or the MLflow server's."""
    import boto3

    env, secrets = stack.client_env(), stack.secrets()
    keys = ("s3_mlflow_access_key", "s3_mlflow_secret_key") if as_mlflow_server else None
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=secrets[keys[0]] if keys else env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secrets[keys[1]] if keys else env["AWS_SECRET_ACCESS_KEY"],
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_local_run_first_still_records_every_run_on_the_server(
    stack: Stack, local_run: dict, stack_run: dict
) -> None:
    """Cached outputs whose runs are in the local store are made again for the server."""
    assert (
        local_run["runs_recorded"] == len(FEW_EXPERIMENTS)
        and local_run["champion"]["version"] == "1"
    )
    assert stack_run["runs_recorded"] == len(FEW_EXPERIMENTS)
    client = server_client(stack)
    experiment = client.get_experiment_by_name("mlrig")
    finished = client.search_runs(
        [experiment.experiment_id], "attributes.status = 'FINISHED' and tags.`mlrig.step` = 'train'"
    )
    assert len(finished) >= len(FEW_EXPERIMENTS)
    version = client.get_model_version_by_alias("mlrig-breast_cancer", "champion")
    # the summary describes the server's registry, not the local store's
    assert version.tags["mlrig.experiment"] == stack_run["champion"]["experiment"]
    assert str(version.version) == stack_run["champion"]["version"]
    assert {run.info.run_id for run in finished} >= {version.run_id}
    status = stack.dvc("status")
    assert "up to date" in status.stdout, status.stdout


def test_pipeline_logs_to_the_server_and_pushes_to_s3(stack: Stack, stack_run: dict) -> None:
    env = stack.client_env()
    client = server_client(stack)
    version = client.get_model_version_by_alias("mlrig-breast_cancer", "champion")
    run = client.get_run(version.run_id)
    assert "f1" in run.data.metrics and run.data.params["family"]
    from botocore.exceptions import ClientError

    artifacts = s3_objects(stack, "mlrig-mlflow", as_mlflow_server=True)
    assert any(key.endswith("roc.png") for key in artifacts)
    assert any("MLmodel" in key for key in artifacts)
    assert s3_objects(stack, "mlrig-dvc")
    # least privilege: the clients' keys reach the DVC bucket only, the server's its own
    with pytest.raises(ClientError, match="AccessDenied"):
        s3_objects(stack, "mlrig-mlflow")
    with pytest.raises(ClientError, match="AccessDenied"):
        s3_objects(stack, "mlrig-dvc", as_mlflow_server=True)
    cloud = stack.dvc("status", "--cloud", "--remote", "stack", **env)
    assert "in sync" in cloud.stdout, cloud.stdout + cloud.stderr


def pull_into_a_fresh_clone(stack: Stack, clone: Path) -> subprocess.CompletedProcess[str]:
    """What a teammate gets: the committed files with this run's dvc.lock, then dvc pull;
    returns `dvc status` in the clone."""
    subprocess.run(["git", "add", "dvc.lock", "params.yaml"], cwd=stack.root, check=True)
    subprocess.run(["git", "commit", "--allow-empty", "-qm", "run"], cwd=stack.root, check=True)
    subprocess.run(["git", "clone", "-q", str(stack.root), str(clone)], check=True)
    env = stack.env | stack.client_env()
    local_config = (stack.root / ".dvc/config.local").read_text()
    (clone / ".dvc/config.local").write_text(local_config)

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    pulled = dvc("pull", "--remote", "stack")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    return dvc("status")


def test_a_fresh_clone_pulls_from_s3_and_has_nothing_to_reproduce(
    stack: Stack, stack_run: dict, tmp_path: Path
) -> None:
    status = pull_into_a_fresh_clone(stack, tmp_path / "fresh")
    assert "up to date" in status.stdout, status.stdout
    assert (tmp_path / "fresh/outputs/register/champion.json").is_file()


def test_wrong_settings_are_named(stack: Stack, stack_run: dict) -> None:
    env = stack.client_env()
    cases = {
        "MLFLOW_TRACKING_PASSWORD": (
            {"MLFLOW_TRACKING_PASSWORD": "wrong"},
            "MLFLOW_TRACKING_PASSWORD",
        ),
        "AWS_SECRET_ACCESS_KEY": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "AWS_SECRET_ACCESS_KEY"),
        "MLFLOW_TRACKING_URI": (
            {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
            "MLFLOW_TRACKING_URI",
        ),
        "MLRIG_DVC_REMOTE": ({"MLRIG_DVC_REMOTE": "missing"}, "MLRIG_DVC_REMOTE"),
    }
    doctor = stack.mlrig(
        "doctor",
        "--json",
        **(env | {"MLFLOW_TRACKING_PASSWORD": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"}),
    )
    assert doctor.returncode == 1
    failed = {check["name"]: check for check in json.loads(doctor.stdout) if not check["passed"]}
    assert set(failed) == {"DVC remote", "MLflow"}
    assert "AWS_SECRET_ACCESS_KEY" in failed["DVC remote"]["fix"]
    assert "MLFLOW_TRACKING_PASSWORD" in failed["MLflow"]["fix"]
    runs_before = stack_run["runs_in_experiment"]
    for case, (override, named) in cases.items():
        result = stack.mlrig("run", "--force", **(env | override))
        assert result.returncode == 2, f"{case}: {result.stdout}{result.stderr}"
        assert named in result.stderr, f"{case}: {result.stderr}"
        assert "Traceback" not in result.stderr
    # a bucket that does not exist
    stack.dvc("remote", "add", "--local", "-f", "nobucket", "s3://no-such-bucket")
    endpoint = env["AWS_ENDPOINT_URL"]
    stack.dvc("remote", "modify", "--local", "nobucket", "endpointurl", endpoint)
    result = stack.mlrig("run", "--force", **(env | {"MLRIG_DVC_REMOTE": "nobucket"}))
    assert result.returncode == 2 and "no-such-bucket" in result.stderr, result.stderr
    after = stack.mlrig("run", "--json", **env)
    assert json.loads(after.stdout)["runs_in_experiment"] == runs_before


def test_a_second_run_rescores_the_servers_champion(stack: Stack, stack_run: dict) -> None:
    """Every model is new, so register must download the first run's champion to compare."""
    result = stack.mlrig("run", "--stack", "local", "-S", "train.seed=7", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    second = json.loads(result.stdout)
    assert "register" in second["stages_run"]
    first_version = stack_run["champion"]["version"]
    assert re.search(
        rf"(beats|does not beat) champion version {first_version} "
        rf"\(\d\.\d+ on the same \d+ test rows\)",
        second["champion"]["reason"],
    ), second["champion"]["reason"]


def test_a_server_that_never_answers_fails_in_bounded_time(stack: Stack, stack_run: dict) -> None:
    """A stopped server accepts connections and never answers: a clear error, not a long wait."""
    pid = int((stack.root / ".mlrig/stack/mlflow.pid").read_text())
    env = stack.env | stack.client_env()
    os.killpg(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        refused = stack.mlrig("run", "--stack", "local", "--force")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "MLFLOW_TRACKING_URI" in refused.stderr and "Traceback" not in refused.stderr
        assert time.monotonic() - started < 90
        # a step that meets the dead server mid-pipeline: mlrig's bounds on MLflow's retries
        # (with MLflow's own 7 retries and backoff this takes about 5 minutes)
        started = time.monotonic()
        step = stack.run_module(
            "steps.register",
            "--split-dir", "outputs/split",
            "--train-dir", "outputs/train",
            "--evaluate-dir", "outputs/evaluate",
            "--out-dir", ".mlrig/fault-register",
            **(env | {"MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}),
        )  # fmt: skip
        assert step.returncode != 0
        assert env["MLFLOW_TRACKING_URI"] in step.stderr and "Traceback" not in step.stderr
        assert time.monotonic() - started < 120
        assert not (stack.root / ".mlrig/fault-register").exists()
    finally:
        os.killpg(pid, signal.SIGCONT)


def test_mlflow_server_killed_mid_step_and_restarted(stack: Stack, stack_run: dict) -> None:
    from mlflow import MlflowClient

    from mlrig.stacks.local.processes import stop_process

    # retries (with backoff 2: 0, 4, 8, ... 64 s) that outlast a restart on a loaded CI
    # machine, where `stack up` takes far longer than on a laptop (the default's 4 cover 28 s)
    env = stack.env | stack.client_env() | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6"}
    out_dir = stack.root / ".mlrig/fault-train"
    step = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steps.train",
            "--experiment",
            "knn",
            "--split-dir",
            "outputs/split",
            "--out-dir",
            str(out_dir),
        ],
        cwd=stack.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    assert stop_process(stack.root / ".mlrig/stack/mlflow.pid")
    time.sleep(4.0)
    restarted = stack.mlrig("stack", "up")
    assert restarted.returncode == 0, restarted.stderr
    output, _ = step.communicate(timeout=300)
    assert step.returncode == 0, output
    record = json.loads((out_dir / "run.json").read_text())
    os.environ.update(
        {key: env[key] for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    )
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.search_runs(  # the newest run that logged this model: this step's
        [client.get_experiment_by_name("mlrig").experiment_id],
        f"tags.`mlrig.model.md5` = '{record['model_md5']}'",
        order_by=["attributes.start_time DESC"],
    )[0]
    assert run.info.status == "FINISHED"
    assert "fit_seconds" in run.data.metrics and run.data.params["n_neighbors"] == "15"


def test_s3_down_during_push_fails_clearly_then_recovers(stack: Stack, stack_run: dict) -> None:
    from mlrig.stacks.local.processes import stop_process

    assert stop_process(stack.root / ".mlrig/stack/s3.pid")
    env = stack.env | stack.client_env()
    started = time.monotonic()
    pushed = stack.dvc("push", "--remote", "stack", "--run-cache", **env)
    assert pushed.returncode != 0
    assert time.monotonic() - started < 120, "a dead endpoint must fail in bounded time"
    assert "ERROR" in pushed.stderr + pushed.stdout
    pulled = stack.dvc("pull", "--remote", "stack", **env)
    assert pulled.returncode != 0
    refused = stack.mlrig("run", **env)  # checks the remote before any stage runs
    assert refused.returncode == 2
    assert "endpoint unreachable" in refused.stderr and "mlrig stack up" in refused.stderr
    restarted = stack.mlrig("stack", "up")
    assert restarted.returncode == 0, restarted.stderr
    assert stack.env | stack.client_env() == env  # the same keys after a restart
    pushed = stack.dvc("push", "--remote", "stack", "--run-cache", **env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    cloud = stack.dvc("status", "--cloud", "--remote", "stack", **env)
    assert "in sync" in cloud.stdout, cloud.stdout + cloud.stderr


#: loads the champion from the server and prints the run it came from
LOAD_CHAMPION = (
    "import mlflow.pyfunc; "
    "print(mlflow.pyfunc.load_model('models:/mlrig-breast_cancer@champion').metadata.run_id)"
)


def test_a_restarted_stack_keeps_every_artifact_and_the_dvc_data(
    stack: Stack, stack_run: dict, tmp_path: Path
) -> None:
    """`stack down` then `stack up`: S3 kept what the runs stored (SeaweedFS on disk)."""
    import yaml

    down = stack.mlrig("stack", "down")
    assert down.returncode == 0 and "s3" in down.stdout + down.stderr, down.stdout + down.stderr
    up = stack.mlrig("stack", "up")
    assert up.returncode == 0, up.stdout + up.stderr

    # in a process of its own, as a user's shell loads it: in this one, a tracking URI an
    # earlier test set with mlflow.set_tracking_uri would win over MLFLOW_TRACKING_URI
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_CHAMPION],
        cwd=stack.root, env=stack.env | stack.client_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout.strip(), loaded.stdout + loaded.stderr

    status = pull_into_a_fresh_clone(stack, tmp_path / "fresh")
    assert "up to date" in status.stdout, status.stdout
    lock = yaml.safe_load((tmp_path / "fresh/dvc.lock").read_text())
    outputs = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    assert outputs and all((tmp_path / "fresh" / path).exists() for path in outputs)

    forced = stack.mlrig("run", "--stack", "local", "--force", "--json")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "register" in json.loads(forced.stdout)["stages_run"]
