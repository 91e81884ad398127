"""Request logging of the scoring server: what the model really saw, as JSON lines in S3.

With `MLRIG_SERVE_REQUEST_LOG=s3://<bucket>/<prefix>` each successful `POST /invocations` is
captured by a pure ASGI middleware around MLflow's app (its request and response bodies as
they passed, nothing parsed on the request's path) and queued. A background thread turns each
exchange into one line per input row (`timestamp`, `model`, `version`, `request_id`,
`features`, `prediction`), parsed with MLflow's own input parsers, and uploads the lines as one
object per batch: when `batch_requests` requests wait, every `batch_seconds`, and at shutdown (the
ASGI lifespan's shutdown, which uvicorn runs on SIGTERM, and at exit). A failed upload never
fails or delays a response: its lines are dropped and counted, and the first failure is logged
once (bucket, key and S3's error code, never a credential).

Objects are `<prefix>/<model>/v<version>/<YYYY-MM-DD>/<time>-<host>-<pid>-<n>.jsonl`;
`read_request_log` turns every line under an `s3://` prefix back into a table `mlrig drift
--data` takes (the features as columns, plus `prediction`, `model_version` and `logged_at`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO, StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrig.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

#: `s3://<bucket>/<prefix>`: where the server logs its requests (unset: it logs none)
REQUEST_LOG_ENV = "MLRIG_SERVE_REQUEST_LOG"
#: requests per object at most; a full batch is uploaded at once
BATCH_REQUESTS_ENV = "MLRIG_SERVE_REQUEST_LOG_BATCH_REQUESTS"
#: seconds a request waits at most before its batch is uploaded
BATCH_SECONDS_ENV = "MLRIG_SERVE_REQUEST_LOG_BATCH_SECONDS"
DEFAULT_BATCH_REQUESTS = 500
DEFAULT_BATCH_SECONDS = 60.0
#: exchanges held while uploads lag, as a multiple of a batch; beyond it new ones are dropped
MAX_PENDING_BATCHES = 10
LOGGED_PATH = "/invocations"
LINE_SUFFIX = ".jsonl"
#: the columns `read_request_log` adds beside the features
PREDICTION_COLUMN = "prediction"
VERSION_COLUMN = "model_version"
TIME_COLUMN = "logged_at"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("mlrig.serving.request_log")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/") + "/"


def parse_s3_url(url: str, what: str = REQUEST_LOG_ENV) -> S3Location:
    """`s3://bucket/prefix` as its bucket and prefix.

    Raises:
        ConfigError: it is not an s3:// URL with a bucket.
    """
    rest = url.strip().removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not url.strip().startswith("s3://") or not bucket:
        raise ConfigError(
            f"{what}={url!r} is not an S3 location: give s3://<bucket>/<prefix>, e.g. "
            "s3://mlrig-requests/serving."
        )
    return S3Location(bucket, prefix.strip("/"))


@dataclass(frozen=True)
class RequestLogConfig:
    """Where and how often the server uploads its request log."""

    location: S3Location
    batch_requests: int = DEFAULT_BATCH_REQUESTS
    batch_seconds: float = DEFAULT_BATCH_SECONDS

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> RequestLogConfig | None:
        """The configuration the environment gives; None when request logging is off.

        Raises:
            ConfigError: a setting is malformed.
        """
        environ = os.environ if environ is None else environ
        url = environ.get(REQUEST_LOG_ENV, "").strip()
        if not url:
            return None
        return cls(
            parse_s3_url(url),
            int(positive(environ, BATCH_REQUESTS_ENV, DEFAULT_BATCH_REQUESTS)),
            positive(environ, BATCH_SECONDS_ENV, DEFAULT_BATCH_SECONDS),
        )


def positive(environ: MutableMapping[str, str], name: str, default: float) -> float:
    """A positive number from the environment, else `default`.

    Raises:
        ConfigError: it is set to something else.
    """
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be a positive number (default {default:g}).")
    return value


@dataclass(frozen=True)
class Exchange:
    """One successful /invocations call, as it passed: bodies unparsed."""

    at: datetime
    content_type: str
    request_body: bytes
    response_body: bytes
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class RequestLogStats:
    """What the log did so far (per server process)."""

    objects: int = 0
    lines: int = 0
    failed_uploads: int = 0
    dropped_lines: int = 0  # in a failed upload, or never parsed
    dropped_requests: int = 0  # refused while uploads lagged, or unparsable


Uploader = Callable[[str, bytes], None]
Formatter = Callable[[Exchange], list[str]]


class RequestLog:
    """Batches requests in memory and uploads each batch as one object, off the request's path.

    `record` only appends under a lock. A daemon thread formats the exchanges into lines and
    uploads a batch when `batch_requests` requests wait or `batch_seconds` passed; `close`
    uploads what is left and stops it (idempotent, also run at exit).
    """

    def __init__(
        self,
        config: RequestLogConfig,
        upload: Uploader,
        format_lines: Formatter,
        key_stem: Callable[[], str],
    ) -> None:
        self.config = config
        self.stats = RequestLogStats()
        self._upload, self._format, self._key_stem = upload, format_lines, key_stem
        self._pending: list[Exchange] = []
        self._lock, self._flush_lock = threading.Lock(), threading.Lock()
        self._wake, self._closed = threading.Event(), threading.Event()
        self._warned: set[str] = set()
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="mlrig-request-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def record(self, exchange: Exchange) -> None:
        """Queue one exchange; never blocks on S3 and never raises."""
        with self._lock:
            if len(self._pending) >= self.config.batch_requests * MAX_PENDING_BATCHES:
                self.stats.dropped_requests += 1
                self._warn_once("lagging", "uploads lag: requests are dropped from the log")
                return
            self._pending.append(exchange)
            full = len(self._pending) >= self.config.batch_requests
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Upload what is queued: one object per `batch_requests` requests, a line per row."""
        size = self.config.batch_requests
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            for start in range(0, len(pending), size):
                batch = [
                    line for one in pending[start : start + size] for line in self._formatted(one)
                ]
                if batch:
                    self._put(batch)

    def close(self) -> None:
        """Upload what is left and stop the thread (later calls do nothing)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=self.config.batch_seconds + 30)
        self.flush()
        logger.info(
            "request log %s: %d lines in %d objects, %d failed uploads, %d lines and %d "
            "requests dropped",
            self.config.location.url, self.stats.lines, self.stats.objects,
            self.stats.failed_uploads, self.stats.dropped_lines, self.stats.dropped_requests,
        )  # fmt: skip

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.config.batch_seconds)
            self._wake.clear()
            if not self._closed.is_set():
                self.flush()

    def _formatted(self, exchange: Exchange) -> list[str]:
        try:
            return self._format(exchange)
        except Exception as error:  # a log line must never take the server down
            self.stats.dropped_requests += 1
            self._warn_once("format", f"a request could not be parsed for the log ({error!r})")
            return []

    def _put(self, batch: list[str]) -> None:
        self._sequence += 1
        key = f"{self._key_stem()}-{self._sequence:06d}{LINE_SUFFIX}"
        try:
            self._upload(key, ("\n".join(batch) + "\n").encode())
        except Exception as error:  # botocore's errors and the network's: counted, not raised
            self.stats.failed_uploads += 1
            self.stats.dropped_lines += len(batch)
            self._warn_once(
                "upload",
                f"could not upload s3://{self.config.location.bucket}/{key} "
                f"({describe_s3_error(error)}): its {len(batch)} lines are dropped. Check that "
                "the bucket exists and that the server's S3 keys may write under "
                f"{self.config.location.url}. Further failures are only counted.",
            )
            return
        self.stats.objects += 1
        self.stats.lines += len(batch)

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.error("request log: %s", message)


def describe_s3_error(error: BaseException) -> str:
    """S3's error code and message, or the exception's type: never the request's headers."""
    from botocore.exceptions import BotoCoreError

    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        details = response["Error"]
        return f"{details.get('Code', '?')}: {details.get('Message', '')}".strip(": ")
    if isinstance(error, BotoCoreError):  # its messages name the endpoint, never a key
        return str(error)
    return type(error).__name__


