"""`mlrig serve`: the champion's scoring server here, what a server serves, and rollouts."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mlrig.cli.app import serve_app, use_stack
from mlrig.errors import exits_cleanly

DEFAULT_PORT = 8080
DEFAULT_KUBECTL = "kubectl"
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="The registered model (default: the one the register step names in "
        "outputs/register/champion.json).",
    ),
]


def model_name(model: str | None) -> str:
    """`--model`, else the registered model of the last run's register step.

    Raises:
        ConfigError: neither is there.
    """
    from mlrig.errors import ConfigError
    from mlrig.experiments.results import read_champion
    from mlrig.settings import load_settings
    from mlrig.tracking.recorded import REGISTER_DIR

    if model:
        return model
    champion = read_champion(load_settings().root / REGISTER_DIR)
    if champion is None:
        raise ConfigError(
            "No registered model to serve: the pipeline has not registered one here "
            "(outputs/register/champion.json). Run it first (mlrig run), or name one: --model NAME."
        )
    return champion.registered_model


@serve_app.callback(invoke_without_command=True)
@exits_cleanly
def serve_command(
    context: typer.Context,
    model: ModelOption = None,
    stack: Annotated[
        str | None, typer.Option(help="Load the model from this stack's MLflow: local.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_requests: Annotated[
        str | None,
        typer.Option(
            envvar="MLRIG_SERVE_REQUEST_LOG",
            help="s3://<bucket>/<prefix>: log each request's features and prediction there as "
            "JSON lines, for `mlrig drift --data s3://<bucket>/<prefix>/`.",
        ),
    ] = None,
) -> None:
    """Serve the champion (models:/<model>@champion) with MLflow's scoring server, as the
    serving image does: POST /invocations, GET /ping, GET /version. Ctrl-C stops it."""
    import os

    from mlrig.serving.server import champion_uri, serve
    from mlrig.settings import load_settings

    if context.invoked_subcommand is not None:
        return
    if stack:
        use_stack(stack)
    name = model_name(model)
    os.environ["MLFLOW_TRACKING_URI"] = load_settings().tracking_uri
    serve(
        champion_uri(name),
        host,
        port,
        workers,
        on_ready=lambda served: typer.echo(
            f"Serving {served.uri} on http://{host}:{port} (POST /invocations)"
            + (f", logging requests to {log_requests}" if log_requests else ""),
            err=True,
        ),
        request_log=log_requests,
    )


@serve_app.command("status")
@exits_cleanly
def serve_status_command(
    url: Annotated[
        str, typer.Option(help="The scoring server (a port-forward of the chart's Service).")
    ] = f"http://127.0.0.1:{DEFAULT_PORT}",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ask a scoring server which model version it serves."""
    from mlrig.serving.rollout import server_version

    described = server_version(url)
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    typer.echo(f"{url} serves {described.get('model')} version {described['version']}")


@serve_app.command("rollout")
@exits_cleanly
def serve_rollout_command(
    deployment: Annotated[str, typer.Option(help="The serving Deployment (<release>-serving).")],
    model: ModelOption = None,
    namespace: Annotated[str, typer.Option(help="Its namespace.")] = "default",
    kubectl: Annotated[str, typer.Option(help="The kubectl binary.")] = DEFAULT_KUBECTL,
    wait: Annotated[
        int, typer.Option(help="Seconds to wait for the new pods to be ready (0: do not wait).")
    ] = 300,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the patch for the champion's version; ask no cluster."),
    ] = False,
) -> None:
    """Roll the serving Deployment out to the champion's version when the alias moved.

    Patches its pods' model-version annotation; the old pods serve until the new ones are
    ready."""
    import os

    from mlrig.serving.rollout import apply_rollout, plan_rollout
    from mlrig.settings import load_settings

    os.environ["MLFLOW_TRACKING_URI"] = load_settings().tracking_uri
    plan = plan_rollout(model_name(model), deployment, namespace, None if dry_run else kubectl)
    if dry_run:
        typer.echo(json.dumps(plan.patch))
        typer.echo(f"# kubectl {' '.join(plan.kubectl_args())}", err=True)
        return
    if not plan.needed:
        typer.echo(f"{deployment} already serves {plan.model} version {plan.champion}.")
        return
    apply_rollout(plan, kubectl, wait or None)
    state = "ready" if wait else "rolling out"
    before = plan.serving or "(the alias at start)"
    typer.echo(f"{deployment}: {plan.model} version {before} -> {plan.champion}, {state}.")
