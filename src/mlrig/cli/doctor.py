"""`mlrig doctor`: what this machine and the configured servers can do."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.cli.app import (
    app,
    console,
    use_stack,
)
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    pass


@app.command()
@exits_cleanly
def doctor(
    stack: Annotated[
        str | None,
        typer.Option(help="Check a stack: `local` loads the settings of `mlrig stack up`."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check the toolchain, the DVC remote, MLflow and ClearML; exit 1 if a required one fails."""
    from mlrig.doctor import run_doctor
    from mlrig.settings import load_settings

    if stack is not None:
        use_stack(stack)
    with console.status("checking"):
        checks = run_doctor(load_settings())
    if as_json:
        typer.echo(json.dumps([check.model_dump() for check in checks], indent=2))
    else:
        for check in checks:
            mark = "✓" if check.passed else ("✗" if check.required else "!")
            fix = f"\n    fix: {check.fix}" if not check.passed and check.fix else ""
            typer.echo(f"{mark} {check.name}: {check.detail}{fix}")
    if any(check.required and not check.passed for check in checks):
        raise typer.Exit(1)
