"""A model version's drift checks read back from MLflow as `mlrig drift` logs them (a real local
SQLite store, the checks logged by mlrig.drift's own writer)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlrig.settings import Settings
from mlrig.tracking.drift_checks import (
    DRIFT_REPORTS_DIR,
    METRIC_SHARE,
    PARAM_THRESHOLD,
    TAG_MODEL,
    TAG_MODEL_VERSION,
    drift_experiment_name,
    latest_checks,
)
from mlrig.tracking.registered import ModelLineage
from tests.support.drift_checks import local_store, record_check, registered_versions

MODEL = "mlrig-toy"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[ModelLineage]]:
    """Version 1 checked three times, version 2 once; version 3 never."""
    settings = local_store(tmp_path_factory.mktemp("project"))
    first, second, third = registered_versions(settings, MODEL, 3)
    for minute, share in ((1, 0.1), (2, 0.6), (3, 0.2)):
        record_check(settings, first, share, datetime(2026, 12, 1, 9, minute, tzinfo=UTC))
    record_check(settings, second, 0.9, datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    return settings, [first, second, third]


def test_a_versions_checks_come_back_newest_first_with_their_verdicts(store: Any) -> None:
    settings, (first, _, _) = store

    checks = latest_checks(settings, MODEL, first.version)

    assert [check.share for check in checks] == [0.2, 0.6, 0.1]
    assert [check.drifted for check in checks] == [False, True, False]
    assert [check.checked for check in checks] == [
        "2026-12-01 09:03:00 UTC",
        "2026-12-01 09:02:00 UTC",
        "2026-12-01 09:01:00 UTC",
    ]
    newest = checks[0]
    assert newest.threshold == 0.5
    assert newest.data == "new.csv"
    assert newest.drifted_columns == 0
    assert newest.report == f"{DRIFT_REPORTS_DIR}/1-090300.html"
    assert (settings.root / newest.report).is_file()


def test_only_that_versions_checks_and_at_most_the_limit(store: Any) -> None:
    settings, (first, second, third) = store

    assert [check.share for check in latest_checks(settings, MODEL, second.version)] == [0.9]
    assert [check.share for check in latest_checks(settings, MODEL, first.version, 2)] == [
        0.2,
        0.6,
    ]
    assert latest_checks(settings, MODEL, third.version) == []
    assert latest_checks(settings, "another-model", first.version) == []


def test_the_same_store_gives_the_same_checks(store: Any) -> None:
    settings, (first, _, _) = store

    assert latest_checks(settings, MODEL, first.version) == latest_checks(
        settings, MODEL, first.version
    )


def test_no_drift_experiment_means_no_checks(tmp_path: Path) -> None:
    settings = local_store(tmp_path)

    assert latest_checks(settings, MODEL, "1") == []


def test_a_check_logged_without_verdict_time_or_report_tags_still_shows(tmp_path: Path) -> None:
    """A check an earlier mlrig logged (only the share, the threshold and the version tags)."""
    from mlflow import MlflowClient

    settings = local_store(tmp_path)
    client = MlflowClient(settings.tracking_uri)
    experiment_id = client.create_experiment(drift_experiment_name(settings))
    started = int(datetime(2026, 11, 30, 8, 15, 30, tzinfo=UTC).timestamp() * 1000)
    run_id = client.create_run(
        experiment_id, start_time=started, tags={TAG_MODEL: MODEL, TAG_MODEL_VERSION: "4"}
    ).info.run_id
    client.log_param(run_id, PARAM_THRESHOLD, 0.5)
    client.log_metric(run_id, METRIC_SHARE, 0.5)
    client.set_terminated(run_id)

    (check,) = latest_checks(settings, MODEL, "4")

    assert check.drifted  # 0.5 reaches the threshold 0.5
    assert check.checked == "2026-11-30 08:15:30 UTC"
    assert check.report is None and check.drifted_columns is None
