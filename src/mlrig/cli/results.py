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
    from mlrig.experiments.results import Champion, ExperimentResult


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
    from mlrig.experiments.params import load_section, section_schema
    from mlrig.experiments.results import load_results, read_champion
    from mlrig.settings import load_settings
    from mlrig.tracking.train_runs import run_finder

    settings = load_settings()
    root = settings.root
    # the train step's section, by its schema in steps/train/params.py: one stage per experiment
    train = load_section(root / params_file, "train", section_schema(root, "train"))
    names = list(train.experiments)
    finder = run_finder(settings)  # fit time and run ids are MLflow's, found by the model
    results = load_results(root / "outputs/train", root / "outputs/evaluate", names, finder)
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
                "champion": is_champion(champion, result.name),
            }
            for result in results
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    header, rows = experiment_rows(results, champion)
    # a pipe gets the whole table rather than columns cut to 80 characters, unless COLUMNS says
    # how wide its reader is
    wide = sys.stdout.isatty() or os.environ.get("COLUMNS")
    out = Console(width=None if wide else 240)
    for table in fitting_tables("experiments (held-out test set)", header, rows, out.width):
        out.print(table)


def is_champion(champion: Champion | None, experiment: str) -> bool:
    """True when the registered champion is this experiment's model of this run."""
    return bool(champion and champion.is_champion and champion.experiment == experiment)


def experiment_rows(
    results: list[ExperimentResult], champion: Champion | None
) -> tuple[list[str], list[list[str]]]:
    """The experiment table as text: its header and a row per experiment (the champion's
    name crowned)."""
    from mlrig.experiments.metrics import LOWER_IS_BETTER

    metric_names = list(results[0].metrics)
    header = [
        "experiment",
        "family",
        "params",
        *(f"{metric} {'↓' if metric in LOWER_IS_BETTER else '↑'}" for metric in metric_names),
        "fit (s)",
        "MLflow run",
    ]
    rows = []
    for result in results:
        crown = " 🏆" if is_champion(champion, result.name) else ""
        params = result.record.params.items()
        params_text = ", ".join(f"{k}={v}" for k, v in params if v is not None)
        rows.append(
            [
                result.name + crown,
                result.record.family,
                params_text or "defaults",
                *(f"{result.metrics[m]:.4f}" for m in metric_names),
                f"{result.record.fit_seconds:.3f}",
                result.record.mlflow_run_id[:12],
            ]
        )
    return header, rows


#: a column's width beyond its text: a space either side and its left border
COLUMN_EDGES = 3
#: text columns; the others (numbers) are right-aligned
TEXT_COLUMNS = frozenset({"experiment", "family", "params", "MLflow run"})
#: text columns that may wrap between words to fit beside the others
WRAPPED_COLUMNS = frozenset({"params"})


def fitting_tables(title: str, header: list[str], rows: list[list[str]], width: int) -> list[Table]:
    """The table as one or more tables no wider than `width`, each led by the first column
    (the experiment), like a wide frame printed in parts: no name or value is cut short.

    The params wrap between words to fit beside the others. A column wider than `width` on its
    own gets a table of its own, folded onto more lines; so does a name wider than half of it.
    """
    from rich.cells import cell_len

    def needed(index: int) -> int:
        texts = [header[index], *(row[index] for row in rows)]
        if header[index] in WRAPPED_COLUMNS:  # its longest word
            texts = [word for text in texts for word in text.split()]
        return max(cell_len(text) for text in texts) + COLUMN_EDGES

    lead = min(needed(0), width // 2) + 1  # the first column, and the table's right border
    groups: list[list[int]] = [[]]
    used = lead
    for index in range(1, len(header)):
        if groups[-1] and used + needed(index) > width:
            groups.append([])
            used = lead
        groups[-1].append(index)
        used += needed(index)
    tables = []
    for number, group in enumerate(groups):
        table = Table(title=title if number == 0 else f"{title}, continued")
        for index in [0, *group]:
            # fold inside a word if need be: a name is never cut to "linea…"
            justify = "left" if header[index] in TEXT_COLUMNS else "right"
            table.add_column(header[index], justify=justify, overflow="fold")
        for row in rows:
            table.add_row(*(row[index] for index in [0, *group]))
        tables.append(table)
    return tables
