"""`mlrig drift`: new data against the champion's training split (Evidently's drift preset)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mlrig.cli.app import app, console
from mlrig.errors import EXIT_FAILED, exits_cleanly

if TYPE_CHECKING:
    from mlrig.drift import DriftResult


@app.command()
@exits_cleanly
def drift(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="The new data: a CSV or Parquet file of the features, or an s3:// URL of one, "
            "or an s3:// prefix of the scoring server's request log (every line under it).",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="The model version: models:/<name>/<version> or models:/<name>@champion, or a "
            "registered model's name (its champion). Default: the champion register chose.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    record: Annotated[
        bool,
        typer.Option(
            help="Log the check to MLflow (a run in <experiment>-drift, tags on the model "
            "version). --no-record only reads MLflow: what a read-only identity may do.",
        ),
    ] = True,
) -> None:
    """Test each column of new data for drift from the champion's training split; exit 1 when
    the share of drifted columns reaches drift.threshold (params.yaml), so a schedule alerts."""
    from mlrig.drift import check_drift
    from mlrig.settings import load_settings
    from mlrig.tracking.registered import champion_uri

    settings = load_settings()
    uri = model if model and model.startswith("models:/") else champion_uri(settings, model)
    with console.status(f"Testing {data} for drift from {uri}'s training split"):
        result = check_drift(settings, data, uri, record)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_result(result)
    if result.drifted:
        raise typer.Exit(EXIT_FAILED)


def print_result(result: DriftResult) -> None:
    table = Table(title=f"{result.data} against the training split of {result.model}")
    for heading in ("column", "test", "score", "threshold", "drifted"):
        table.add_column(heading, justify="right" if heading in ("score", "threshold") else "left")
    for column in sorted(result.columns, key=lambda column: not column.drifted):
        table.add_row(
            column.column,
            column.method,
            f"{column.score:.4g}",
            f"{column.threshold:g}",
            "yes" if column.drifted else "no",
        )
    console.print(table)
    verdict = "DRIFTED" if result.drifted else "no drift"
    drifted = sum(column.drifted for column in result.columns)
    typer.echo(
        f"{verdict}: {drifted} of {len(result.columns)} columns drifted (share "
        f"{result.share:.2f}, drift.threshold {result.threshold:g})\n"
        f"Reference: {result.reference}, {result.reference_rows} rows; new data: {result.rows} "
        f"rows\nReport:    {result.report}"
    )
    if result.mlflow_run_id:
        typer.echo(
            f"MLflow:    drift run {result.mlflow_run_id}; the share is tagged on "
            f"{result.model} (mlrig.drift.share)"
        )
    else:
        typer.echo("MLflow:    not recorded (--no-record)")
