"""`mlrig reproduce`: a registered model trained again from its lineage, and compared."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mlrig.cli.app import app, console
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    from mlrig.reproduce import Reproduction


@app.command()
@exits_cleanly
def reproduce(
    model: Annotated[
        str,
        typer.Argument(help="models:/<name>/<version>, or models:/<name>@champion (any alias)."),
    ],
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Relative tolerance of metrics and numeric predictions (default: 1e-9, 1e-6 "
            "for xgboost, lightgbm and a team's own estimator class).",
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Run the stages here, with this checkout's libraries, even when the run "
            "recorded the step images they ran in (the image link is then not checked).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a registered model version again, in a scratch git worktree at its recorded commit
    on its recorded DVC data version, in the step images it ran in when recorded (else here),
    and compare metrics and test predictions; exit 1 when they differ or a link of its
    lineage is missing. The registry is only read."""
    from mlrig.reproduce import as_dict, reproduce, require_reproduced
    from mlrig.settings import load_settings

    settings = load_settings()
    with console.status(f"Reproducing {model} in a scratch worktree"):
        # on stderr, beside the status: --json's output stays the result alone
        result = reproduce(settings, model, tolerance, local=local, on_notice=tell)
    if as_json:
        typer.echo(json.dumps(as_dict(result), indent=2))
    else:
        print_result(result)
    require_reproduced(result)


def tell(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_result(result: Reproduction) -> None:
    links = Table(title=f"The lineage of {result.model}")
    for heading in ("link", "recorded", "state", "note"):
        links.add_column(heading)
    for link in result.links:
        links.add_row(link.name, link.recorded or "-", link.state, link.note)
    console.print(links)
    if result.compared:
        compared = Table(title=f"Registered against reproduced (tolerance {result.tolerance:g})")
        for heading in ("what", "registered", "reproduced", "equal"):
            compared.add_column(heading)
        for item in result.compared:
            compared.add_row(
                item.what, item.registered, item.reproduced, "yes" if item.equal else "NO"
            )
        console.print(compared)
    if result.log:
        console.print(result.log, markup=False, highlight=False)
    verdict = "reproduced" if result.reproduced else "NOT reproduced"
    typer.echo(f"{result.model}: {verdict}. Rerun tracking: {result.rerun_tracking}.")
    from mlrig.reproduce import describe_missing

    for line in describe_missing(result):
        typer.echo(f"  {line}")
