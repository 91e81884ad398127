"""`mlrig stack`: the local stack of servers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlrig.cli.app import (
    console,
    stack_app,
)
from mlrig.errors import exits_cleanly, redact

if TYPE_CHECKING:
    pass


@stack_app.command("up")
@exits_cleanly
def stack_up_command() -> None:
    """Start PostgreSQL, the S3 endpoint and the MLflow server (data in .mlrig/stack)."""
    from mlrig.settings import load_settings
    from mlrig.stacks.local.manager import stack_up

    with console.status("starting the stack") as status:
        state = stack_up(load_settings(), on_step=lambda step: status.update(f"starting {step}"))
    typer.echo(
        redact(
            f"Stack up: MLflow {state.mlflow_uri}, S3 {state.s3_endpoint} (SeaweedFS), "
            f"PostgreSQL 127.0.0.1:{state.postgres_port}"
        )
    )
    typer.echo('Point a shell at it: eval "$(mlrig stack env)"; run on it: mlrig run --stack local')


@stack_app.command("down")
@exits_cleanly
def stack_down_command() -> None:
    """Stop the stack's services; their data stays in .mlrig/stack."""
    from mlrig.settings import load_settings
    from mlrig.stacks.local.manager import stack_down

    stopped = stack_down(load_settings())
    typer.echo(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")


@stack_app.command("status")
@exits_cleanly
def stack_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show each service, where it listens and whether it is healthy (exit 1 if not)."""
    from mlrig.settings import load_settings
    from mlrig.stacks.local.manager import stack_status

    services = stack_status(load_settings())
    if as_json:
        typer.echo(json.dumps([service.model_dump() for service in services], indent=2))
    else:
        table = Table(title="mlrig local stack")
        for column in ("service", "url", "pid", "health"):
            table.add_column(column)
        for service in services:
            health = "[green]healthy[/]" if service.healthy else "[red]down[/]"
            table.add_row(service.name, redact(service.url), str(service.pid or "-"), health)
        Console().print(table)
    if not all(service.healthy for service in services):
        raise typer.Exit(1)


@stack_app.command("env")
@exits_cleanly
def stack_env_command() -> None:
    """Print shell lines pointing MLflow, DVC and boto3 at the stack: eval "$(mlrig stack env)"."""
    from mlrig.settings import load_settings
    from mlrig.stacks.local.manager import stack_env_lines

    typer.echo(stack_env_lines(load_settings()))
