"""`mlrig-stage [STAGE]`: a step image's entrypoint, one stage as a container or a pod runs it.

A step image's `ENTRYPOINT` is `tini -- mlrig-stage`. A ClearML step's pod passes nothing, and
its environment names the stage (`MLRIG_STAGE`, `MLRIG_INPUT_KEY`). The containers executor
starts one container per step image for a run, `mlrig-stage --serve SOCKET`: a step server
(`mlrig.executors.warm`) that imports DVC and the step's libraries once; each stage is then
`mlrig-stage STAGE [--force]` run in that container (`podman exec`) with `MLRIG_WARM_SOCKET`
set, which hands itself to the server and runs as a forked child of it, in its own workspace.
`mlrig stage` is the same command for a user.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlrig.errors import exits_cleanly

STAGE_HELP = (
    "The stage, as dvc.yaml names it: train@knn. In a ClearML step's pod: the step's stage "
    "(MLRIG_STAGE)."
)
FORCE_HELP = "Run it even if DVC finds it unchanged."
SERVE_HELP = (
    "Serve the stages of a containers run at this UNIX socket instead: import DVC and the "
    "step's libraries once, then run each `mlrig-stage STAGE` handed over (MLRIG_WARM_SOCKET) "
    "in a forked child."
)


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
        run_stage(settings, name, force=force, on_phase=say_phase, timeline=timeline)
    timeline.save(settings.root / WORKSPACE_TIMELINE)


def say_phase(text: str) -> None:
    """Print what the stage does now, and let its heartbeat name it (`mlrig.progress`)."""
    from mlrig import progress

    typer.echo(text)
    progress.phase(text)


def serve_stages(socket_path: Path) -> None:
    """Be the step server of a containers run: stages (and their steps' commands) handed over
    at `socket_path` run in forked children of this process, which imported their libraries."""
    from mlrig.executors.warm import PRELOAD, STAGE_PRELOAD, serve

    serve(socket_path, (*STAGE_PRELOAD, *PRELOAD))


@exits_cleanly
def stage_entrypoint(
    name: Annotated[str | None, typer.Argument(help=STAGE_HELP)] = None,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
    serve: Annotated[Path | None, typer.Option(help=SERVE_HELP, metavar="SOCKET")] = None,
) -> None:
    """Run one stage as a step container does: pull its inputs, run it, push its outputs.

    Settings come from the environment (see `mlrig stage --help`)."""
    if serve is not None:
        serve_stages(serve)
    else:
        run_stage_here(name, force)


def app() -> None:
    """Run `mlrig-stage` in this process (what the step server's child runs)."""
    typer.run(stage_entrypoint)


def main() -> None:
    """The `mlrig-stage` console script: handed to its container's step server when
    MLRIG_WARM_SOCKET names one that answers, else run here."""
    from mlrig.executors.warm import SOCKET_VARIABLE, run_in_server

    # the usage the summary shows is the step's own (its command writes it), not DVC's pull,
    # run and push around it
    socket_path = os.environ.get(SOCKET_VARIABLE)
    code = run_in_server(socket_path, "mlrig.entrypoints.stage", keep_usage=False)
    if code is not None:
        sys.exit(code)
    app()


if __name__ == "__main__":
    main()
