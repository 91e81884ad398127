"""`mlrig serve` and `mlrig-serve` on a real MLflow registry (a SQLite store): the champion
answers /invocations as the model loaded in-process does, /version names the version served,
and `mlrig serve status` and `rollout --dry-run` read the same registry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlrig.stacks.local.processes import free_port
from tests.support.project import clean_environment, run_mlrig
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

MODEL = "mlrig-serving-test"
STARTUP_SECONDS = 120


@dataclass(frozen=True)
class Registry:
    """A SQLite MLflow store whose model has two versions, the champion alias on the second."""

    root: Path
    tracking_uri: str
    features: list[dict[str, float]]

    def env(self) -> dict[str, str]:
        return clean_environment(self.root) | {"MLFLOW_TRACKING_URI": self.tracking_uri}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("serving")
    (root / "dvc.yaml").write_text("stages: {}\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # the artifacts in the test's folder too (MLflow's default is ./mlruns of the working folder)
    mlflow.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment("serving")
    frame = load_breast_cancer(as_frame=True)
    features, target = frame.data, frame.target
    for strength in (0.001, 10.0):  # version 1 and version 2 predict differently
        with mlflow.start_run():
            model = make_pipeline(StandardScaler(), LogisticRegression(C=strength))
            model.fit(features, target)
            mlflow.sklearn.log_model(
                model, name="model", input_example=features.head(2), registered_model_name=MODEL
            )
    MlflowClient(uri).set_registered_model_alias(MODEL, "champion", "2")
    mlflow.set_tracking_uri(None)
    return Registry(root, uri, features.to_dict(orient="records"))


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server stopped: {server.process.communicate()}")
        try:
            with urllib.request.urlopen(f"{server.url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the server was not ready in time")


@pytest.fixture
def start(registry: Registry) -> Iterator:
    """Start a server (the command given) on a free port; stop it after the test."""
    servers: list[Server] = []

    def started(command: list[str], **environment: str) -> Server:
        port = free_port()
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=registry.root,
            env=registry.env() | environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server = Server(f"http://127.0.0.1:{port}", process)
        servers.append(server)
        wait_until_ready(server)
        return server

    yield started
    for server in servers:
        server.process.terminate()
        server.process.wait(timeout=30)


def invoke(url: str, rows: list[dict[str, float]]) -> tuple[list, dict[str, str]]:
    body = json.dumps({"dataframe_records": rows}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"], dict(response.headers)


def local_predictions(registry: Registry, version: str) -> list:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
        return model.predict(pd.DataFrame(registry.features)).tolist()
    finally:
        mlflow.set_tracking_uri(None)


MLRIG_SERVE = [sys.executable, "-m", "mlrig", "serve", "--model", MODEL]


def test_mlrig_serve_answers_as_the_champion_loaded_here(registry: Registry, start) -> None:
    server = start(MLRIG_SERVE)
    predictions, headers = invoke(server.url, registry.features)
    assert predictions == local_predictions(registry, "2")
    assert predictions != local_predictions(registry, "1")  # the versions can be told apart
    assert headers["x-mlrig-model-version"] == "2"
    with urllib.request.urlopen(f"{server.url}/version") as response:
        assert json.loads(response.read())["version"] == "2"
    status = run_mlrig("serve", "status", "--url", server.url, "--json", cwd=registry.root)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["model"] == MODEL


def test_the_image_entrypoint_serves_the_version_a_rollout_pinned(
    registry: Registry, start
) -> None:
    entrypoint = Path(sys.executable).parent / "mlrig-serve"
    server = start(
        [str(entrypoint), "--host", "127.0.0.1"],
        MLRIG_SERVE_MODEL=MODEL,
        MLRIG_SERVE_VERSION_PIN="1",
    )
    predictions, headers = invoke(server.url, registry.features[:1])
    assert headers["x-mlrig-model-version"] == "1"
    assert predictions == local_predictions(registry, "1")[:1]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"MLRIG_SERVE_MODEL_URI": "runs:/abc/model"}, "models:/<name>@<alias>"),
        ({"MLRIG_SERVE_MODEL": "no-such-model"}, "has no no-such-model @champion"),
        ({"MLRIG_SERVE_MODEL": MODEL, "MLRIG_SERVE_VERSION_PIN": "9"}, "version 9"),
        ({}, "Name the model to serve"),
    ],
)
def test_nothing_listens_when_the_model_cannot_be_served(
    registry: Registry, environment: dict[str, str], message: str
) -> None:
    entrypoint = Path(sys.executable).parent / "mlrig-serve"
    result = subprocess.run(
        [str(entrypoint), "--port", str(free_port())],
        cwd=registry.root,
        env=registry.env() | environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_rollout_dry_run_prints_the_champions_version_as_a_patch(registry: Registry) -> None:
    result = run_mlrig(
        "serve", "rollout", "--deployment", "mlrig-serving", "--model", MODEL, "--dry-run",
        cwd=registry.root, MLFLOW_TRACKING_URI=registry.tracking_uri,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    patch = json.loads(result.stdout)
    assert patch["spec"]["template"]["metadata"]["annotations"] == {"mlrig.io/model-version": "2"}


def test_status_of_no_server_says_how_to_start_one(registry: Registry) -> None:
    result = run_mlrig(
        "serve", "status", "--url", f"http://127.0.0.1:{free_port()}", cwd=registry.root
    )
    assert result.returncode == 1
    assert "mlrig serve" in result.stderr and "Traceback" not in result.stderr


LOG_BUCKET = "mlrig-requests"


def test_requests_are_logged_to_s3_in_batches_and_flushed_on_sigterm(
    registry: Registry, start, s3_server: S3Server
) -> None:
    from mlrig.serving.request_log import read_request_log

    s3_server.create_bucket(LOG_BUCKET)
    prefix = f"s3://{LOG_BUCKET}/serving-{uuid.uuid4().hex[:8]}"
    server = start(
        MLRIG_SERVE,
        **s3_server.env(),
        MLRIG_SERVE_REQUEST_LOG=prefix,
        MLRIG_SERVE_REQUEST_LOG_BATCH_REQUESTS="2",
    )
    sent = [registry.features[:3], registry.features[3:4], registry.features[4:9]]
    predicted = [invoke(server.url, rows)[0] for rows in sent]
    client = s3_client(s3_server)
    # two requests filled a batch: uploaded while the server runs
    deadline = time.monotonic() + 30
    while not log_objects(client, prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(log_objects(client, prefix)) == 1
    server.process.terminate()  # SIGTERM, as Kubernetes stops a pod: the rest is flushed
    output, _ = server.process.communicate(timeout=60)
    keys = log_objects(client, prefix)
    assert len(keys) == 2, output
    assert all(key.split("/")[1:3] == [MODEL, "v2"] for key in keys)

    with pytest.MonkeyPatch.context() as patched:
        for name, value in s3_server.env().items():
            patched.setenv(name, value)
        table = read_request_log(prefix + "/")
    rows = [row for rows in sent for row in rows]
    features = list(registry.features[0])
    assert table[features].to_dict(orient="records") == rows
    assert table["prediction"].tolist() == [p for answer in predicted for p in answer]
    assert set(table["model_version"]) == {"2"}
    assert s3_server.secret_key not in output


def test_a_refused_upload_is_reported_once_and_requests_are_still_answered(
    registry: Registry, start, s3_server: S3Server
) -> None:
    s3_server.create_bucket(LOG_BUCKET)
    wrong = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret-" + uuid.uuid4().hex}
    server = start(
        MLRIG_SERVE,
        **wrong,
        MLRIG_SERVE_REQUEST_LOG=f"s3://{LOG_BUCKET}/refused",
        MLRIG_SERVE_REQUEST_LOG_BATCH_REQUESTS="1",
    )
    for _ in range(3):
        predictions, _ = invoke(server.url, registry.features[:2])
        assert len(predictions) == 2
    time.sleep(2)  # the uploads of the three batches fail meanwhile
    server.process.terminate()
    output, _ = server.process.communicate(timeout=60)
    assert output.count("request log: could not upload") == 1, output
    assert "SignatureDoesNotMatch" in output or "AccessDenied" in output or "Invalid" in output
    assert "3 failed uploads" in output
    assert wrong["AWS_SECRET_ACCESS_KEY"] not in output
    assert "Traceback" not in output


def s3_client(server: S3Server):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )


def log_objects(client, prefix: str) -> list[str]:
    bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key_prefix + "/")
    return sorted(item["Key"] for item in listed.get("Contents", []))
