"""`mlrig-stage [STAGE]`: a step image's entrypoint, one stage as a container or a pod runs it.

A step image's `ENTRYPOINT` is `tini -- mlrig-stage`. The containers executor passes the stage
(and `--force`); a ClearML step's pod passes nothing, and its environment names the stage
(`MLRIG_STAGE`, `MLRIG_INPUT_KEY`). `mlrig stage` is the same command for a user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mlrig.errors import exits_cleanly

STAGE_HELP = (
    "The stage, as dvc.yaml names it: train@knn. In a ClearML step's pod: the step's stage "
    "(MLRIG_STAGE)."
)
FORCE_HELP = "Run it even if DVC finds it unchanged."


def run_stage_here(name: str | None, force: bool) -> None:
    """Run one stage in this workspace: a ClearML step's own stage when the environment names
    one, else the stage `name` (pull its inputs, run it, push its outputs).

    Raises:
        ConfigError: a required setting is missing, or no stage is named.
    """
    from mlrig.errors import ConfigError
    from mlrig.executors.clearml.pod import run_step_task, step_of_pod
    from mlrig.executors.timeline import WORKSPACE_TIMELINE, Timeline, process_started
    from mlrig.executors.workspace import require_settings, run_stage
    from mlrig.run import exclusive_run
    from mlrig.settings import load_settings

    require_settings()  # before anything else, so a bare container says what it lacks
    step = step_of_pod(os.environ)
    if step is not None and name in (None, step[0]) and not force:
        stage, input_key = step
        run_step_task(stage, input_key, Path.cwd(), on_phase=typer.echo)
        return
    if name is None:
        raise ConfigError("Name the stage to run, e.g. mlrig stage train@knn (dvc.yaml has them).")
    timeline = Timeline()
    timeline.mark("process start", at=process_started())
    timeline.mark("imports")
    settings = load_settings()
    with exclusive_run(settings, "mlrig stage"):
        run_stage(settings, name, force=force, on_phase=typer.echo, timeline=timeline)
    timeline.save(settings.root / WORKSPACE_TIMELINE)


@exits_cleanly
def stage_entrypoint(
    name: Annotated[str | None, typer.Argument(help=STAGE_HELP)] = None,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Run one stage as a step container does: pull its inputs, run it, push its outputs.

    Settings come from the environment (see `mlrig stage --help`)."""
    run_stage_here(name, force)


def main() -> None:
    """The `mlrig-stage` console script."""
    typer.run(stage_entrypoint)


if __name__ == "__main__":
    main()
