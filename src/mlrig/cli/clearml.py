"""`mlrig clearml` and the submission of `mlrig run --executor clearml`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlrig.cli.app import (
    DigestsOnlyOption,
    ImageDigestsOption,
    WaitOption,
    clearml_app,
    console,
)
from mlrig.errors import exits_cleanly
from mlrig.text import counted

if TYPE_CHECKING:
    from mlrig.executors.clearml.compile import PipelineDescription
    from mlrig.experiments.params import Params
    from mlrig.settings import Settings


def submit_to_clearml(
    settings: Settings,
    queue: str | None,
    images: list[Path],
    wait: bool,
    as_json: bool,
    digests_only: bool = False,
) -> None:
    """Compile dvc.yaml and enqueue it as a ClearML pipeline under an MLflow parent run; print
    its id (and follow it).

    It holds the checkout as `mlrig run` does (it reads the checkout's DVC state, and with
    --wait writes dvc.lock and the outputs), and submits nothing the params check or a step's
    preflight refuses, nor without the MLflow server the steps' pods log to.
    """
    from mlrig.executors.clearml.submit import require_mlflow_server
    from mlrig.experiments.preflight import checked_params
    from mlrig.run import held_checkout
    from mlrig.tracking.clearml_server import SUBMISSION, require_server

    require_server(settings, SUBMISSION)  # before the params and images: say what is missing
    with held_checkout(settings, "mlrig clearml pipeline"):
        with console.status("checking params and data"):
            params, _ = checked_params(settings.root, [])
        with console.status("checking the MLflow server"):
            require_mlflow_server(settings)
        submit_holding_the_checkout(settings, params, queue, images, wait, as_json, digests_only)


def submit_holding_the_checkout(
    settings: Settings,
    params: Params,
    queue: str | None,
    images: list[Path],
    wait: bool,
    as_json: bool,
    digests_only: bool = False,
) -> None:
    """submit_to_clearml's work, once it holds the run lock."""
    from mlrig.executors.clearml.submit import (
        follow_submission,
        prepare_submission,
        submit_pipeline,
        take_results,
    )

    description = compiled_pipeline(settings, queue, images, digests_only)
    with console.status("uploading the workspace, reading the stages' records on the remote"):
        description = prepare_submission(settings, description)
    submitted = [step.name for step in description.submitted()]
    recorded = [step.name for step in description.steps if step.recorded]
    pipeline_id, submission = None, None
    message = "Every stage's result for these inputs is on the DVC remote: nothing submitted."
    if submitted:
        with console.status(
            f"submitting to ClearML (controller on {settings.clearml_services_queue})"
        ):
            pipeline_id, submission = submit_pipeline(settings, description, params, wait=wait)
        message = (
            f"ClearML pipeline {pipeline_id} submitted: {counted(len(submitted), 'step')}, "
            f"{counted(len(recorded), 'stage')} already on the remote; its MLflow parent run "
            f"is {submission.parent_run_id}."
        )
    summary = {
        "pipeline_id": pipeline_id,
        "parent_run_id": submission.parent_run_id if submission else None,
        "submitted": submitted,
        "recorded": recorded,
    }
    typer.echo(json.dumps(summary) if as_json else message)
    if not wait:
        return
    if pipeline_id and submission:
        follow_submission(settings, pipeline_id, submission)
    with console.status("merging the steps' results into dvc.lock, pulling their outputs"):
        take_results(settings, description.steps)
    console.print("dvc.lock and the outputs are as the cluster left them: commit dvc.lock.")


def compiled_pipeline(
    settings: Settings, queue: str | None, images: list[Path], digests_only: bool = False
) -> PipelineDescription:
    """dvc.yaml compiled, the steps pushed by a build job in their images by digest (with
    `digests_only`, every step: else it is refused)."""
    from mlrig.executors.clearml.compile import describe_pipeline
    from mlrig.images.registry import read_digests

    pushed = read_digests(images)
    with console.status("compiling dvc.yaml into a ClearML pipeline"):
        description = describe_pipeline(
            settings, default_queue=queue, pushed_images=pushed, digests_only=digests_only
        )
    say_unbuilt_images(settings, description)
    return description