def s3_client() -> Any:
    """boto3's S3 client from the environment (AWS_* keys, AWS_ENDPOINT_URL), short timeouts."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
    )


def s3_uploader(location: S3Location) -> Uploader:
    """Uploads one object under the location's bucket (the key holds the prefix)."""
    client = s3_client()

    def upload(key: str, body: bytes) -> None:
        client.put_object(
            Bucket=location.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )

    return upload


def key_stem(location: S3Location, model: str, version: str) -> Callable[[], str]:
    """The object names of this process: by model, version and day, then time, host, pid."""
    host, pid = socket.gethostname(), os.getpid()

    def stem() -> str:
        now = datetime.now(UTC)
        folder = "/".join(
            part for part in (location.prefix, model, f"v{version}", f"{now:%Y-%m-%d}") if part
        )
        return f"{folder}/{now:%Y%m%dT%H%M%S%fZ}-{host}-{pid}"

    return stem


def parsed_input(exchange: Exchange, input_schema: Any) -> pd.DataFrame:
    """The request's input as a table, parsed by MLflow's scoring server's own parsers."""
    import pandas as pd
    from mlflow.pyfunc import scoring_server

    mime_type = exchange.content_type.split(";")[0].strip().lower()
    if mime_type == scoring_server.CONTENT_TYPE_CSV:
        data = scoring_server.parse_csv_input(
            StringIO(exchange.request_body.decode()), schema=input_schema
        )
    elif mime_type == scoring_server.CONTENT_TYPE_PARQUET:
        data = scoring_server.parse_parquet_input(BytesIO(exchange.request_body))
    else:
        decoded = json.loads(exchange.request_body)
        wrapped = {key: decoded[key] for key in scoring_server.SUPPORTED_FORMATS if key in decoded}
        data = scoring_server.infer_and_parse_data(wrapped, input_schema)
    if isinstance(data, pd.DataFrame):
        return data
    names = input_schema.input_names() if input_schema is not None else None
    return pd.DataFrame(data, columns=names if names and not isinstance(data, dict) else None)


