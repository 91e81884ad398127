"""A model version's drift checks read back from MLflow as `mlrig drift` logs them (a real local
SQLite store, the checks logged by mlrig.drift's own writer)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlrig.drift import DriftResult, log_drift
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

MODEL = "mlrig-toy"


def registered_versions(settings: Settings, count: int) -> list[ModelLineage]:
    """`count` versions of MODEL in the store, each from a training run of its own."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    experiment_id = client.create_experiment(
        settings.mlflow_experiment, artifact_location=settings.artifact_root.as_uri()
    )
    client.create_registered_model(MODEL)
    lineages = []
    for _ in range(count):
        run_id = client.create_run(experiment_id).info.run_id
        version = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id).version
        lineages.append(
            ModelLineage(
                name=MODEL,
                version=str(version),
                run_id=run_id,
                model_uri=f"models:/{MODEL}/{version}",
                experiment="toy",
                family="linear",
                data_md5=None,
                commit=None,
                image=None,
            )
        )
    return lineages


def record_check(
    settings: Settings, lineage: ModelLineage, share: float, checked: datetime
) -> DriftResult:
    """One check of `lineage` logged as `mlrig drift` logs it, with its HTML report."""
    report = settings.root / DRIFT_REPORTS_DIR / f"{lineage.version}-{checked:%H%M%S}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html>Evidently's report</html>")
    data = settings.root / "new.csv"
    data.write_text("a,b\n1,2\n")
    result = DriftResult(
        model=lineage.label,
        reference="outputs/split/train.parquet",
        data=str(data),
        reference_rows=10,
        rows=1,
        columns=[],
        share=share,
        threshold=0.5,
        drifted=share >= 0.5,
        report=report.relative_to(settings.root).as_posix(),
        checked=checked.isoformat(),
    )
    result.mlflow_run_id = log_drift(settings, lineage, result, data, report)
    return result


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[ModelLineage]]:
    """Version 1 checked three times, version 2 once; version 3 never."""
    root = tmp_path_factory.mktemp("project")
    settings = Settings(project_dir=root, mlflow_experiment="mlrig", mlflow_tracking_uri=None)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    first, second, third = registered_versions(settings, 3)
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
    settings = Settings(project_dir=tmp_path, mlflow_experiment="mlrig", mlflow_tracking_uri=None)
    settings.state_dir.mkdir(parents=True)

    assert latest_checks(settings, MODEL, "1") == []


def test_a_check_logged_without_verdict_time_or_report_tags_still_shows(tmp_path: Path) -> None:
    """A check an earlier mlrig logged (only the share, the threshold and the version tags)."""
    from mlflow import MlflowClient

    settings = Settings(project_dir=tmp_path, mlflow_experiment="mlrig", mlflow_tracking_uri=None)
    settings.state_dir.mkdir(parents=True)
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
