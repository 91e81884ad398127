"""Evaluate step: held-out metrics and plots for one experiment."""

from steps.evaluate.evaluate import (
    CURVE_FILE,
    METRICS_FILE,
    PER_CLASS_FILE,
    PLOTS_DIR,
    HeldOutPredictions,
    evaluate,
    model_metrics,
    predict_test,
)

__all__ = [
    "CURVE_FILE",
    "METRICS_FILE",
    "PER_CLASS_FILE",
    "PLOTS_DIR",
    "HeldOutPredictions",
    "evaluate",
    "model_metrics",
    "predict_test",
]