def say_unbuilt_images(settings: Settings, description: PipelineDescription) -> None:
    """Name, on stderr, the steps whose image is neither built here nor pushed by digest."""
    from mlrig.images.build import unbuilt_images
    from mlrig.images.engine import engine_if_any

    unbuilt = unbuilt_images(settings, {step.step: step.image for step in description.steps})
    if not unbuilt:
        return
    where = "" if engine_if_any(settings) else " (no container engine here)"
    typer.echo(
        f"Not built on this machine{where}: the image(s) of {', '.join(unbuilt)}. `make images` "
        "builds them where podman or docker runs; CI's build jobs push them, and --images "
        "passes their digests.",
        err=True,
    )


@clearml_app.command("pipeline")
@exits_cleanly
def clearml_pipeline(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the compiled pipeline instead of submitting it to ClearML."
        ),
    ] = False,
    queue: Annotated[
        str | None,
        typer.Option(help="The queue of the steps (default MLRIG_CLEARML_QUEUE)."),
    ] = None,
    images: ImageDigestsOption = None,
    digests_only: DigestsOnlyOption = False,
    wait: WaitOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """dvc.yaml as a ClearML pipeline: each stage a step in its image, cached by its data."""
    from mlrig.settings import load_settings

    settings = load_settings()
    if not dry_run:
        submit_to_clearml(settings, queue, images or [], wait, as_json, digests_only)
        return
    description = compiled_pipeline(settings, queue, images or [], digests_only)
    if as_json:
        typer.echo(description.model_dump_json(indent=2))
        return
    table = Table(
        title=f"ClearML pipeline {description.name} {description.version}",
        caption=f"the controller runs on queue {settings.clearml_services_queue} and asks for "
        "no resources",
    )
    columns = ("step", "parents", "image", "queue", "resources", "deps hashed", "params")
    for column in (*columns, "input key"):
        table.add_column(column)
    for step in description.steps:
        hashed = sum(value is not None for value in step.deps.values())
        table.add_row(
            step.name,
            ", ".join(step.parents) or "-",
            step.image,
            step.queue,
            step.resources.describe() if step.resources else "-",
            f"{hashed}/{len(step.deps)}",
            ", ".join(step.params) or "-",
            step.input_key[:12],
        )
    Console(width=None if sys.stdout.isatty() else 240).print(table)


@clearml_app.command("list")
@exits_cleanly
def clearml_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the sessions as JSON.")] = False,
) -> None:
    """List the offline ClearML sessions recorded in this project."""
    from mlrig.settings import load_settings
    from mlrig.tracking.clearml_sessions import list_sessions

    sessions = list_sessions(load_settings())
    if as_json:
        typer.echo(json.dumps([session.model_dump() for session in sessions], indent=2))
        return
    for session in sessions:
        state = f"imported as {session.imported_as}" if session.imported_as else "not imported"
        typer.echo(f"{session.offline_id}  {state}")
    typer.echo(counted(len(sessions), "offline session"))


@clearml_app.command("prune")
@exits_cleanly
def clearml_prune(
    keep: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="How many of the newest to keep (default MLRIG_CLEARML_KEEP_SESSIONS; 0 keeps "
            "every one).",
        ),
    ] = None,
) -> None:
    """Delete the oldest offline ClearML sessions (mlrig run does so past the limit)."""
    from mlrig.settings import load_settings
    from mlrig.tracking.clearml_sessions import prune_sessions

    pruned = prune_sessions(load_settings(), keep)
    typer.echo(pruned.message() or f"Nothing to drop: {counted(pruned.kept, 'offline session')}.")


@clearml_app.command("import")
@exits_cleanly
def clearml_import() -> None:
    """Upload the offline sessions to the configured ClearML server (CLEARML_API_*)."""
    from mlrig.settings import load_settings
    from mlrig.tracking.clearml_sessions import import_sessions

    imported = import_sessions(load_settings())
    for session in imported:
        typer.echo(f"{session.offline_id} -> {session.imported_as}")
    typer.echo(f"{counted(len(imported), 'session')} imported")
