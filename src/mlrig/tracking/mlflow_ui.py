"""Where a user sees the MLflow runs: the server's own pages, or the command that opens the UI
on a local store (which has no server: a link to one would lead nowhere)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from mlrig.errors import redact
from mlrig.settings import Settings

SERVER_SCHEMES = ("http://", "https://")


def mlflow_server(settings: Settings) -> str | None:
    """The MLflow server's address (credentials hidden), or None for a store without one."""
    uri = settings.tracking_uri
    return redact(uri).rstrip("/") if uri.startswith(SERVER_SCHEMES) else None


def mlflow_ui_command(settings: Settings) -> str:
    """The command that opens the MLflow UI on the runs: the server's address, or `mlflow ui`
    on a store without a server (the project's own, or one MLFLOW_TRACKING_URI names, as a
    pipeline's stages get it), from any folder."""
    if settings.tracking_uri.startswith(SERVER_SCHEMES):
        return f"open {redact(settings.tracking_uri)}"
    return f"cd {shlex.quote(str(settings.root))} && {local_ui_command(settings)}"


def project_mlflow_ui_command(settings: Settings) -> str:
    """`mlflow_ui_command` as typed in the project folder, with no path of this checkout or
    its environment in it (`make ui` for the project's own store), so the report that shows it
    reads the same in every clone."""
    if settings.tracking_uri.startswith(SERVER_SCHEMES):
        return f"open {redact(settings.tracking_uri)}"
    if settings.tracking_uri == f"sqlite:///{settings.state_dir / 'mlflow.db'}":
        return "make ui"  # the project's own store, which a stage gets by MLFLOW_TRACKING_URI
    return local_ui_command(settings)


def local_ui_command(settings: Settings) -> str:
    """`mlflow ui` on the configured store, as typed in the project folder."""
    store = redact(settings.tracking_uri).replace(str(settings.root) + "/", "")
    # the mlflow of this environment, as it can be typed: no uv, no activated venv needed
    mlflow = Path(sys.executable).parent / "mlflow"
    if mlflow.is_relative_to(settings.root):
        mlflow = mlflow.relative_to(settings.root)
    return shlex.join([str(mlflow), "ui", "--backend-store-uri", store, "--port", "5000"])
