"""Train's part of `mlrig run`'s preflight: a team's own estimator classes fit the task and
their params, before any stage runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.experiments.params import Params
from steps.train.estimator import check_estimator


def preflight(params: Params, root: Path, checked: dict[str, Any]) -> None:
    """Check every `family: estimator` experiment against the task the data gives: its class
    imports, is a classifier or a regressor as the task needs, and takes its params.

    Raises:
        ParamsError: naming `train.experiments.<name>.class` or `.params.<param>`.
    """
    _, meta = checked["ingest"]
    for name, experiment in params.train.experiments.items():
        if experiment.family == "estimator":
            check_estimator(name, experiment, meta.task)
