"""Evaluate step: held-out metrics and plots for one experiment."""

from steps.evaluate.evaluate import CURVE_FILE, METRICS_FILE, PLOTS_DIR, evaluate, model_metrics

__all__ = ["CURVE_FILE", "METRICS_FILE", "PLOTS_DIR", "evaluate", "model_metrics"]
