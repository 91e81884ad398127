"""The chart's mlflow-users hook script (helm/mlrig/files/mlflow-users.py) run here against a
real MLflow server with basic auth, as the hook's pod runs it: the read-only identities it makes
from their Secrets' values, and the ones it refuses before changing anything."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from mlrig.stacks.local.processes import free_port
from tests.support.project import REPO_ROOT

pytestmark = pytest.mark.integration

HOOK = REPO_ROOT / "helm" / "mlrig" / "files" / "mlflow-users.py"
ADMIN = "admin"
STARTUP_SECONDS = 180


@dataclass(frozen=True)
class Server:
    """An MLflow server with basic auth (its user store SQLite) and its admin's password."""

    uri: str
    admin_password: str

    @property
    def admin(self) -> tuple[str, str]:
        return (ADMIN, self.admin_password)

    def get(self, path: str, auth: tuple[str, str] | None = None, **params: str) -> Any:
        return requests.get(
            f"{self.uri}/api/{path}", params=params, auth=auth or self.admin, timeout=30
        )

    def post(self, path: str, body: dict[str, Any], auth: tuple[str, str] | None = None) -> Any:
        url = f"{self.uri}/api/{path}"
        return requests.post(url, json=body, auth=auth or self.admin, timeout=30)

    def permissions(self, username: str) -> list[tuple[str, str, str]]:
        """(resource type, resource, permission) of each grant the user holds, as the admin
        reads them."""
        listed = self.get("3.0/mlflow/users/permissions/list", username=username)
        assert listed.status_code == 200, listed.text
        return sorted(
            (row["resource_type"], row["resource_pattern"], row["permission"])
            for row in listed.json()["permissions"]
        )

    def is_admin(self, username: str) -> bool:
        found = self.get("2.0/mlflow/users/get", username=username)
        assert found.status_code == 200, found.text
        return bool(found.json()["user"]["is_admin"])


