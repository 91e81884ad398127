"""`mlrig chart`: the Helm chart's pods on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mlrig.cli.app import (
    chart_app,
    console,
)
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    pass


@chart_app.command("play")
@exits_cleanly
def chart_play_command() -> None:
    """Render helm/mlrig with helm/mlrig/local/podman-values.yaml and start its pods."""
    from mlrig.settings import load_settings
    from mlrig.stacks.chart import PlayLayout, up

    settings = load_settings()
    with console.status("podman kube play of the chart, then MLflow and the hooks"):
        played = up(settings.root)
    typer.echo(
        f"Played {', '.join(played.workloads)} in {played.play_seconds}s, then the hooks "
        f"{', '.join(played.hooks)} (ready after {played.ready_seconds}s); "
        f"not played: {', '.join(played.skipped)}"
    )
    typer.echo(
        f"MLflow {played.environment['MLFLOW_TRACKING_URI']}, S3 "
        f"{played.environment['AWS_ENDPOINT_URL']}; the pipeline's settings (its MLflow user "
        f"{played.environment['MLFLOW_TRACKING_USERNAME']}, its S3 keys) in "
        f"{PlayLayout(settings.root).client_env}"
    )


@chart_app.command("down")
@exits_cleanly
def chart_down_command() -> None:
    """Remove the chart's pods, their volumes and Secrets (mlrig chart play undone)."""
    from mlrig.settings import load_settings
    from mlrig.stacks.chart import PlayLayout, play_down

    play_down(PlayLayout(load_settings().root))
    typer.echo("The chart's pods, volumes and secrets are removed.")
