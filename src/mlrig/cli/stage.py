"""`mlrig stage`: one stage, as a container or a pod runs it (`mlrig-stage` is the same, there)."""

from __future__ import annotations

from typing import Annotated

import typer

from mlrig.cli.app import app
from mlrig.entrypoints.stage import FORCE_HELP, STAGE_HELP, run_stage_here
from mlrig.errors import exits_cleanly


@app.command("stage")
@exits_cleanly
def stage_command(
    name: Annotated[str | None, typer.Argument(help=STAGE_HELP)] = None,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Run one stage as a step container does: pull its inputs, run it, push its outputs.

    Settings come from the environment: MLFLOW_TRACKING_URI (and its credentials),
    MLRIG_DVC_REMOTE_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL for S3.
    A ClearML pipeline step's pod (MLRIG_STAGE and MLRIG_INPUT_KEY set) first fetches its
    workspace and the results of the stages before it from the DVC remote, and reports its
    status to its ClearML task (CLEARML_TASK_ID).
    """
    run_stage_here(name, force)
