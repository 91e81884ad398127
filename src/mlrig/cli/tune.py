"""`mlrig tune` and `mlrig tune-trial`: a search of an experiment's train params."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlrig.cli.app import (
    app,
    console,
)
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    from mlrig.settings import Settings
    from mlrig.tune import TuneSummary


class TuneExecutor(StrEnum):
    """Where the trials of `mlrig tune` run."""

    local = "local"
    clearml = "clearml"


@app.command()
@exits_cleanly
def tune(
    experiment: Annotated[
        str, typer.Argument(help="The experiment to tune: a key of train.experiments.")
    ],
    trials: Annotated[
        int | None, typer.Option(help="How many trials (default: tune.trials in params.yaml).")
    ] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Write the best params into train.experiments.<EXPERIMENT>.params of "
            "params.yaml (comments kept); mlrig run then trains with them.",
        ),
    ] = False,
    executor: Annotated[
        TuneExecutor,
        typer.Option(
            help="local: Optuna here, each trial an MLflow child run. clearml: ClearML's "
            "HyperParameterOptimizer (Optuna), each trial a task on --queue (needs a server)."
        ),
    ] = TuneExecutor.local,
    queue: Annotated[
        str | None,
        typer.Option(
            help="With --executor clearml: the queue of the trials (default MLRIG_CLEARML_QUEUE)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Search an experiment's train params (tune: in params.yaml), scored by cross-validation
    on the train split with compare.metric; the test set stays held out."""
    from mlrig.errors import ConfigError
    from mlrig.settings import load_settings
    from mlrig.tune import tune_on_clearml

    settings = load_settings()
    if executor is TuneExecutor.clearml:
        summary = tune_on_clearml(
            settings, experiment, trials, queue or settings.clearml_queue, apply=apply
        )
    else:
        if queue is not None:
            raise ConfigError("--queue is for ClearML trials: use it with --executor clearml.")
        summary = tune_with_progress(settings, experiment, trials, apply, quiet=as_json)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    print_tune_summary(summary)


def tune_with_progress(
    settings: Settings, experiment: str, trials: int | None, apply: bool, quiet: bool
) -> TuneSummary:
    """`mlrig.tune.tune` here, with a bar of the trials (and the stage it brings up to date)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mlrig.experiments.params import TuneParams, load_section
    from mlrig.tune import tune

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        planned = trials or load_section(settings.root / "params.yaml", "tune", TuneParams).trials
        current = progress.add_task(f"tune {experiment}", total=planned)
        return tune(
            settings,
            experiment,
            trials,
            apply=apply,
            on_stage=lambda stage: progress.update(current, description=f"stage {stage}"),
            on_trial=lambda trial: progress.update(
                current, advance=1, description=f"tune {experiment}: trial {trial.number}"
            ),
        )


def print_tune_summary(summary: TuneSummary) -> None:
    """The trials as a table, then the best params and what was done with them."""
    arrow = "↓" if summary.direction == "minimize" else "↑"
    table = Table(
        title=f"tune {summary.experiment} ({summary.family}): {summary.cv_folds}-fold CV on "
        f"the train split ({summary.train_rows} rows)"
    )
    table.add_column("trial", justify="right")
    for name in summary.searched:
        table.add_column(name, justify="right")
    table.add_column(f"cv {summary.metric} {arrow}", justify="right")
    table.add_column("±", justify="right")
    table.add_column("MLflow run" if summary.mlflow_parent_run_id else "ClearML task")
    for trial in summary.trials:
        best = trial.number == summary.best.number
        table.add_row(
            f"{trial.number}{' ★' if best else ''}",
            *(_shown(trial.params[name]) for name in summary.searched),
            f"{trial.score:.4f}",
            f"{trial.score_std:.4f}",
            (trial.mlflow_run_id or trial.clearml_task_id or "")[:12],
            style="bold green" if best else None,
        )
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    shown = ", ".join(f"{name}={_shown(summary.best.params[name])}" for name in summary.searched)
    typer.echo(
        f"Best:    trial {summary.best.number}, cv {summary.metric}={summary.best.score:.4f}: "
        f"{shown}"
    )
    if summary.mlflow_parent_run_id:
        typer.echo(
            f"MLflow:  parent run {summary.mlflow_parent_run_id} (tune-{summary.experiment}) "
            f"in experiment {summary.mlflow_experiment}"
        )
    target = f"train.experiments.{summary.experiment}.params"
    if summary.applied:
        typer.echo(f"Applied: {target} in {summary.params_file}; mlrig run trains with them.")
    else:
        typer.echo(f"Not applied: mlrig tune {summary.experiment} --apply writes them to {target}.")


def _shown(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("tune-trial", hidden=True)
@exits_cleanly
def tune_trial(
    experiment: Annotated[str, typer.Argument(help="The experiment of the search.")],
) -> None:
    """One ClearML trial of `mlrig tune --executor clearml` (what an agent runs)."""
    from mlrig.settings import load_settings
    from mlrig.tune import run_trial_task

    score = run_trial_task(load_settings(), experiment)
    typer.echo(f"tune-trial {experiment}: {score:.6f}")
