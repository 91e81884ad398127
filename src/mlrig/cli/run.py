"""`mlrig run`: the pipeline through an executor, with progress and its summary."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.cli.app import (
    DigestsOnlyOption,
    ImageDigestsOption,
    WaitOption,
    app,
    console,
    use_stack,
)
from mlrig.cli.clearml import submit_to_clearml
from mlrig.errors import exits_cleanly
from mlrig.executors.registry import EXECUTORS, executor_entry
from mlrig.text import counted

if TYPE_CHECKING:
    from mlrig.experiments.results import Champion
    from mlrig.progress import Heartbeat
    from mlrig.run import RunSummary
    from mlrig.settings import Settings


#: where the stages of `mlrig run` run: the executors by name
Executor = StrEnum("Executor", {name: name for name in EXECUTORS})  # type: ignore[misc]


@app.command()
@exits_cleanly
def run(
    set_param: Annotated[
        list[str] | None,
        typer.Option(
            "--set-param",
            "-S",
            help="Override a param, e.g. -S split.seed=7 (saved to params.yaml).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run every stage, even unchanged ones.")] = False,
    push: Annotated[
        bool, typer.Option(help="Push outputs and run-cache to the DVC remote.")
    ] = True,
    stack: Annotated[
        str | None,
        typer.Option(help="Run against a stack: `local` loads the settings of `mlrig stack up`."),
    ] = None,
    executor: Annotated[
        Executor,
        typer.Option(help=" ".join(f"{entry.name}: {entry.help}." for entry in EXECUTORS.values())),
    ] = Executor.local,
    queue: Annotated[
        str | None,
        typer.Option(
            help="With --executor clearml: the queue of the steps (default MLRIG_CLEARML_QUEUE)."
        ),
    ] = None,
    images: ImageDigestsOption = None,
    digests_only: DigestsOnlyOption = False,
    wait: WaitOption = False,
    jobs: Annotated[int, typer.Option(min=1, help="How many independent stages run at once.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the pipeline (dvc repro) under one MLflow parent run, then push to the DVC remote."""
    from mlrig.settings import load_settings
    from mlrig.tracking.clearml_sessions import prune_sessions

    if stack is not None:
        use_stack(stack)
    settings = load_settings()
    refuse_options_of_another_executor(
        executor, bool(set_param), queue, bool(images) or digests_only, wait
    )
    if executor_entry(executor.value).submits:
        submit_to_clearml(settings, queue, images or [], wait, as_json, digests_only)
        return
    summary = run_with_progress(settings, set_param or [], force, push, executor, jobs, as_json)
    pruned = prune_sessions(settings).message()
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        typer.echo("\n".join(run_summary_lines(summary)))
    if pruned:
        console.print(pruned, soft_wrap=True, markup=False, highlight=False)


def refuse_options_of_another_executor(
    executor: Executor, overrides: bool, queue: str | None, images: bool, wait: bool
) -> None:
    """Refuse what the chosen executor cannot take.

    Raises:
        ConfigError: -S for a ClearML submission, or a ClearML option for another executor.
    """
    from mlrig.errors import ConfigError

    submits = executor_entry(executor.value).submits
    if submits and overrides:
        raise ConfigError(
            f"--executor {executor.value} runs the committed params.yaml in the cluster, so -S "
            "cannot reach it: edit params.yaml, commit it, then submit without -S."
        )
    if not submits and (queue is not None or images or wait):
        raise ConfigError(
            "--queue, --images, --digests-only and --wait are for a ClearML submission: use them "
            "with --executor clearml."
        )


def run_with_progress(
    settings: Settings,
    overrides: list[str],
    force: bool,
    push: bool,
    executor: Executor,
    jobs: int,
    quiet: bool,
) -> RunSummary:
    """`run_pipeline` with a spinner naming the stage or phase; unless quiet, a line per stage
    started, and about every 10 s a line per stage running that long saying what it does."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mlrig.run import run_pipeline

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        current = progress.add_task("starting", total=None)

        def on_stage(stage: str) -> None:
            progress.update(current, description=f"stage {stage}")
            if not quiet:
                console.print(f"[green]▶[/] {stage}")

        def on_progress(stage: str, seconds: float, beat: Heartbeat) -> None:
            if not quiet:
                console.print(
                    progress_line(stage, seconds, beat),
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )

        return run_pipeline(
            settings,
            overrides,
            force=force,
            push=push,
            executor=executor.value,
            jobs=jobs,
            on_stage=on_stage,
            on_phase=lambda phase: progress.update(current, description=phase),
            on_progress=on_progress,
        )


def progress_line(stage: str, seconds: float, beat: Heartbeat) -> str:
    """What a stage running for a while is doing: `… train@knn 20 s: fitting knn on 20000 rows
    (19 s CPU, 812 MB)` (its time since it started; its step's CPU and peak RSS so far)."""
    cost = f"{beat.cpu_seconds} s CPU, {beat.peak_rss_mb} MB"
    return f"… {stage} {seconds:.0f} s: {beat.phase} ({cost})"


def stage_lines(summary: RunSummary) -> list[str]:
    """A line per stage that ran: its wall time, and its process's CPU time and peak RSS."""
    lines = []
    for number, (stage, seconds) in enumerate(summary.stage_seconds.items()):
        usage = summary.stage_usage.get(stage)
        cost = f", {usage.cpu_seconds:.1f}s CPU, peak {usage.peak_rss_mb:.0f} MB" if usage else ""
        lines.append(f"{'Stages:' if number == 0 else '':<11}{stage} {seconds:.1f}s{cost}")
    return lines


def run_summary_lines(summary: RunSummary) -> list[str]:
    """The closing message of `mlrig run`: what ran, where the report and the runs are."""
    lines = [f"Corrupted: {line}" for line in summary.repaired]
    if summary.up_to_date:
        lines.append("Pipeline up to date: no stage re-ran.")
    else:
        ran = counted(len(summary.stages_run), "stage")
        lines.append(f"Pipeline run {summary.pipeline_run_id}: {ran} ran.")
        lines += stage_lines(summary)
    if summary.task:
        why = f": {summary.task_reason}" if summary.task_reason else ""
        lines.append(f"Task:      {summary.task}{why}")
    lines += [f"Checked:   {note}" for note in summary.deferred_checks]
    lines.append(f"Report:    {summary.report}")
    lines.append(
        f"MLflow:    {counted(summary.runs_recorded, 'experiment run')} recorded by this "
        "pipeline run, "
        f"{counted(summary.runs_in_experiment, 'run')} in the experiment"
    )
    if summary.champion:
        lines.extend(champion_lines(summary.champion))
    lines.append(f"MLflow UI: {summary.mlflow_ui}")
    return lines


def champion_lines(champion: Champion) -> list[str]:
    """Which model is the champion, why (by how much, with what interval), and the runner-up."""
    best = f"{champion.experiment} ({champion.metric}={champion.value:.4f})"
    model = f"{champion.registered_model} v{champion.version}"
    if champion.is_champion:
        lines = [f"Champion:  {best}, {model} @champion; {champion.reason}"]
    elif champion.version:
        lines = [f"Champion:  {model} stays @champion; this run's best, {best}: {champion.reason}"]
    else:
        lines = [f"Champion:  {best}, not registered; {champion.reason}"]
    if runner_up := champion.versus_runner_up:
        lines.append(
            f"Runner-up: {runner_up.versus} ({runner_up.metric}={runner_up.versus_value:.4f}); "
            f"{champion.experiment} minus it: {runner_up.difference_text()}"
        )
    return lines
