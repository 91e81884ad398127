"""The mlflow-users hook: make the pipeline's MLflow user (never an admin, its password the
Secret's), create the pipeline's experiments and registered models when missing, and grant the
user PERMISSION on each; then make each read-only identity (the scoring server's, the drift
CronJob's: user name and password from the Secret the values name) a user that is no admin and
may only READ its registered models. MLflow's auth REST API as its admin, the standard library
only.

The endpoints are those of the pinned server (mlflow[auth] 3.17.2): users/create,
users/update-password and users/update-admin under /api/2.0, and the per-user grant API
users/permissions/{grant,revoke,get} under /api/3.0 (it replaced the per-resource
experiments/permissions and registered-models/permissions endpoints)."""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

URI = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
WAIT_SECONDS = 600


class ApiError(Exception):
    """MLflow refused a request: its HTTP status and error code."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(f"HTTP {status} {code}: {text}")
        self.status, self.code = status, code


def call(method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
    """One request as the admin; the JSON answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    credentials = f"{os.environ['MLFLOW_ADMIN_USERNAME']}:{os.environ['MLFLOW_ADMIN_PASSWORD']}"
    request = urllib.request.Request(
        URI + path + query,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            code = json.loads(text).get("error_code", "")
        except ValueError:
            code = ""
        raise ApiError(error.code, code, text[:300]) from None
    return json.loads(text) if text.strip() else {}


def wait_for_mlflow() -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{URI}/health", timeout=10) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"mlrig: MLflow at {URI} did not answer /health in {WAIT_SECONDS}s")
        time.sleep(3)


def ensure_user(username: str, password: str) -> None:
    """The user exists with this password and is no admin."""
    try:
        call("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})
        print(f"user {username}: created")
    except ApiError as error:
        if error.code != "RESOURCE_ALREADY_EXISTS":
            raise
        body = {"username": username, "password": password}
        call("PATCH", "/api/2.0/mlflow/users/update-password", body)
        print(f"user {username}: exists, password set from its Secret")
    user = call("GET", "/api/2.0/mlflow/users/get", params={"username": username})["user"]
    if user.get("is_admin"):
        demoted = {"username": username, "is_admin": False}
        call("PATCH", "/api/2.0/mlflow/users/update-admin", demoted)
        print(f"user {username}: was an admin, is not any more")


def experiment_id(name: str) -> str:
    """The experiment's id, created (or restored) when missing."""
    try:
        found = call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
        )
    except ApiError as error:
        if error.code != "RESOURCE_DOES_NOT_EXIST":
            raise
        created = call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})
        print(f"experiment {name}: created")
        return created["experiment_id"]
    experiment = found["experiment"]
    if experiment.get("lifecycle_stage") == "deleted":
        restored = {"experiment_id": experiment["experiment_id"]}
        call("POST", "/api/2.0/mlflow/experiments/restore", restored)
        print(f"experiment {name}: restored")
    return experiment["experiment_id"]


def ensure_registered_model(name: str) -> str:
    try:
        call("GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})
    except ApiError as error:
        if error.code != "RESOURCE_DOES_NOT_EXIST":
            raise
        call("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
        print(f"registered model {name}: created")
    return name


def grant(username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """The user holds exactly `permission` on the resource (another level is replaced)."""
    grant_body = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    granted = grant_body | {"permission": permission}
    try:
        call("POST", "/api/3.0/mlflow/users/permissions/grant", granted)
    except ApiError as error:
        if error.code != "RESOURCE_ALREADY_EXISTS":
            raise
        held = call("GET", "/api/3.0/mlflow/users/permissions/get", params=grant_body)["permission"]
        if held == permission:
            return
        call("POST", "/api/3.0/mlflow/users/permissions/revoke", grant_body)
        call("POST", "/api/3.0/mlflow/users/permissions/grant", granted)
    print(f"{resource_type} {resource_id}: {username} may {permission}")


@dataclass(frozen=True)
class Reader:
    """A read-only identity: its role, the Secret it comes from, and what it may READ."""

    role: str
    secret: str
    username: str
    password: str
    registered_models: list[str]


def readers() -> list[Reader]:
    """The read-only identities of MLRIG_READERS, each one's user name and password from
    MLRIG_<ROLE>_USERNAME and MLRIG_<ROLE>_PASSWORD (its Secret's keys)."""
    return [
        Reader(
            role=described["role"],
            secret=described["secret"],
            username=os.environ[f"MLRIG_{described['role'].upper()}_USERNAME"],
            password=os.environ[f"MLRIG_{described['role'].upper()}_PASSWORD"],
            registered_models=described["registeredModels"],
        )
        for described in json.loads(os.environ.get("MLRIG_READERS", "[]"))
    ]


def reader_errors(found: list[Reader], pipeline_username: str, admin_username: str) -> list[str]:
    """What makes the read-only identities unusable. Checked before any change: granting READ
    to the pipeline's user would take its EDIT away, and to the admin would demote it."""
    errors, passwords = [], {}
    for reader in found:
        source = f"mlflow-username of Secret {reader.secret} (the {reader.role} identity)"
        if not reader.username or not reader.password:
            errors.append(f"Secret {reader.secret} needs mlflow-username and mlflow-password")
        elif reader.username == pipeline_username:
            errors.append(
                f"{source} is {reader.username!r}, the pipeline's user (mlflow.pipelineUser): "
                "it needs a user of its own, which may only read"
            )
        elif reader.username == admin_username:
            errors.append(
                f"{source} is {reader.username!r}, MLflow's admin (mlflow.auth.adminUsername): "
                "it needs a user of its own, which may only read"
            )
        elif passwords.setdefault(reader.username, reader.password) != reader.password:
            errors.append(
                f"{source} is {reader.username!r}, like another identity's Secret, with "
                "another mlflow-password: one user has one password"
            )
    return errors


def main() -> int:
    username, permission = os.environ["MLRIG_PIPELINE_USERNAME"], os.environ["MLRIG_PERMISSION"]
    found = readers()
    if errors := reader_errors(found, username, os.environ["MLFLOW_ADMIN_USERNAME"]):
        print("mlrig: nothing changed in MLflow: " + "; ".join(errors) + ".", file=sys.stderr)
        return 1
    wait_for_mlflow()
    try:
        ensure_user(username, os.environ["MLRIG_PIPELINE_PASSWORD"])
        for name in json.loads(os.environ["MLRIG_EXPERIMENTS"]):
            grant(username, "experiment", experiment_id(name), permission)
        for name in json.loads(os.environ["MLRIG_REGISTERED_MODELS"]):
            grant(username, "registered_model", ensure_registered_model(name), permission)
        for reader in found:
            ensure_user(reader.username, reader.password)
            for name in reader.registered_models:
                grant(reader.username, "registered_model", ensure_registered_model(name), "READ")
    except ApiError as error:
        print(f"mlrig: MLflow at {URI} refused: {error}", file=sys.stderr)
        return 1
    return 0


sys.exit(main())
