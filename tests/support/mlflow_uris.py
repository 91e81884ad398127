"""MLflow's process-wide tracking and registry URIs, put back as they were after each test.

`mlflow.set_tracking_uri` (which mlrig's `setup_mlflow` calls, as do tests that open a store)
sets a module global that wins over the MLFLOW_TRACKING_URI variable, and writes that variable
too. A test worker runs many test files in one process, so without this a later test that
names its store by the variable (`monkeypatch.setenv`) would read the earlier test's store:
issue 19, where the serving test compared the container with a model of the same name and
version from a register step test's SQLite registry, and 1 of 143 labels differed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: the modules that hold the globals; untouched (and not imported) while MLflow is not loaded
TRACKING_MODULE = "mlflow.tracking._tracking_service.utils"
REGISTRY_MODULE = "mlflow.tracking._model_registry.utils"
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class MlflowUris:
    """What decides which store MLflow talks to in this process."""

    tracking: str | None
    registry: str | None
    variables: tuple[tuple[str, str | None], ...]


def current_uris() -> MlflowUris:
    """The URIs set in this process (None where unset, or MLflow not imported yet)."""
    tracking, registry = sys.modules.get(TRACKING_MODULE), sys.modules.get(REGISTRY_MODULE)
    return MlflowUris(
        tracking=getattr(tracking, "_tracking_uri", None),
        registry=getattr(registry, "_registry_uri", None),
        variables=tuple((name, os.environ.get(name)) for name in URI_VARIABLES),
    )


def restore_uris(saved: MlflowUris) -> None:
    """Put the URIs back as `saved` found them, through MLflow's own setters (which also reset
    the tracer it keeps per tracking URI)."""
    now = current_uris()
    if now.tracking != saved.tracking or now.registry != saved.registry:
        import mlflow

        if now.tracking != saved.tracking:
            mlflow.set_tracking_uri(saved.tracking)  # type: ignore[arg-type]  # None unsets it
        if now.registry != saved.registry:
            mlflow.set_registry_uri(saved.registry)  # type: ignore[arg-type]
    for name, value in saved.variables:  # the setters wrote (or removed) these: undone here
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def mlflow_uris_kept() -> Iterator[None]:
    """Whatever the block sets as MLflow's URIs is undone when it ends."""
    saved = current_uris()
    try:
        yield
    finally:
        restore_uris(saved)