def wait_for(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"mlflow server did not answer {url}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlflow server --app-name basic-auth` on loopback, as the chart runs it (READ by
    default), its stores SQLite."""
    store = tmp_path_factory.mktemp("mlflow-auth")
    admin_password = secrets.token_urlsafe(16)
    config = store / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{store / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\nadmin_password = {admin_password}\n"
    )
    port = free_port()
    log = store / "server.log"
    environment = os.environ | {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"),
                *("--workers", "1", "--host", "127.0.0.1", "--port", str(port)),
                *("--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"),
                *("--artifacts-destination", (store / "artifacts").as_uri()),
            ],
            stdout=output, stderr=subprocess.STDOUT, env=environment,
        )  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process, log)
        yield Server(f"http://127.0.0.1:{port}", admin_password)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Identity:
    """What an operator puts in a Secret: mlflow-username and mlflow-password."""

    username: str
    password: str = ""

    def __post_init__(self) -> None:
        if not self.password:
            object.__setattr__(self, "password", secrets.token_urlsafe(16))

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_hook(
    server: Server, pipeline: Identity, model: str, readers: dict[str, tuple[Identity, list[str]]]
) -> subprocess.CompletedProcess[str]:
    """The hook's script with the environment its Job gives it: the pipeline's user with EDIT
    on `model`, and each read-only identity by role (its Secret's values as the kubelet passes
    them, from secretKeyRef)."""
    environment = {
        "PATH": os.environ["PATH"],
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_ADMIN_USERNAME": ADMIN,
        "MLFLOW_ADMIN_PASSWORD": server.admin_password,
        "MLRIG_PIPELINE_USERNAME": pipeline.username,
        "MLRIG_PIPELINE_PASSWORD": pipeline.password,
        "MLRIG_EXPERIMENTS": json.dumps([unique("experiment")]),
        "MLRIG_REGISTERED_MODELS": json.dumps([model]),
        "MLRIG_PERMISSION": "EDIT",
        "MLRIG_READERS": json.dumps(
            [
                {"role": role, "secret": f"secret-{role}", "registeredModels": models}
                for role, (_, models) in readers.items()
            ]
        ),
    }
    for role, (identity, _) in readers.items():
        environment[f"MLRIG_{role.upper()}_USERNAME"] = identity.username
        environment[f"MLRIG_{role.upper()}_PASSWORD"] = identity.password
    return subprocess.run(
        [sys.executable, str(HOOK)], env=environment, capture_output=True, text=True, timeout=300
    )


def test_the_hook_makes_the_serving_user_that_may_only_read_its_model(server: Server) -> None:
    pipeline, serving = Identity(unique("pipeline")), Identity(unique("serving"))
    model, other = unique("model"), unique("drift-model")
    hook = run_hook(
        server, pipeline, model,
        {"serving": (serving, [model]), "drift": (serving, [other])},
    )  # fmt: skip
    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert f"user {serving.username}: created" in hook.stdout
    assert not server.is_admin(serving.username)
    # READ on each model (the drift one created when missing, like the pipeline's), nothing else
    assert server.permissions(serving.username) == sorted(
        [("registered_model", model, "READ"), ("registered_model", other, "READ")]
    )
    assert ("registered_model", model, "EDIT") in server.permissions(pipeline.username)

    read = server.get("2.0/mlflow/registered-models/get", serving.auth, name=model)
    assert read.status_code == 200, read.text
    experiment = server.post("2.0/mlflow/experiments/create", {"name": unique("mine")})
    attempts = {
        "alias": ("2.0/mlflow/registered-models/alias",
                  {"name": model, "alias": "champion", "version": "1"}),
        "run": ("2.0/mlflow/runs/create",
                {"experiment_id": experiment.json()["experiment_id"]}),
        "grant": ("3.0/mlflow/users/permissions/grant",
                  {"username": serving.username, "resource_type": "registered_model",
                   "resource_id": model, "permission": "EDIT"}),
    }  # fmt: skip
    for action, (path, body) in attempts.items():
        refused = server.post(path, body, serving.auth)
        assert refused.status_code == 403, (action, refused.text)


def test_an_existing_user_gets_its_secrets_password_loses_admin_and_edit(server: Server) -> None:
    """What the hook finds made by hand (an admin with EDIT on the model) becomes the read-only
    identity its Secret describes."""
    pipeline, model = Identity(unique("pipeline")), unique("model")
    old = Identity(unique("serving"))
    for path, body in (
        ("2.0/mlflow/users/create", {"username": old.username, "password": old.password}),
        ("2.0/mlflow/registered-models/create", {"name": model}),
        ("3.0/mlflow/users/permissions/grant",
         {"username": old.username, "resource_type": "registered_model", "resource_id": model,
          "permission": "EDIT"}),
    ):  # fmt: skip
        made = server.post(path, body)
        assert made.status_code == 200, made.text
    promoted = requests.patch(
        f"{server.uri}/api/2.0/mlflow/users/update-admin",
        json={"username": old.username, "is_admin": True}, auth=server.admin, timeout=30,
    )  # fmt: skip
    assert promoted.status_code == 200 and server.is_admin(old.username)

    new = Identity(old.username)
    hook = run_hook(server, pipeline, model, {"serving": (new, [model])})
    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert not server.is_admin(new.username)
    assert server.permissions(new.username) == [("registered_model", model, "READ")]
    path = "2.0/mlflow/registered-models/get"
    assert server.get(path, new.auth, name=model).status_code == 200
    assert server.get(path, old.auth, name=model).status_code == 401


@pytest.mark.parametrize("named_like", ["pipeline", "admin", "another-password"])
def test_a_serving_user_that_is_not_its_own_is_refused_before_any_change(
    server: Server, named_like: str
) -> None:
    pipeline, model = Identity(unique("pipeline")), unique("model")
    drift = Identity(unique("drift"))
    serving = {
        "pipeline": Identity(pipeline.username, pipeline.password),
        "admin": Identity(ADMIN, server.admin_password),
        "another-password": Identity(drift.username),
    }[named_like]
    hook = run_hook(
        server, pipeline, model, {"serving": (serving, [model]), "drift": (drift, [model])}
    )
    assert hook.returncode == 1
    assert "nothing changed in MLflow" in hook.stderr
    assert "mlflow-username of Secret secret-" in hook.stderr, hook.stderr
    assert "Traceback" not in hook.stderr
    # no user, no model made; the admin still is one, with its password
    assert server.get("2.0/mlflow/users/get", username=pipeline.username).status_code == 404
    assert server.get("2.0/mlflow/users/get", username=drift.username).status_code == 404
    assert server.get("2.0/mlflow/registered-models/get", name=model).status_code == 404
    assert server.is_admin(ADMIN)
