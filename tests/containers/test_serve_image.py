"""The serving image (images/serve), built for real, against the real local stack: it loads the
champion the pipeline registered there (MLflow server, artifacts proxied to S3) and answers
/invocations with the predictions of the model loaded here."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mlrig.errors import MlrigError
from mlrig.images.build import (
    LOCAL_OS_IMAGE,
    BuildLayout,
    ImageBuild,
    build_serve_image,
    export_requirements,
    prepare_build_inputs,
    step_names,
)
from mlrig.images.engine import Engine, find_engine
from mlrig.serving.server import NAME_HEADER, VERSION_HEADER
from mlrig.settings import Settings
from mlrig.stacks.local.processes import free_port
from tests.support.project import checkout_lock
from tests.support.stack import Stack, start_stack

pytestmark = [pytest.mark.containers, pytest.mark.integration]

READY_SECONDS = 180


@pytest.fixture(scope="module")
def serve_image(repo_settings: Settings) -> tuple[Engine, ImageBuild]:
    """The serving image for the sources as they are (built when its content tag is missing)."""
    try:
        engine = find_engine(repo_settings)
    except MlrigError as error:
        pytest.skip(str(error))
    with checkout_lock("images"):
        if not repo_settings.base_image and not engine.image_exists(LOCAL_OS_IMAGE):
            pytest.skip("no OS base image: make base-image (debootstrap, as root) makes one")
        prepare_build_inputs(repo_settings, step_names(repo_settings.root))
        export_requirements(
            BuildLayout(repo_settings.root), step_names(repo_settings.root), servers=True
        )
        return engine, build_serve_image(repo_settings, engine)


@pytest.fixture(scope="module")
def stack(serve_image: tuple[Engine, ImageBuild]) -> Iterator[Stack]:
    """The stack, with a champion registered by a pipeline run against it."""
    for started in start_stack():
        run = started.mlrig("run", "--stack", "local")
        assert run.returncode == 0, run.stdout + run.stderr
        yield started


@dataclass
class Container:
    url: str
    name: str


def champion(stack: Stack) -> dict:
    return json.loads((stack.root / "outputs/register/champion.json").read_text())


@pytest.fixture(scope="module")
def serving(serve_image: tuple[Engine, ImageBuild], stack: Stack) -> Iterator[Container]:
    """The image's container as the chart runs it: user 1001, read-only root, /tmp writable,
    the stack's client settings in its environment, the model named and nothing else."""
    engine, image = serve_image
    port = free_port()
    name = f"mlrig-serve-test-{port}"
    settings = stack.client_env()
    environment = settings | {
        "MLRIG_SERVE_MODEL": champion(stack)["registered_model"],
        "MLRIG_SERVE_PORT": str(port),
    }
    # `--env NAME` takes the value from podman's own environment: no secret on its command line
    env_flags = [flag for key in environment for flag in ("--env", key)]
    started = subprocess.run(
        engine.command(
            "run", "--detach", "--name", name, *engine.host_flags(), "--network", "host",
            "--read-only", "--tmpfs", "/tmp", "--user", "1001", *env_flags, image.reference,
        ),
        capture_output=True, text=True, timeout=120, env=os.environ | environment,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    container = Container(f"http://127.0.0.1:{port}", name)
    try:
        wait_until_ready(engine, container, port)
        yield container
    finally:
        subprocess.run(engine.command("rm", "--force", "--time", "5", name), capture_output=True)


def container_logs(engine: Engine, container: Container) -> str:
    logs = subprocess.run(engine.command("logs", container.name), capture_output=True, text=True)
    return logs.stdout + logs.stderr


def answers_ping(container: Container) -> bool:
    try:
        with urllib.request.urlopen(f"{container.url}/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_ready(engine: Engine, container: Container, port: int) -> None:
    """Until the container's own server holds the port (its log says so; binding it is
    exclusive) and answers: not another server that took the port free_port gave out before
    the container bound it."""
    listening = f"Uvicorn running on http://0.0.0.0:{port}"
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if listening in container_logs(engine, container) and answers_ping(container):
            return
        time.sleep(1)
    logs = container_logs(engine, container)
    raise AssertionError(f"the serving container was not ready: {logs}")


#: the served model's class probabilities, computed in the container with its libraries, on
#: the request body (stdin) parsed as MLflow's scoring server parses it
PROBABILITIES_IN_THE_CONTAINER = """
import glob, json, sys
import mlflow.pyfunc
from mlflow.pyfunc import scoring_server
[mlmodel] = glob.glob("/tmp/mlrig-serve-*/**/MLmodel", recursive=True)
model = mlflow.pyfunc.load_model(mlmodel.rsplit("/", 1)[0])
frame = scoring_server.infer_and_parse_data(json.load(sys.stdin), model.metadata.get_input_schema())
print(json.dumps(model.get_raw_model().predict_proba(frame).tolist()))
"""
#: the largest difference allowed between a probability computed in the image and here: the
#: same libraries on the same CPU give the same bits (measured: 0); a summation order of
#: another BLAS thread count may move the last bits, far below what flips a label
PROBABILITY_TOLERANCE = 1e-12


def served_probabilities(engine: Engine, container: Container, body: bytes) -> list[list[float]]:
    computed = subprocess.run(
        engine.command("exec", "--interactive", container.name, "python", "-c",
                       PROBABILITIES_IN_THE_CONTAINER),
        input=body, capture_output=True, timeout=300,
    )  # fmt: skip
    assert computed.returncode == 0, computed.stderr.decode()
    return json.loads(computed.stdout)


def test_the_container_answers_as_the_champion_loaded_here(
    serve_image: tuple[Engine, ImageBuild],
    serving: Container,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    registered = champion(stack)
    meta = json.loads((stack.root / "outputs/split/meta.json").read_text())
    rows = pd.read_parquet(stack.root / "outputs/split/test.parquet")[meta["features"]]
    body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
    request = urllib.request.Request(
        f"{serving.url}/invocations", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        served = json.loads(response.read())["predictions"]
        name, version = response.headers[NAME_HEADER], response.headers[VERSION_HEADER]
    assert (name, version) == (registered["registered_model"], registered["version"])

    # the stack's registry by its URI, not by MLFLOW_TRACKING_URI alone: a URI set in this
    # process (mlflow.set_tracking_uri) wins over the variable (issue 19)
    for key, value in stack.client_env().items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(stack.client_env()["MLFLOW_TRACKING_URI"])
    alias = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    assert str(alias.version) == version
    local = mlflow.pyfunc.load_model(f"models:/{name}/{version}")

    assert len(served) == len(rows) > 10
    assert served == local.predict(rows).tolist()
    engine, _ = serve_image
    in_the_image = np.array(served_probabilities(engine, serving, body))
    here = local.get_raw_model().predict_proba(rows)
    assert np.abs(in_the_image - here).max() <= PROBABILITY_TOLERANCE


def test_status_names_the_version_the_container_serves(serving: Container, stack: Stack) -> None:
    status = stack.mlrig("serve", "status", "--url", serving.url, "--json")
    assert status.returncode == 0, status.stderr
    described = json.loads(status.stdout)
    assert described["version"] == champion(stack)["version"]
    assert described["model"] == champion(stack)["registered_model"]


def test_the_image_holds_no_credential(serve_image: tuple[Engine, ImageBuild]) -> None:
    engine, image = serve_image
    environment = engine.inspect(image.reference, "{{json .Config.Env}}") or ""
    assert not any(word in environment for word in ("PASSWORD", "SECRET", "ACCESS_KEY"))
    assert engine.inspect(image.reference, "{{.Config.User}}") == "1001"
