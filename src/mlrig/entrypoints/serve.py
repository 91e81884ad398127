"""`mlrig-serve`: the serving image's entrypoint, the champion's scoring server.

The serving image's `ENTRYPOINT` is `tini -- mlrig-serve`. Every setting comes from the
environment (the chart sets them): the model (MLRIG_SERVE_MODEL_URI, default the champion of
MLRIG_SERVE_MODEL), the version a rollout pinned (MLRIG_SERVE_VERSION_PIN), MLflow
(MLFLOW_TRACKING_URI and its credentials), S3 (AWS_*, MLFLOW_S3_ENDPOINT_URL) and the
request log (MLRIG_SERVE_REQUEST_LOG, an s3:// prefix; unset: none).
`mlrig serve` is the same server for a user, on the local champion.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlrig.errors import exits_cleanly

DEFAULT_PORT = 8080


@exits_cleanly
def serve_entrypoint(
    model_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLRIG_SERVE_MODEL_URI",
            help="models:/<name>@<alias> or models:/<name>/<version> (default: the champion of "
            "--model).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(envvar="MLRIG_SERVE_MODEL", help="The registered model's name."),
    ] = None,
    version_pin: Annotated[
        str | None,
        typer.Option(
            envvar="MLRIG_SERVE_VERSION_PIN",
            help="Serve this version of the model (set by a rollout); empty: the alias's.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(envvar="MLRIG_SERVE_HOST", help="Address to listen on.")
    ] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(envvar="MLRIG_SERVE_PORT", help="Port to listen on.")
    ] = DEFAULT_PORT,
    workers: Annotated[
        int,
        typer.Option(envvar="MLRIG_SERVE_WORKERS", min=1, help="uvicorn worker processes."),
    ] = 1,
    log_requests: Annotated[
        str | None,
        typer.Option(
            envvar="MLRIG_SERVE_REQUEST_LOG",
            help="s3://<bucket>/<prefix>: log each request's features and prediction there as "
            "JSON lines (batched; MLRIG_SERVE_REQUEST_LOG_BATCH_REQUESTS, _BATCH_SECONDS).",
        ),
    ] = None,
) -> None:
    """Serve a registered model with MLflow's scoring server (/invocations, /ping, /version)."""
    from mlrig.errors import ConfigError
    from mlrig.serving.server import champion_uri, serve

    if model_uri is None and model is None:
        raise ConfigError(
            "Name the model to serve: MLRIG_SERVE_MODEL=<registered model> (its champion) or "
            "MLRIG_SERVE_MODEL_URI=models:/<name>@<alias>."
        )
    uri = model_uri or champion_uri(str(model))
    serve(
        uri,
        host,
        port,
        workers,
        version_pin,
        on_ready=lambda served: typer.echo(f"serving {served.uri} on {host}:{port}", err=True),
        request_log=log_requests,
    )


def main() -> None:
    """The `mlrig-serve` console script."""
    typer.run(serve_entrypoint)
