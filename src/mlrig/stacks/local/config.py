"""Where the stack keeps its data, which ports it uses, and its generated credentials."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mlrig.settings import Settings
from mlrig.stacks.local.seaweedfs import SeaweedPorts

DVC_BUCKET = "mlrig-dvc"
MLFLOW_BUCKET = "mlrig-mlflow"
DVC_REMOTE_NAME = "stack"
MLFLOW_ADMIN = "admin"
REGION = "us-east-1"


class StackPaths:
    """Every file and folder of the stack, under `.mlrig/stack/`."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.state_dir / "stack"
        self.project = settings.root
        self.postgres_data = self.root / "postgres" / "data"
        self.postgres_sockets = self.root / "postgres" / "sockets"
        self.s3_data = self.root / "s3"
        self.s3_identities = self.root / "s3-identities.json"
        self.mlflow_dir = self.root / "mlflow"
        self.auth_config = self.mlflow_dir / "basic_auth.ini"
        self.logs = self.root / "logs"
        self.state_file = self.root / "stack.json"
        self.secrets_file = self.root / "secrets.json"
        self.env_file = self.root / "stack.env"

    def pid_file(self, service: str) -> Path:
        return self.root / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"


class StackState(BaseModel):
    """The stack's ports, chosen on first start and kept."""

    # a stack.json of the moto days names its `s3_kind`: ignored, its ports are kept
    model_config = ConfigDict(extra="ignore")

    postgres_port: int
    s3_port: int
    mlflow_port: int
    # SeaweedFS's inner servers; picked for a stack.json written before SeaweedFS
    seaweedfs: SeaweedPorts | None = None

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"


def s3_access_key() -> str:
    return "mlrig" + secrets.token_hex(8)


def s3_secret_key() -> str:
    return secrets.token_urlsafe(30)


class StackSecrets(BaseModel):
    """Generated credentials, kept across restarts."""

    postgres_superuser_password: str
    mlflow_db_password: str
    mlflow_admin_password: str
    # the clients' S3 identity (the pipeline, DVC): the DVC bucket only
    s3_access_key: str
    s3_secret_key: str
    # the MLflow server's S3 identity: its artifact bucket only
    s3_mlflow_access_key: str = Field(default_factory=s3_access_key)
    s3_mlflow_secret_key: str = Field(default_factory=s3_secret_key)
    # signs the MLflow server's CSRF tokens; one per stack, kept across restarts
    mlflow_flask_secret_key: str = Field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def generate(cls) -> StackSecrets:
        return cls(
            postgres_superuser_password=secrets.token_urlsafe(24),
            mlflow_db_password=secrets.token_urlsafe(24),
            mlflow_admin_password=secrets.token_urlsafe(24),
            s3_access_key=s3_access_key(),
            s3_secret_key=s3_secret_key(),
        )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(text)


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_model(path: Path, model: type[ModelT]) -> ModelT | None:
    return model.model_validate_json(path.read_text()) if path.is_file() else None


def save_secrets(paths: StackPaths, stack_secrets: StackSecrets) -> None:
    write_private(paths.secrets_file, stack_secrets.model_dump_json(indent=2))


def client_environment(state: StackState, stack_secrets: StackSecrets) -> dict[str, str]:
    """What a shell, the pipeline, DVC and boto3 need to use the stack."""
    return {
        "MLFLOW_TRACKING_URI": state.mlflow_uri,
        "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
        "MLFLOW_TRACKING_PASSWORD": stack_secrets.mlflow_admin_password,
        "AWS_ACCESS_KEY_ID": stack_secrets.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": stack_secrets.s3_secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": state.s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint,
        "MLRIG_DVC_REMOTE": DVC_REMOTE_NAME,
        # bounded retries with backoff: an S3 outage fails a push in seconds, not minutes
        "AWS_MAX_ATTEMPTS": "3",
        "AWS_RETRY_MODE": "standard",
    }


def write_client_env(paths: StackPaths, environment: dict[str, str]) -> None:
    lines = [f"export {key}={json.dumps(value)}" for key, value in environment.items()]
    write_private(
        paths.env_file,
        "# written by `mlrig stack up`; secrets, keep private\n" + "\n".join(lines) + "\n",
    )
