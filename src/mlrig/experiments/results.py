"""Experiment results as the steps leave them: what register, report and `mlrig compare` read."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlrig.errors import DataError
from mlrig.experiments.metrics import improvement

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
CHAMPION_FILE = "champion.json"


class TrainOutput(BaseModel):
    """What the train step writes beside its model (run.json): only what its inputs decide, so
    the same inputs write the same bytes and DVC sees the same output (the run's ids and times
    are in MLflow, found by the experiment and the model's md5: tracking/train_runs.py)."""

    experiment: str
    family: str
    params: dict[str, Any]
    task: str
    dataset: str
    train_md5: str
    model_md5: str  # of the model folder's files but MLmodel (steps/train/canonical.py)


class TrainRun(BaseModel):
    """The MLflow run that logged a train output's model, and what it recorded."""

    mlflow_run_id: str
    mlflow_model_uri: str
    fit_seconds: float
    clearml_task_id: str


class TrainRecord(TrainOutput, TrainRun):
    """What the train step hands on: its output and the run that logged it."""


#: finds the run that logged a train output's model (raises when the store has none)
RunFinder = Callable[[TrainOutput], TrainRun]


class ExperimentResult(BaseModel):
    """One experiment: its training record and its held-out metrics."""

    record: TrainRecord
    metrics: dict[str, float]

    @property
    def name(self) -> str:
        return self.record.experiment


class Margin(BaseModel):
    """A model's metric against another model's on the same test rows, with a seeded bootstrap
    interval of the difference (this model minus the other)."""

    versus: str  # the other model: `champion version 3`, or an experiment of this run
    metric: str
    value: float  # this model's value on the test set
    versus_value: float  # the other model's, on the same rows
    difference: float  # value - versus_value
    low: float  # the interval of the difference (NaN when no resample could be scored)
    high: float
    confidence: float  # e.g. 0.95
    resamples: int  # bootstrap resamples of the test rows the interval comes from
    rows: int  # test rows
    seed: int

    @property
    def gain(self) -> float:
        """The difference as a gain: positive when this model is the better one."""
        return improvement(self.difference, self.metric)

    @property
    def verdict(self) -> str:
        """`better beyond noise`, `worse beyond noise`, `within noise` (the interval includes
        zero) or `interval unknown` (no resample could be scored)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return "interval unknown"
        low, high = sorted(improvement(bound, self.metric) for bound in (self.low, self.high))
        if low > 0:
            return "better beyond noise"
        if high < 0:
            return "worse beyond noise"
        return "within noise"

    def difference_text(self) -> str:
        """`difference +0.0064, 95% interval +0.0010 to +0.0120`."""
        return (
            f"difference {self.difference:+.4f}, {self.confidence:.0%} interval "
            f"{self.low:+.4f} to {self.high:+.4f}"
        )


class Champion(BaseModel):
    """The register step's decision about the best experiment of this run."""

    experiment: str
    metric: str
    value: float
    registered_model: str
    registered: bool
    is_champion: bool
    version: str | None
    previous_version: str | None
    reason: str
    min_improvement: float = 0.0  # compare.min_improvement the decision was made with
    #: the experiment of the champion version this run's best was measured against
    incumbent_experiment: str | None = None
    #: this run's best against the champion it challenged (None: there was none to re-score)
    versus_champion: Margin | None = None
    #: this run's best against this run's second best (None: a single experiment)
    versus_runner_up: Margin | None = None


def load_results(
    train_dir: Path, evaluate_dir: Path, names: list[str], find_run: RunFinder
) -> list[ExperimentResult]:
    """Read each named experiment's run.json and metrics.json, with the run `find_run` finds.

    Raises:
        DataError: an experiment has no outputs yet (the pipeline has not run it).
    """
    results = []
    for name in names:
        run_path, metrics_path = train_dir / name / RUN_FILE, evaluate_dir / name / METRICS_FILE
        if not (run_path.is_file() and metrics_path.is_file()):
            raise DataError(
                f"Experiment {name!r} has no results ({run_path} or {metrics_path} is missing). "
                "Run the pipeline first: mlrig run."
            )
        output = TrainOutput.model_validate_json(run_path.read_text())
        record = TrainRecord(**output.model_dump(), **find_run(output).model_dump())
        results.append(
            ExperimentResult(record=record, metrics=json.loads(metrics_path.read_text()))
        )
    return results


def read_champion(register_dir: Path) -> Champion | None:
    path = register_dir / CHAMPION_FILE
    return Champion.model_validate_json(path.read_text()) if path.is_file() else None
