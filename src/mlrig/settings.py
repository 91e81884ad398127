"""Infrastructure settings, read from the environment (12-factor) into one object.

Experiment settings live in params.yaml (see `mlrig.experiments.params`); this module only says
where things run and where they are stored. Nothing is read at import time: call `load_settings()`.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated
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

    # a field's docstring is its description (the settings reference is made from them)
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    project_dir: Annotated[Path | None, Field(alias="MLRIG_PROJECT_DIR")] = None
    """The project folder; unset: the nearest folder at or above the working directory that holds a
    dvc.yaml."""
    mlflow_tracking_uri: Annotated[str | None, Field(alias="MLFLOW_TRACKING_URI")] = None
    """MLflow store or server; unset: `sqlite:///<project>/.mlrig/mlflow.db`."""
    mlflow_experiment: Annotated[str, Field(alias="MLRIG_EXPERIMENT")] = "mlrig"
    """MLflow experiment name."""
    clearml_api_host: Annotated[str | None, Field(alias="CLEARML_API_HOST")] = None
    """ClearML API server; unset: offline sessions."""
    clearml_web_host: Annotated[str | None, Field(alias="CLEARML_WEB_HOST")] = None
    """ClearML web UI, for links to tasks in the summary and the report."""
    clearml_access_key: Annotated[SecretStr | None, Field(alias="CLEARML_API_ACCESS_KEY")] = None
    """ClearML access key."""
    clearml_secret_key: Annotated[SecretStr | None, Field(alias="CLEARML_API_SECRET_KEY")] = None
    """ClearML secret key."""
    clearml_offline: Annotated[bool | None, Field(alias="CLEARML_OFFLINE_MODE")] = None
    """Force offline sessions; unset: on when no server is set."""
    clearml_project: Annotated[str, Field(alias="MLRIG_CLEARML_PROJECT")] = "mlrig"
    """ClearML project."""
    clearml_queue: Annotated[str, Field(alias="MLRIG_CLEARML_QUEUE")] = "default"
    """The queue ClearML agents take pipeline steps from, unless a step has its own."""
    clearml_step_queues: dict[str, str] = Field(
        alias="MLRIG_CLEARML_STEP_QUEUES", default_factory=dict
    )
    """A queue per step or stage, as JSON: `{"train": "gpu", "report@x": "cpu"}`."""
    clearml_services_queue: Annotated[str, Field(alias="MLRIG_CLEARML_SERVICES_QUEUE")] = "services"
    """The queue the pipeline controller itself runs on (a services agent)."""
    clearml_queue_resources: dict[str, dict[str, str | int | float]] = Field(
        alias="MLRIG_CLEARML_QUEUE_RESOURCES", default_factory=dict
    )
    """What each queue's pods provide, as JSON: `{"default": {"cpu": "2", "memory": "4Gi"},
    "gpu": {"gpu": 1, "memory": "16Gi"}}` (the chart renders it from agent.queues). A stage whose
    params.yaml `resources` ask for something runs on a queue that provides it."""
    # each stage a run executes records one, and they pile up until `mlrig clearml import`
    clearml_keep_sessions: Annotated[int, Field(alias="MLRIG_CLEARML_KEEP_SESSIONS", ge=0)] = 50
    """Offline ClearML sessions kept in the project (the newest; 0 keeps every one)."""
    dvc_remote: Annotated[str | None, Field(alias="MLRIG_DVC_REMOTE")] = None
    """The DVC remote `mlrig run` pushes to; unset: DVC's default remote (`local`)."""
    dvc_remote_url: Annotated[str | None, Field(alias="MLRIG_DVC_REMOTE_URL")] = None
    """The DVC remote of a stage container or pod (`mlrig stage`), e.g. `s3://mlrig-dvc`."""
    s3_endpoint_url: Annotated[str | None, Field(alias="AWS_ENDPOINT_URL")] = None
    """The S3 endpoint of that remote, when not AWS (MinIO, SeaweedFS)."""
    parent_run_id: Annotated[str | None, Field(alias="MLRIG_PARENT_RUN_ID")] = None
    """Set by `mlrig run` for its stages: the pipeline's MLflow parent run."""
    pipeline_run_id: Annotated[str | None, Field(alias="MLRIG_PIPELINE_RUN_ID")] = None
    """Set by `mlrig run` for its stages: the pipeline run's id."""
    git_commit: Annotated[str | None, Field(alias="MLRIG_GIT_COMMIT")] = None
    """The commit the runs' lineage names; unset: the checkout's HEAD (`-dirty` when tracked files
    other than dvc.lock changed)."""
    image: Annotated[str | None, Field(alias="MLRIG_IMAGE")] = None
    """Set by the containers executor: the step image a stage ran in (the MLflow tag
    `mlrig.image`)."""
    container_engine: Annotated[str | None, Field(alias="MLRIG_CONTAINER_ENGINE")] = None
    """Docker or podman; unset: a docker that answers, else podman."""
    container_runtime: Annotated[str | None, Field(alias="MLRIG_CONTAINER_RUNTIME")] = None
    """Podman's OCI runtime; unset: runc when installed, as crun fails on cgroup v1 kernels."""
    base_image: Annotated[str | None, Field(alias="MLRIG_BASE_IMAGE")] = None
    """What the base image is built FROM; unset: the image `make base-image` made, else the
    digest-pinned default of images/base/Dockerfile."""
    image_repository: Annotated[str, Field(alias="MLRIG_IMAGE_REPOSITORY")] = "localhost/mlrig"
    """The repository the images are tagged in (`<repository>/<step>:<tag>`)."""

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
