"""What `mlrig drift` recorded in MLflow, read back: a model version's latest drift checks, for
the report.

A check is a run in the experiment `<MLRIG_EXPERIMENT>-drift`, tagged with the model version it
tested; its share and threshold are the metric `drift_share` and the param `drift.threshold`,
its verdict, time and HTML report are tags. These names are the contract between `mlrig.drift`,
which writes them, and this reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlrig.settings import Settings
from mlrig.tracking.step_run import experiment_runs

if TYPE_CHECKING:
    from mlflow.entities import Run

DRIFT_EXPERIMENT_SUFFIX = "-drift"
#: the report stage's output folder (dvc.yaml): the main report and its figures
REPORT_DIR = "reports"
#: where the drift checks' HTML reports go, inside the report's folder so the report links
#: them, but outside the report stage's outputs (dvc.yaml lists its files one by one): DVC
#: neither counts them as a change of the stage nor deletes them when the stage runs again
DRIFT_REPORTS_DIR = f"{REPORT_DIR}/drift"
TAG_MODEL = "mlrig.model"
TAG_MODEL_VERSION = "mlrig.model_version"
TAG_DRIFTED = "mlrig.drift.drifted"  # "true" or "false", as JSON
TAG_CHECKED = "mlrig.drift.checked"  # when the check ran, UTC, ISO 8601 to the second
TAG_REPORT = "mlrig.drift.report"  # the HTML report, relative to the project's root
TAG_DATA = "mlrig.drift.data"  # the new data's file name
METRIC_SHARE = "drift_share"
METRIC_DRIFTED_COLUMNS = "drifted_columns"
PARAM_THRESHOLD = "drift.threshold"
#: how many checks of a version the report lists, newest first
LATEST_CHECKS = 5


class DriftCheck(BaseModel):
    """One `mlrig drift` check of a model version, as MLflow holds it."""

    checked: str  # when it ran, UTC: `2026-12-07 17:46:09 UTC`
    data: str  # the new data's file name
    share: float  # the share of columns that drifted
    threshold: float  # drift.threshold it was judged by
    drifted: bool  # the share reached the threshold
    drifted_columns: int | None
    report: str | None  # the HTML report, relative to the project's root (None: not recorded)
    mlflow_run_id: str
    mlflow_experiment_id: str


def drift_experiment_name(settings: Settings) -> str:
    """The MLflow experiment of the drift checks, beside the training runs' own."""
    return f"{settings.mlflow_experiment}{DRIFT_EXPERIMENT_SUFFIX}"


def latest_checks(
    settings: Settings, model: str, version: str, limit: int = LATEST_CHECKS
) -> list[DriftCheck]:
    """The latest finished drift checks of a registered model version, newest first.

    Args:
        settings: where the MLflow store is.
        model: the registered model's name.
        version: its version.
        limit: how many checks at most.

    Returns:
        The checks; none when drift never ran on that version.
    """
    runs = experiment_runs(
        settings,
        drift_experiment_name(settings),
        f"tags.`{TAG_MODEL}` = '{model}' and tags.`{TAG_MODEL_VERSION}` = '{version}' "
        "and attributes.status = 'FINISHED'",
        # the run id breaks a tie of start times: the same store always gives the same order
        ["attributes.start_time DESC", "attributes.run_id ASC"],
        limit,
    )
    return [check_of(run) for run in runs if METRIC_SHARE in run.data.metrics]


def check_of(run: Run) -> DriftCheck:
    """A drift run as a DriftCheck; one logged before the verdict and time were tags gets
    them from its share and its start."""
    from datetime import UTC, datetime

    tags, metrics = run.data.tags, run.data.metrics
    share = metrics[METRIC_SHARE]
    threshold = float(run.data.params.get(PARAM_THRESHOLD, "nan"))
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
    checked = datetime.fromisoformat(tags[TAG_CHECKED]) if TAG_CHECKED in tags else started
    drifted = tags.get(TAG_DRIFTED)
    columns = metrics.get(METRIC_DRIFTED_COLUMNS)
    return DriftCheck(
        checked=checked.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        data=tags.get(TAG_DATA, "-"),
        share=share,
        threshold=threshold,
        drifted=drifted == "true" if drifted is not None else share >= threshold,
        drifted_columns=None if columns is None else int(columns),
        report=tags.get(TAG_REPORT),
        mlflow_run_id=run.info.run_id,
        mlflow_experiment_id=run.info.experiment_id,
    )
