"""`mlrig report` and `mlrig compare`: the experiments side by side."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
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
    pass


@app.command()
@exits_cleanly
def report(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report paths as JSON.")
    ] = False,
) -> None:
    """Bring the report up to date (dvc repro report) and print where it is."""
    from mlrig.dvc.commands import run_dvc
    from mlrig.run import REPORT_DIR, exclusive_run
    from mlrig.settings import load_settings

    settings = load_settings()
    with exclusive_run(settings, "mlrig report"), console.status("updating the report"):
        run_dvc(
            ["repro", "report"],
            settings.root,
            dict(os.environ),
            settings.state_dir / "logs" / "report.log",
            lambda stage: None,
        )
    paths = {kind: str(settings.root / REPORT_DIR / f"report.{kind}") for kind in ("md", "html")}
    typer.echo(json.dumps(paths) if as_json else f"Report: {paths['html']}\n        {paths['md']}")


@app.command()
@exits_cleanly
def compare(
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    params_file: Annotated[
        Path, typer.Option("--params", help="params.yaml to read experiments from.")
    ] = Path("params.yaml"),
) -> None:
    """Print the experiment table: params, held-out metrics, fit time, MLflow run."""
    from mlrig.experiments.metrics import LOWER_IS_BETTER
    from mlrig.experiments.params import load_section, section_schema
    from mlrig.experiments.results import load_results, read_champion
    from mlrig.settings import load_settings

    root = load_settings().root
    # the train step's section, by its schema in steps/train/params.py: one stage per experiment
    train = load_section(root / params_file, "train", section_schema(root, "train"))
    names = list(train.experiments)
    results = load_results(root / "outputs/train", root / "outputs/evaluate", names)
    champion = read_champion(root / "outputs/register")
    if as_json:
        rows = [
            {
                "experiment": result.name,
                "family": result.record.family,
                "params": result.record.params,
                "metrics": result.metrics,
                "fit_seconds": result.record.fit_seconds,
                "mlflow_run_id": result.record.mlflow_run_id,
                "clearml_task_id": result.record.clearml_task_id,
                "champion": bool(champion and champion.experiment == result.name),
            }
            for result in results
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    metric_names = list(results[0].metrics)
    table = Table(title="experiments (held-out test set)")
    for column in ("experiment", "family", "params"):
        table.add_column(column)
    for metric in metric_names:
        table.add_column(f"{metric} {'↓' if metric in LOWER_IS_BETTER else '↑'}", justify="right")
    table.add_column("fit (s)", justify="right")
    table.add_column("MLflow run")
    for result in results:
        crown = " 🏆" if champion and champion.experiment == result.name else ""
        params_text = ", ".join(
            f"{k}={v}" for k, v in result.record.params.items() if v is not None
        )
        table.add_row(
            result.name + crown,
            result.record.family,
            params_text or "defaults",
            *(f"{result.metrics[m]:.4f}" for m in metric_names),
            f"{result.record.fit_seconds:.3f}",
            result.record.mlflow_run_id[:12],
        )
    # a pipe gets the whole table rather than columns cut to 80 characters
    Console(width=None if sys.stdout.isatty() else 240).print(table)
