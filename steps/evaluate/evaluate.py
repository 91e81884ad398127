"""Evaluate: score one experiment's model on the held-out test set.

Classification: accuracy, precision, recall, F1 (macro over classes), ROC AUC (one-vs-rest for
several classes), log loss, with confusion-matrix and ROC plots. Regression: RMSE, MAE, R2, with
a residual plot. Metrics and plots are DVC outputs and go to the experiment's MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.errors import exits_cleanly
from mlrig.experiments.results import METRICS_FILE, RUN_FILE, TrainRecord
from mlrig.experiments.tables import TableMeta, read_meta, read_output, read_parquet
from steps.split import TEST_FILE
from steps.train import MODEL_DIR, raw_features

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

CURVE_FILE = "roc_curve.json"
PLOTS_DIR = "plots"


def classification_metrics(
    target: pd.Series, predicted: np.ndarray, probabilities: np.ndarray, classes: list
) -> dict[str, float]:
    """Held-out classification metrics; averages are macro over classes."""
    from sklearn import metrics

    binary = len(classes) == 2
    auc = (
        metrics.roc_auc_score(target, probabilities[:, 1], labels=classes)
        if binary
        else metrics.roc_auc_score(target, probabilities, multi_class="ovr", labels=classes)
    )
    return {
        "accuracy": metrics.accuracy_score(target, predicted),
        "precision": metrics.precision_score(target, predicted, average="macro", zero_division=0),
        "recall": metrics.recall_score(target, predicted, average="macro", zero_division=0),
        "f1": metrics.f1_score(target, predicted, average="macro", zero_division=0),
        "roc_auc": float(auc),
        "log_loss": metrics.log_loss(target, probabilities, labels=classes),
    }


def regression_metrics(target: pd.Series, predicted: np.ndarray) -> dict[str, float]:
    """Held-out regression metrics."""
    from sklearn import metrics

    return {
        "rmse": float(metrics.root_mean_squared_error(target, predicted)),
        "mae": float(metrics.mean_absolute_error(target, predicted)),
        "r2": float(metrics.r2_score(target, predicted)),
    }


def roc_curve_points(target: pd.Series, probabilities: np.ndarray, classes: list) -> dict:
    """ROC curve points (micro-averaged one-vs-rest when there are several classes)."""
    from sklearn.metrics import roc_curve
    from sklearn.preprocessing import label_binarize

    if len(classes) == 2:
        fpr, tpr, _ = roc_curve(target, probabilities[:, 1], pos_label=classes[1])
    else:
        onehot = label_binarize(target, classes=classes)
        fpr, tpr, _ = roc_curve(onehot.ravel(), probabilities.ravel())
    return {"fpr": [round(float(x), 5) for x in fpr], "tpr": [round(float(y), 5) for y in tpr]}


def classification_figures(
    target: pd.Series, predicted: np.ndarray, curve: dict, name: str
) -> dict[str, Figure]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    confusion = ConfusionMatrixDisplay.from_predictions(target, predicted, colorbar=False)
    confusion.ax_.set_title(f"{name}: confusion matrix (test set)")
    roc, axes = plt.subplots(figsize=(5, 5))
    axes.plot(curve["fpr"], curve["tpr"], label=name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{name}: ROC")
    axes.legend(loc="lower right")
    return {"confusion_matrix.png": confusion.figure_, "roc.png": roc}


def regression_figures(target: pd.Series, predicted: np.ndarray, name: str) -> dict[str, Figure]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.scatter(predicted, target - predicted, s=12, alpha=0.7)
    axes.axhline(0.0, color="grey", linestyle="--")
    axes.set(xlabel="predicted", ylabel="residual (actual - predicted)", title=f"{name}: residuals")
    return {"residuals.png": figure}


def model_metrics(model: object, test_table: pd.DataFrame, meta: TableMeta) -> dict[str, float]:
    """The held-out metrics of any fitted model (the register step re-scores the champion)."""
    return _score(model, test_table, meta)[0]


def _score(
    model: object, test_table: pd.DataFrame, meta: TableMeta
) -> tuple[dict[str, float], np.ndarray, np.ndarray | None]:
    features, target = raw_features(test_table, meta), test_table[meta.target]
    predicted = model.predict(features)  # type: ignore[attr-defined]
    if meta.task == "regression":
        return regression_metrics(target, predicted), predicted, None
    probabilities = model.predict_proba(features)  # type: ignore[attr-defined]
    classes = list(model.classes_)  # type: ignore[attr-defined]
    return (
        classification_metrics(target, predicted, probabilities, classes),
        predicted,
        probabilities,
    )


def evaluate(
    model_uri: str, test_table: pd.DataFrame, meta: TableMeta, name: str
) -> tuple[dict[str, float], dict[str, Figure], dict | None]:
    """Score a model (a folder or any MLflow model URI) on the test table.

    Returns:
        The metrics, the figures by file name, and the ROC points (classification only).
    """
    import matplotlib

    matplotlib.use("Agg")
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_uri)
    metrics, predicted, probabilities = _score(model, test_table, meta)
    target = test_table[meta.target]
    if probabilities is None:
        return metrics, regression_figures(target, predicted, name), None
    curve = roc_curve_points(target, probabilities, list(model.classes_))
    return metrics, classification_figures(target, predicted, curve, name), curve


app = typer.Typer(add_completion=False, help="Score one experiment on the held-out test set.")


@app.command()
@exits_cleanly
def main(
    experiment: Annotated[str, typer.Option(help="key in train.experiments")],
    split_dir: Annotated[Path, typer.Option(help="folder with test.parquet")],
    model_dir: Annotated[Path, typer.Option(help="the train step's output folder")],
    out_dir: Annotated[Path, typer.Option(help="folder for metrics.json and plots/")],
) -> None:
    """Evaluate the experiment, write metrics and plots, add them to its MLflow run."""
    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import TAG_EXPERIMENT, require_mlflow_run, tracked_step

    settings = load_settings()
    meta = read_meta(split_dir)
    record = TrainRecord.model_validate_json(read_output(model_dir / RUN_FILE))
    metrics, figures, curve = evaluate(
        str(model_dir / MODEL_DIR), read_parquet(split_dir / TEST_FILE), meta, experiment
    )
    resume = require_mlflow_run(settings, record.mlflow_run_id)
    with tracked_step(
        settings,
        "evaluate",
        f"evaluate@{experiment}",
        mlflow_run_id=record.mlflow_run_id if resume else None,
        new_mlflow_run=not resume,
        tags={TAG_EXPERIMENT: experiment},
    ) as run:
        plots_dir = out_dir / PLOTS_DIR
        plots_dir.mkdir(parents=True, exist_ok=True)
        for file_name, figure in figures.items():
            figure.savefig(plots_dir / file_name, dpi=90, bbox_inches="tight")
            run.log_figure(figure, file_name)
        # regression has no ROC curve; an empty file keeps the stage's outputs the same
        (out_dir / CURVE_FILE).write_text(json.dumps(curve or {}) + "\n")
        run.log_metrics(metrics)
        (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    shown = ", ".join(f"{key}={value:.4f}" for key, value in metrics.items())
    typer.echo(f"evaluate@{experiment}: {shown}")
