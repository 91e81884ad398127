"""`mlrig stage`: one stage, as a container or a pod runs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.cli.app import (
    app,
    console,
)
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    pass


@app.command("stage")
@exits_cleanly
def stage_command(
    name: Annotated[
        str | None,
        typer.Argument(
            help="The stage, as dvc.yaml names it: train@knn. In a ClearML step's pod: the "
            "step's stage (MLRIG_STAGE)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Run it even if DVC finds it unchanged.")] = False,
) -> None:
    """Run one stage as a step container does: pull its inputs, run it, push its outputs.

    Settings come from the environment: MLFLOW_TRACKING_URI (and its credentials),
    MLRIG_DVC_REMOTE_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL for S3.
    A ClearML pipeline step's pod (MLRIG_STAGE and MLRIG_INPUT_KEY set) first fetches its
    workspace and the results of the stages before it from the DVC remote, and reports its
    status to its ClearML task (CLEARML_TASK_ID).
    """
    from mlrig.errors import ConfigError
    from mlrig.pipeline import exclusive_run
    from mlrig.settings import load_settings
    from mlrig.stage import require_settings, run_stage, run_step_task, step_of_pod

    require_settings()  # before anything else, so a bare container says what it lacks
    step = step_of_pod(os.environ)
    if step is not None and name in (None, step[0]) and not force:
        stage, input_key = step
        run_step_task(stage, input_key, Path.cwd(), on_phase=lambda phase: console.print(phase))
        return
    if name is None:
        raise ConfigError("Name the stage to run, e.g. mlrig stage train@knn (dvc.yaml has them).")
    settings = load_settings()
    with exclusive_run(settings, "mlrig stage"):
        run_stage(settings, name, force=force, on_phase=lambda phase: console.print(phase))
