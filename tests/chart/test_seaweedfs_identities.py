"""The chart's SeaweedFS start script (helm/mlrig/files/seaweedfs-start.sh) run for real, with
`weed mini` from the stack group: each role's keys may do what the role needs and nothing more.
Here the scoring server's (read the model bucket, write only under the request log's prefix)
and the drift CronJob's (read the DVC bucket and the new data's)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import CHART

pytestmark = pytest.mark.integration

START_SCRIPT = CHART / "files" / "seaweedfs-start.sh"
BUCKETS = {"DVC": "mlrig-dvc", "MLFLOW": "mlrig-mlflow", "REQUESTS": "mlrig-requests"}
PREFIX = "requests"
ROLES = ("ADMIN", "PIPELINE", "MLFLOW", "SERVING", "DRIFT")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, tuple]]]:
    """SeaweedFS started by the chart's script; its endpoint and each role's keys."""
    from mlrig.errors import MlrigError
    from mlrig.stacks.local.processes import start_detached, stop_process, wait_until
    from mlrig.stacks.local.seaweedfs import SeaweedPorts, mini_command
    from tests.support.s3 import S3Server, s3_answers

    folder = tmp_path_factory.mktemp("seaweedfs-chart")
    (folder / "data").mkdir()
    ports = SeaweedPorts.pick()
    try:
        weed, *arguments = mini_command(folder / "data", ports, folder / "s3.json", [])
    except MlrigError as error:
        pytest.skip(f"no SeaweedFS: {error}")
    keys = {role: ("k" + secrets.token_hex(8), secrets.token_urlsafe(24)) for role in ROLES}
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env["PATH"] = f"{Path(weed).parent}{os.pathsep}{env.get('PATH', '')}"
    for role, (access, secret) in keys.items():
        env |= {f"MLRIG_{role}_ACCESS_KEY": access, f"MLRIG_{role}_SECRET_KEY": secret}
    env |= {f"MLRIG_{name}_BUCKET": bucket for name, bucket in BUCKETS.items()}
    env |= {
        "MLRIG_REQUESTS_PREFIX": PREFIX,
        "MLRIG_DRIFT_DATA_BUCKET": BUCKETS["REQUESTS"],
        "MLRIG_S3_CONFIG": str(folder / "s3.json"),
    }
    pid_file, log_file = folder / "weed.pid", folder / "weed.log"
    command = ["sh", str(START_SCRIPT), *arguments]
    pid = start_detached(command, env=env, log_file=log_file, pid_file=pid_file, cwd=folder)
    endpoint = f"http://127.0.0.1:{ports.s3}"
    admin = S3Server(endpoint, *keys["ADMIN"])
    try:
        wait_until(lambda: s3_answers(admin), 60, "SeaweedFS", log_file, pid)
        for bucket in BUCKETS.values():
            admin.create_bucket(bucket)
        yield endpoint, keys
    finally:
        stop_process(pid_file)


def client(endpoint: str, keys: tuple[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        config=Config(retries={"max_attempts": 1}),
    )


def allowed(call: Any, **arguments: Any) -> bool:
    from botocore.exceptions import ClientError

    try:
        call(**arguments)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied", error.response
        return False
    return True


def test_the_serving_keys_read_the_model_and_write_only_the_request_log(store) -> None:
    endpoint, keys = store
    admin, serving = client(endpoint, keys["ADMIN"]), client(endpoint, keys["SERVING"])
    admin.put_object(Bucket=BUCKETS["MLFLOW"], Key="artifacts/model.pkl", Body=b"model")
    logged = f"{PREFIX}/m/v1/day/a.jsonl"

    assert allowed(serving.put_object, Bucket=BUCKETS["REQUESTS"], Key=logged, Body=b"{}\n")
    assert allowed(serving.get_object, Bucket=BUCKETS["MLFLOW"], Key="artifacts/model.pkl")
    assert allowed(serving.list_objects_v2, Bucket=BUCKETS["MLFLOW"])
    # not beside the prefix, not the model's bucket, not the DVC remote; no read of the log
    for bucket, key in [
        (BUCKETS["REQUESTS"], "elsewhere/a.jsonl"),
        (BUCKETS["REQUESTS"], f"{PREFIX}-other/a.jsonl"),
        (BUCKETS["MLFLOW"], "artifacts/model.pkl"),
        (BUCKETS["DVC"], "files/md5/00/x"),
    ]:
        assert not allowed(serving.put_object, Bucket=bucket, Key=key, Body=b"x"), (bucket, key)
    assert not allowed(serving.get_object, Bucket=BUCKETS["REQUESTS"], Key=logged)
    assert not allowed(serving.delete_object, Bucket=BUCKETS["MLFLOW"], Key="artifacts/model.pkl")


def test_the_drift_keys_read_the_dvc_remote_and_the_request_log_only(store) -> None:
    endpoint, keys = store
    admin, drift = client(endpoint, keys["ADMIN"]), client(endpoint, keys["DRIFT"])
    admin.put_object(Bucket=BUCKETS["DVC"], Key="dvc/files/md5/ab/cd", Body=b"split")
    admin.put_object(Bucket=BUCKETS["REQUESTS"], Key=f"{PREFIX}/m/v1/d/b.jsonl", Body=b"{}\n")

    assert allowed(drift.get_object, Bucket=BUCKETS["DVC"], Key="dvc/files/md5/ab/cd")
    assert allowed(drift.list_objects_v2, Bucket=BUCKETS["REQUESTS"], Prefix=f"{PREFIX}/")
    assert allowed(drift.get_object, Bucket=BUCKETS["REQUESTS"], Key=f"{PREFIX}/m/v1/d/b.jsonl")
    for bucket in BUCKETS.values():
        assert not allowed(drift.put_object, Bucket=bucket, Key="x", Body=b"x"), bucket
    assert not allowed(drift.get_object, Bucket=BUCKETS["MLFLOW"], Key="x")
