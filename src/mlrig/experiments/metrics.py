"""Which metric decides, and which way is better."""

from __future__ import annotations

from mlrig.errors import ParamsError
from mlrig.experiments.params import TaskKind

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
DEFAULT_METRIC: dict[str, str] = {"classification": "f1", "regression": "rmse"}


def task_metrics(task: TaskKind) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def primary_metric(configured: str, task: TaskKind) -> str:
    """Resolve `compare.metric` (`auto` or a metric name) for the task.

    Raises:
        ParamsError: the metric does not exist for this task.
    """
    metric = DEFAULT_METRIC[task] if configured == "auto" else configured
    if metric not in task_metrics(task):
        choices = ", ".join(task_metrics(task))
        raise ParamsError(
            f"compare.metric is {configured!r}, which is not a {task} metric. "
            f"Use auto or one of: {choices}."
        )
    return metric


def improvement(difference: float, metric: str) -> float:
    """A difference of the metric (new minus old) as a gain: positive when the new is better."""
    return -difference if metric in LOWER_IS_BETTER else difference


def is_better(candidate: float, incumbent: float, metric: str) -> bool:
    """Strictly better: a tie keeps the incumbent."""
    return candidate < incumbent if metric in LOWER_IS_BETTER else candidate > incumbent