def line_formatter(model: str, version: str, input_schema: Any) -> Formatter:
    """One JSON line per input row: when, which model version, the features, the prediction."""

    def lines(exchange: Exchange) -> list[str]:
        table = parsed_input(exchange, input_schema)
        rows = json.loads(table.to_json(orient="records", date_format="iso"))
        predictions = json.loads(exchange.response_body).get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            predictions = [None] * len(rows)
        at = exchange.at.isoformat(timespec="milliseconds")
        return [
            json.dumps(
                {
                    "timestamp": at,
                    "model": model,
                    "version": version,
                    "request_id": exchange.request_id,
                    "features": row,
                    "prediction": prediction,
                },
                separators=(",", ":"),
            )
            for row, prediction in zip(rows, predictions, strict=True)
        ]

    return lines


class RequestLogMiddleware:
    """A pure ASGI middleware: copies each successful POST /invocations into the log, and
    flushes the log when the server shuts down (the lifespan's shutdown)."""

    def __init__(self, app: ASGIApp, request_log: RequestLog) -> None:
        self.app, self.request_log = app, request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._flushing_on_shutdown(receive), send)
        elif scope["type"] == "http" and scope["path"] == LOGGED_PATH and scope["method"] == "POST":
            await self._logged(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _flushing_on_shutdown(self, receive: Receive) -> Receive:
        async def receive_then_flush() -> Message:
            import anyio.to_thread

            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.request_log.close)
            return message

        return receive_then_flush

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_body, response_body = bytearray(), bytearray()
        status = 0

        async def receive_copy() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request_body.extend(message.get("body", b""))
            return message

        async def send_copy(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                response_body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive_copy, send_copy)
        if status == 200:
            headers = dict(scope.get("headers") or [])
            self.request_log.record(
                Exchange(
                    at=datetime.now(UTC),
                    content_type=headers.get(b"content-type", b"").decode("latin-1"),
                    request_body=bytes(request_body),
                    response_body=bytes(response_body),
                )
            )


def show_log_messages() -> None:
    """Print this module's messages (uvicorn configures only its own loggers)."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def request_log_for(config: RequestLogConfig, model: str, version: str, schema: Any) -> RequestLog:
    """The S3 request log of one server process serving `model` version `version`."""
    location = config.location
    return RequestLog(
        config,
        s3_uploader(location),
        line_formatter(model, version, schema),
        key_stem(location, model, version),
    )


def list_log_objects(client: Any, location: S3Location) -> list[str]:
    """The keys of every `.jsonl` object under the location, in name (time) order."""
    keys: list[str] = []
    prefix = f"{location.prefix}/" if location.prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=prefix
    ):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(key for key in keys if key.endswith(LINE_SUFFIX))


def fetch_s3_object(url: str, destination: Path) -> Path:
    """Download one S3 object (`s3://bucket/key`) to `destination`.

    Raises:
        ConfigError: the URL names no object.
        DataError: S3 refuses it.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_url(url, "--data")
    if not location.prefix:
        raise ConfigError(f"--data {url!r} names a bucket, not an object: s3://<bucket>/<key>.")
    try:
        s3_client().download_file(location.bucket, location.prefix, str(destination))
    except (BotoCoreError, ClientError) as error:
        raise DataError(
            f"Could not read {url} ({describe_s3_error(error)}). Check the key and the S3 "
            "keys (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL)."
        ) from None
    return destination


def read_request_log(url: str) -> pd.DataFrame:
    """Every request row logged under an `s3://` prefix, as one table: the features as columns
    and `prediction`, `model_version`, `logged_at` beside them (what `mlrig drift` reads).

    Raises:
        ConfigError: the URL is not an s3:// location.
        DataError: S3 refuses the listing or a read, or no line is there.
    """
    import pandas as pd
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_url(url, "--data")
    client = s3_client()
    records: list[dict[str, Any]] = []
    try:
        for key in list_log_objects(client, location):
            body = client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
            records.extend(logged_rows(location.bucket, key, body))
    except (BotoCoreError, ClientError) as error:
        raise DataError(
            f"Could not read the request log under {location.url} ({describe_s3_error(error)}). "
            "Check the bucket and the S3 keys (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL)."
        ) from None
    if not records:
        raise DataError(
            f"No logged request under {location.url}: no .jsonl object there holds a line. Check "
            "the prefix (the server's MLRIG_SERVE_REQUEST_LOG) and that it served requests."
        )
    return pd.DataFrame.from_records(records)


def logged_rows(bucket: str, key: str, body: bytes) -> list[dict[str, Any]]:
    """An object's lines as table rows: the features, then the prediction, version and time.

    Raises:
        DataError: a line is not one the server writes.
    """
    rows = []
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            logged = json.loads(line)
            rows.append(
                {
                    **logged["features"],
                    PREDICTION_COLUMN: logged.get("prediction"),
                    VERSION_COLUMN: logged.get("version"),
                    TIME_COLUMN: logged.get("timestamp"),
                }
            )
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"s3://{bucket}/{key} line {number} is not a request log line (JSON with "
                "`features`): point --data at a prefix the scoring server writes only."
            ) from None
    return rows
