"""Infrastructure settings, read from the environment (12-factor) into one object.

Experiment settings live in params.yaml (see `mlrig.experiments.params`); this module only says
where things run and where they are stored. Nothing is read at import time: call `load_settings()`.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlrig.errors import ConfigError

STATE_DIR_NAME = ".mlrig"


def find_project_dir(start: Path | None = None) -> Path:
    """Return the nearest folder at or above `start` that holds a `dvc.yaml`.

    Raises:
        ConfigError: when no such folder exists.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise ConfigError(
        f"No dvc.yaml found in {here} or any folder above it. Run mlrig from inside an mlrig "
        "project (the folder you cloned), or set MLRIG_PROJECT_DIR to it."
    )


class Settings(BaseSettings):
    """Where mlrig tracks and stores things; every field has an environment variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    project_dir: Path | None = Field(
        default=None,
        alias="MLRIG_PROJECT_DIR",
        description="the project folder; unset: the nearest folder at or above the working "
        "directory that holds a dvc.yaml",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        alias="MLFLOW_TRACKING_URI",
        description="MLflow store or server; unset: `sqlite:///<project>/.mlrig/mlflow.db`",
    )
    mlflow_experiment: str = Field(
        default="mlrig", alias="MLRIG_EXPERIMENT", description="MLflow experiment name"
    )
    clearml_api_host: str | None = Field(
        default=None,
        alias="CLEARML_API_HOST",
        description="ClearML API server; unset: offline sessions",
    )
    clearml_web_host: str | None = Field(
        default=None,
        alias="CLEARML_WEB_HOST",
        description="ClearML web UI, for links to tasks in the summary and the report",
    )
    clearml_access_key: SecretStr | None = Field(
        default=None, alias="CLEARML_API_ACCESS_KEY", description="ClearML access key"
    )
    clearml_secret_key: SecretStr | None = Field(
        default=None, alias="CLEARML_API_SECRET_KEY", description="ClearML secret key"
    )
    clearml_offline: bool | None = Field(
        default=None,
        alias="CLEARML_OFFLINE_MODE",
        description="force offline sessions; unset: on when no server is set",
    )
    clearml_project: str = Field(
        default="mlrig", alias="MLRIG_CLEARML_PROJECT", description="ClearML project"
    )
    clearml_queue: str = Field(
        default="default",
        alias="MLRIG_CLEARML_QUEUE",
        description="the queue ClearML agents take pipeline steps from, unless a step has its own",
    )
    clearml_step_queues: dict[str, str] = Field(
        default_factory=dict,
        alias="MLRIG_CLEARML_STEP_QUEUES",
        description='a queue per step or stage, as JSON: `{"train": "gpu", "report@x": "cpu"}`',
    )
    clearml_services_queue: str = Field(
        default="services",
        alias="MLRIG_CLEARML_SERVICES_QUEUE",
        description="the queue the pipeline controller itself runs on (a services agent)",
    )
    # each stage a run executes records one, and they pile up until `mlrig clearml import`
    clearml_keep_sessions: int = Field(
        default=50,
        ge=0,
        alias="MLRIG_CLEARML_KEEP_SESSIONS",
        description="offline ClearML sessions kept in the project (the newest; 0 keeps every one)",
    )
    dvc_remote: str | None = Field(
        default=None,
        alias="MLRIG_DVC_REMOTE",
        description="the DVC remote `mlrig run` pushes to; unset: DVC's default remote (`local`)",
    )
    dvc_remote_url: str | None = Field(
        default=None,
        alias="MLRIG_DVC_REMOTE_URL",
        description="the DVC remote of a stage container or pod (`mlrig stage`), e.g. "
        "`s3://mlrig-dvc`",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        alias="AWS_ENDPOINT_URL",
        description="the S3 endpoint of that remote, when not AWS (MinIO, SeaweedFS)",
    )
    parent_run_id: str | None = Field(
        default=None,
        alias="MLRIG_PARENT_RUN_ID",
        description="set by `mlrig run` for its stages: the pipeline's MLflow parent run",
    )
    pipeline_run_id: str | None = Field(
        default=None,
        alias="MLRIG_PIPELINE_RUN_ID",
        description="set by `mlrig run` for its stages: the pipeline run's id",
    )
    git_commit: str | None = Field(
        default=None,
        alias="MLRIG_GIT_COMMIT",
        description="the commit the runs' lineage names; unset: the checkout's HEAD "
        "(`-dirty` when tracked files other than dvc.lock changed)",
    )
    image: str | None = Field(
        default=None,
        alias="MLRIG_IMAGE",
        description="set by the containers executor: the step image a stage ran in "
        "(the MLflow tag `mlrig.image`)",
    )
    container_engine: str | None = Field(
        default=None,
        alias="MLRIG_CONTAINER_ENGINE",
        description="docker or podman; unset: a docker that answers, else podman",
    )
    container_runtime: str | None = Field(
        default=None,
        alias="MLRIG_CONTAINER_RUNTIME",
        description="podman's OCI runtime; unset: runc when installed, as crun fails on "
        "cgroup v1 kernels",
    )
    base_image: str | None = Field(
        default=None,
        alias="MLRIG_BASE_IMAGE",
        description="what the base image is built FROM; unset: the image `make base-image` "
        "made, else the digest-pinned default of images/base/Dockerfile",
    )
    image_repository: str = Field(
        default="localhost/mlrig",
        alias="MLRIG_IMAGE_REPOSITORY",
        description="the repository the images are tagged in (`<repository>/<step>:<tag>`)",
    )

    @property
    def root(self) -> Path:
        """The project folder (the one holding dvc.yaml)."""
        return (self.project_dir or find_project_dir()).resolve()

    @property
    def state_dir(self) -> Path:
        """Git-ignored folder for everything mlrig keeps locally (stores, sessions, remote)."""
        return self.root / STATE_DIR_NAME

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the configured server, else a SQLite store in the project."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def uses_local_mlflow(self) -> bool:
        """True when runs go to the embedded SQLite store rather than a server."""
        return not self.mlflow_tracking_uri

    @property
    def artifact_root(self) -> Path:
        """Artifact folder of the embedded MLflow store."""
        return self.state_dir / "mlartifacts"

    @property
    def clearml_is_offline(self) -> bool:
        """ClearML records offline sessions unless a server is configured (or offline is forced)."""
        if self.clearml_offline is not None:
            return self.clearml_offline
        return not self.clearml_api_host

    @property
    def clearml_cache_dir(self) -> Path:
        """ClearML's cache folder; offline sessions land in its `offline/` subfolder."""
        return self.state_dir / "clearml"

    @property
    def clearml_sessions_dir(self) -> Path:
        """Where offline ClearML sessions (one zip per task) are written."""
        return self.clearml_cache_dir / "offline"


def unset_names(values: dict[str, object]) -> list[str]:
    """The names of the settings given without a value: what an error message asks to set."""
    return [name for name, value in values.items() if not value]


def move_uri_credentials(environment: MutableMapping[str, str]) -> None:
    """Take a `user:password@` out of MLFLOW_TRACKING_URI into MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD (unless those are set), which MLflow sends the same way.

    Nothing then holds the password in the URI: MLflow prints that URI ("View run ... at"),
    and puts it in its errors, in every step's output.
    """
    uri = environment.get("MLFLOW_TRACKING_URI")
    if not uri or "@" not in uri:
        return
    parts = urlsplit(uri)
    if parts.password is None:  # a user name alone (a token?) has no MLflow variable
        return
    environment.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
    environment.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    netloc = parts.netloc.rpartition("@")[2]
    environment["MLFLOW_TRACKING_URI"] = urlunsplit(parts._replace(netloc=netloc))


def load_settings() -> Settings:
    """Read the settings from the environment (credentials in a URI moved out of it first)."""
    move_uri_credentials(os.environ)
    return Settings()
