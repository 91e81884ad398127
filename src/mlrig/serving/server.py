"""The champion's scoring server: MLflow's own scoring app (`mlflow models serve`'s
`scoring_server.init`, FastAPI in MLflow 3) on the model version an alias names.

At start the alias (`models:/<name>@champion`) is resolved to one version, that version is
downloaded once, and only then does uvicorn open its port: a readiness probe on `/ping` answers
only once the model is loaded. Each worker loads the downloaded copy, as `mlflow models serve`
does with `--env-manager local` (the model's libraries are this environment's). `/version` and
the `X-Mlrig-Model-Version` header of every response name the version served. With
MLRIG_SERVE_REQUEST_LOG set, each request and its prediction is also logged to S3
(request_log.py).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError

if TYPE_CHECKING:
    from fastapi import FastAPI

#: what the server process hands its uvicorn workers (they load the model the parent downloaded)
MODEL_PATH_ENV = "MLRIG_SERVE_MODEL_PATH"
MODEL_NAME_ENV = "MLRIG_SERVE_MODEL_NAME"
MODEL_VERSION_ENV = "MLRIG_SERVE_MODEL_VERSION"
#: the header of every response that names the model version served
VERSION_HEADER = "X-Mlrig-Model-Version"
NAME_HEADER = "X-Mlrig-Model-Name"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
#: the alias the register step gives the champion
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, as served."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        """The version's own URI: what is downloaded, whatever alias named it."""
        return f"models:/{self.name}/{self.version}"


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION_ALIAS}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/<name>@<alias>` or `models:/<name>/<version>` as (name, alias, version).

    Raises:
        ConfigError: anything else.
    """
    match = MODEL_URI.match(uri)
    if match is None:
        raise ConfigError(
            f"Cannot serve {uri!r}: give a registered model as models:/<name>@<alias> (e.g. "
            "models:/mlrig-iris@champion) or models:/<name>/<version>."
        )
    return match["name"], match["alias"], match["version"]


def resolve_model(uri: str, version_pin: str | None = None) -> ServedModel:
    """The version `uri` names now in the registry (MLFLOW_TRACKING_URI), or `version_pin`.

    Raises:
        MlrigError: the registry does not answer, or has no such model, alias or version.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    client = MlflowClient()
    try:
        if version_pin or version:
            found = client.get_model_version(name, version_pin or version)
        else:
            found = client.get_model_version_by_alias(name, alias)
    except (MlflowException, OSError) as error:
        what = f"version {version_pin or version}" if version_pin or version else f"@{alias}"
        raise MlrigError(
            f"The registry at {client.tracking_uri} has no {name} {what} to serve "
            f"({str(error).splitlines()[0]}). Run the pipeline until it registers a champion "
            "(mlrig run), or name another model or version.",
            exit_code=EXIT_FAILED,
        ) from None
    return ServedModel(found.name, str(found.version))


def download_model(model: ServedModel, into: Path) -> Path:
    """Download the version's MLflow model folder under `into`.

    Raises:
        MlrigError: its artifacts could not be fetched (MLflow server or S3).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        return Path(download_artifacts(artifact_uri=model.uri, dst_path=str(into)))
    except (MlflowException, OSError) as error:
        raise MlrigError(
            f"Could not download {model.uri}: {str(error).splitlines()[0]}. Check that MLflow "
            "and its artifact store answer with this identity (mlrig doctor).",
            exit_code=EXIT_FAILED,
        ) from None


def create_app() -> FastAPI:
    """The scoring app of one uvicorn worker (uvicorn's factory): MLflow's app on the model the
    server process downloaded, with `/version` and a header naming the version."""
    from fastapi import Request, Response
    from fastapi.responses import JSONResponse
    from mlflow.pyfunc import scoring_server
    from mlflow.version import VERSION as MLFLOW_VERSION

    name, version = os.environ[MODEL_NAME_ENV], os.environ[MODEL_VERSION_ENV]
    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])
    app = scoring_server.init(model)
    log_requests(app, name, version, model.metadata.get_input_schema())
    # MLflow's /version names MLflow's version; this one names the model's (and MLflow's)
    app.router.routes = [
        route for route in app.router.routes if getattr(route, "path", None) != "/version"
    ]
    described = {"model": name, "version": version, "mlflow": MLFLOW_VERSION}

    @app.get("/version")
    async def model_version() -> JSONResponse:
        return JSONResponse(described)

    @app.middleware("http")
    async def name_the_version(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers[VERSION_HEADER] = version
        response.headers[NAME_HEADER] = name
        return response

    return app


def log_requests(app: FastAPI, name: str, version: str, input_schema: object) -> None:
    """With MLRIG_SERVE_REQUEST_LOG set, log each /invocations request and its prediction to
    S3 (request_log.py): a middleware around the whole app, MLflow's own routes unchanged."""
    from mlrig.serving.request_log import (
        RequestLogConfig,
        RequestLogMiddleware,
        request_log_for,
        show_log_messages,
    )

    config = RequestLogConfig.from_env()
    if config is None:
        return
    show_log_messages()
    request_log = request_log_for(config, name, version, input_schema)
    app.add_middleware(RequestLogMiddleware, request_log=request_log)


def serve(
    uri: str,
    host: str,
    port: int,
    workers: int = 1,
    version_pin: str | None = None,
    on_ready: Callable[[ServedModel], None] | None = None,
    request_log: str | None = None,
) -> None:
    """Resolve, download, then serve `uri` until stopped; `on_ready` gets the version first.

    Args:
        request_log: `s3://<bucket>/<prefix>` to log each request and its prediction to
            (MLRIG_SERVE_REQUEST_LOG); None or empty: no log.

    Raises:
        ConfigError: `request_log` (or its batch settings) is malformed.
        MlrigError: the model cannot be found or downloaded (nothing listens then).
    """
    import uvicorn

    from mlrig.serving.request_log import REQUEST_LOG_ENV, RequestLogConfig
    from mlrig.tracking.step_run import MLFLOW_PROXIED_DOWNLOADS

    if request_log:
        os.environ[REQUEST_LOG_ENV] = request_log
    RequestLogConfig.from_env()  # a malformed setting stops here, before any download

    # through the tracking server, not the presigned S3 URLs it would hand out: those name the
    # store as the server reaches it, and a serving pod may be allowed to reach MLflow only
    for name, value in MLFLOW_PROXIED_DOWNLOADS.items():
        os.environ.setdefault(name, value)
    model = resolve_model(uri, version_pin or None)
    # under $TMPDIR: the chart's emptyDir, the root filesystem being read-only
    download_dir = Path(tempfile.mkdtemp(prefix="mlrig-serve-"))
    path = download_model(model, download_dir)
    os.environ.update(
        {MODEL_PATH_ENV: str(path), MODEL_NAME_ENV: model.name, MODEL_VERSION_ENV: model.version}
    )
    if on_ready is not None:
        on_ready(model)
    uvicorn.run(
        "mlrig.serving.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )
