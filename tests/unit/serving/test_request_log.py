"""The request log's batching and flushing (an uploader that records, S3 itself is the
integration test's), its lines as MLflow's parsers read the request, and its middleware around
MLflow's own scoring app."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlrig.errors import ConfigError
from mlrig.serving.request_log import (
    BATCH_REQUESTS_ENV,
    BATCH_SECONDS_ENV,
    REQUEST_LOG_ENV,
    Exchange,
    RequestLog,
    RequestLogConfig,
    RequestLogMiddleware,
    S3Location,
    line_formatter,
    logged_rows,
    parse_s3_url,
)

ROWS = [{"a": 1.0, "b": "x"}, {"a": 2.5, "b": "y"}]


class Bucket:
    """Records each uploaded object; can be made to fail or to hang."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failure: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()

    def upload(self, key: str, body: bytes) -> None:
        self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.objects[key] = body

    def lines(self) -> list[dict]:
        return [json.loads(line) for body in self.objects.values() for line in body.splitlines()]


def exchange(rows: list[dict] = ROWS, predictions: list | None = None) -> Exchange:
    return Exchange(
        at=datetime.now(UTC),
        content_type="application/json",
        request_body=json.dumps({"dataframe_records": rows}).encode(),
        response_body=json.dumps({"predictions": predictions or [0] * len(rows)}).encode(),
    )


@pytest.fixture
def bucket() -> Bucket:
    return Bucket()


@pytest.fixture
def make_log(bucket: Bucket) -> Iterator[Callable[..., RequestLog]]:
    logs: list[RequestLog] = []

    def made(batch_requests: int = 3, batch_seconds: float = 3600.0) -> RequestLog:
        config = RequestLogConfig(S3Location("b", "p"), batch_requests, batch_seconds)
        stem = f"p/obj{len(logs)}"  # each log its own names, as each server process
        log = RequestLog(config, bucket.upload, line_formatter("m", "7", None), lambda: stem)
        logs.append(log)
        return log

    yield made
    for log in logs:
        bucket.gate.set()
        log.close()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_a_full_batch_is_one_object_uploaded_without_waiting_for_the_timer(
    make_log, bucket: Bucket
) -> None:
    log = make_log(batch_requests=3)
    for _ in range(3):
        log.record(exchange())
    wait_for(lambda: len(bucket.objects) == 1)
    assert len(bucket.lines()) == 6  # a line per row of the three requests


def test_what_waits_goes_after_batch_seconds_and_the_rest_at_close(
    make_log, bucket: Bucket
) -> None:
    timed = make_log(batch_requests=100, batch_seconds=0.2)
    timed.record(exchange())
    wait_for(lambda: len(bucket.objects) == 1)

    held = make_log(batch_requests=100)
    held.record(exchange())
    held.record(exchange())
    time.sleep(0.3)
    assert len(bucket.objects) == 1  # neither full nor timed out: still in memory
    held.close()
    assert len(bucket.objects) == 2
    held.close()  # a second close (the lifespan's, then atexit's) uploads nothing twice
    assert len(bucket.objects) == 2 and held.stats.lines == 4


def test_each_line_names_the_version_the_time_the_features_and_their_prediction(
    make_log, bucket: Bucket
) -> None:
    log = make_log()
    log.record(exchange(predictions=[1, 0]))
    log.close()
    first, second = bucket.lines()
    assert first["model"] == "m" and first["version"] == "7"
    assert first["features"] == ROWS[0] and first["prediction"] == 1
    assert second["features"] == ROWS[1] and second["prediction"] == 0
    assert first["request_id"] == second["request_id"]
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None


def test_a_failed_upload_is_counted_logged_once_and_never_raised(
    make_log, bucket: Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    from botocore.exceptions import ClientError

    bucket.failure = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied."}}, "PutObject"
    )
    log = make_log(batch_requests=1)
    with caplog.at_level(logging.ERROR, logger="mlrig.serving.request_log"):
        for _ in range(3):
            log.record(exchange())
        wait_for(lambda: log.stats.failed_uploads == 3)
        log.close()
    assert log.stats.dropped_lines == 6 and log.stats.objects == 0
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "AccessDenied" in errors[0] and "s3://b/p/obj0-" in errors[0]


def test_while_uploads_hang_record_returns_at_once_and_drops_past_the_bound(
    make_log, bucket: Bucket
) -> None:
    bucket.gate.clear()  # S3 hangs
    log = make_log(batch_requests=1)
    started = time.monotonic()
    for _ in range(30):
        log.record(exchange())
    assert time.monotonic() - started < 1.0
    assert log.stats.dropped_requests > 0  # beyond 10 batches waiting
    bucket.gate.set()
    log.close()
    assert log.stats.lines + 2 * log.stats.dropped_requests == 60


def test_a_request_the_log_cannot_parse_is_skipped_and_counted(make_log, bucket: Bucket) -> None:
    log = make_log()
    log.record(Exchange(datetime.now(UTC), "application/json", b"not json", b'{"predictions": []}'))
    log.record(exchange())
    log.close()
    assert log.stats.dropped_requests == 1 and len(bucket.lines()) == 2


def test_the_environment_turns_it_on_and_malformed_settings_are_refused() -> None:
    assert RequestLogConfig.from_env({}) is None
    config = RequestLogConfig.from_env(
        {REQUEST_LOG_ENV: "s3://logs/serving/", BATCH_REQUESTS_ENV: "20", BATCH_SECONDS_ENV: "5"}
    )
    assert config == RequestLogConfig(S3Location("logs", "serving"), 20, 5.0)
    assert parse_s3_url("s3://logs").url == "s3://logs/"
    with pytest.raises(ConfigError, match="s3://<bucket>/<prefix>"):
        RequestLogConfig.from_env({REQUEST_LOG_ENV: "logs/serving"})
    with pytest.raises(ConfigError, match=BATCH_SECONDS_ENV):
        RequestLogConfig.from_env({REQUEST_LOG_ENV: "s3://l/p", BATCH_SECONDS_ENV: "0"})


def test_logged_lines_come_back_as_a_table_row_each() -> None:
    from mlrig.errors import DataError

    lines = line_formatter("m", "3", None)(exchange(predictions=[1, 0]))
    rows = logged_rows("b", "k", ("\n".join(lines) + "\n").encode())
    assert rows[0] == {
        **ROWS[0],
        "prediction": 1,
        "model_version": "3",
        "logged_at": rows[0]["logged_at"],
    }
    with pytest.raises(DataError, match="s3://b/k line 2"):
        logged_rows("b", "k", (lines[0] + "\n{}\n").encode())


@pytest.fixture(scope="module")
def scoring_app_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small scikit-learn model saved as an MLflow model folder."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    features = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(features, [0, 0, 1, 1])
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(model, str(path), input_example=features.head(2))
    return path


def test_the_middleware_logs_mlflows_answers_and_flushes_when_the_app_shuts_down(
    scoring_app_model: Path, bucket: Bucket
) -> None:
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(str(scoring_app_model))
    app = scoring_server.init(model)
    config = RequestLogConfig(S3Location("b", "p"), 100, 3600.0)
    schema = model.metadata.get_input_schema()
    log = RequestLog(config, bucket.upload, line_formatter("m", "1", schema), lambda: "p/o")
    app.add_middleware(RequestLogMiddleware, request_log=log)
    rows = [{"x": 0.0, "y": 1.0}, {"x": 3.0, "y": 0.0}]
    with TestClient(app) as client:
        answered = client.post("/invocations", json={"dataframe_records": rows})
        csv = client.post(
            "/invocations", content="x,y\n2.0,1.0\n", headers={"Content-Type": "text/csv"}
        )
        refused = client.post("/invocations", json={"no_such_key": rows})
        assert client.get("/ping").status_code == 200
        assert bucket.objects == {}  # nothing uploaded while serving: the batch is not full
    assert answered.status_code == 200 and csv.status_code == 200
    assert refused.status_code == 400  # an answer that is not a prediction is not logged
    lines = bucket.lines()  # the lifespan's shutdown flushed them
    assert [line["features"] for line in lines] == [*rows, {"x": 2.0, "y": 1.0}]
    predictions = answered.json()["predictions"] + csv.json()["predictions"]
    assert [line["prediction"] for line in lines] == predictions
