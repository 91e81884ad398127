"""Evaluate: score one experiment's model on the held-out test set.

Classification: accuracy, precision, recall, F1 (macro over classes), ROC AUC (one-vs-rest for
several classes), log loss, with confusion-matrix and ROC plots and the per-class results
(confusion matrix, precision, recall, F1, support). Regression: RMSE, MAE, R2, with
a residual plot. Metrics and plots are DVC outputs and go to the experiment's MLflow run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlrig.errors import exits_cleanly
from mlrig.experiments.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from mlrig.experiments.results import METRICS_FILE, RUN_FILE, TrainOutput
from mlrig.experiments.tables import TableMeta, read_meta, read_output, read_parquet
from mlrig.progress import phase
from mlrig.text import natural_order
from steps.split import TEST_FILE
from steps.train import MODEL_DIR, raw_features

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

CURVE_FILE = "roc_curve.json"
PER_CLASS_FILE = "per_class.json"
PLOTS_DIR = "plots"


def classification_metric(
    metric: str,
    target: ArrayLike,
    predicted: ArrayLike,
    probabilities: np.ndarray | None,
    classes: list,
    sample_weight: ArrayLike | None = None,
) -> float:
    """One held-out classification metric; averages are macro over classes.

    The register step's bootstrap calls it on resampled rows (or, for the metrics of labels
    alone, on the distinct rows weighted by how often a resample drew them), so the interval
    it gives is of the very metric the experiments are compared by.
    """
    from sklearn import metrics

    weight = {"sample_weight": sample_weight}
    if metric == "roc_auc":  # one-vs-rest for several classes
        binary = len(classes) == 2
        scores = probabilities[:, 1] if binary else probabilities  # type: ignore[index]
        several = {} if binary else {"multi_class": "ovr"}
        return float(metrics.roc_auc_score(target, scores, labels=classes, **several, **weight))
    if metric == "log_loss":
        return float(metrics.log_loss(target, probabilities, labels=classes, **weight))
    if metric == "accuracy":
        return float(metrics.accuracy_score(target, predicted, **weight))
    averaged = {
        "precision": metrics.precision_score,
        "recall": metrics.recall_score,
        "f1": metrics.f1_score,
    }
    return float(averaged[metric](target, predicted, average="macro", zero_division=0, **weight))


def classification_metrics(
    target: ArrayLike, predicted: ArrayLike, probabilities: np.ndarray, classes: list
) -> dict[str, float]:
    """Held-out classification metrics; averages are macro over classes."""
    return {
        metric: classification_metric(metric, target, predicted, probabilities, classes)
        for metric in CLASSIFICATION_METRICS
    }


def regression_metric(metric: str, target: ArrayLike, predicted: ArrayLike) -> float:
    """One held-out regression metric."""
    from sklearn import metrics

    scorers = {
        "rmse": metrics.root_mean_squared_error,
        "mae": metrics.mean_absolute_error,
        "r2": metrics.r2_score,
    }
    return float(scorers[metric](target, predicted))


def regression_metrics(target: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """Held-out regression metrics."""
    return {metric: regression_metric(metric, target, predicted) for metric in REGRESSION_METRICS}


@dataclass(frozen=True)
class HeldOutPredictions:
    """A model's predictions on the test table, beside the true values."""

    target: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray | None  # classification only: a column per class, as `classes`
    classes: list  # the model's classes (classification only)

    def take(self, rows: np.ndarray) -> HeldOutPredictions:
        """The predictions on these rows (a bootstrap resample: rows may repeat)."""
        return HeldOutPredictions(
            target=self.target[rows],
            predicted=self.predicted[rows],
            probabilities=None if self.probabilities is None else self.probabilities[rows],
            classes=self.classes,
        )

    def metric(self, metric: str) -> float:
        """The value of one metric of the task on these predictions."""
        if self.probabilities is None:
            return regression_metric(metric, self.target, self.predicted)
        return classification_metric(
            metric, self.target, self.predicted, self.probabilities, self.classes
        )

    def metrics(self) -> dict[str, float]:
        """Every metric of the task on these predictions."""
        if self.probabilities is None:
            return regression_metrics(self.target, self.predicted)
        return classification_metrics(self.target, self.predicted, self.probabilities, self.classes)


def per_class_results(target: ArrayLike, predicted: ArrayLike, classes: list) -> dict[str, Any]:
    """The confusion matrix and each class's precision, recall, F1 and support, with the
    classes in natural order (`2` before `10`): what the report shows per experiment."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = natural_order(classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        target, predicted, labels=labels, zero_division=0
    )
    return {
        "labels": [str(label) for label in labels],
        "confusion_matrix": confusion_matrix(target, predicted, labels=labels).tolist(),
        "classes": {
            str(label): {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "support": int(support[index]),
            }
            for index, label in enumerate(labels)
        },
    }


def roc_curve_points(target: ArrayLike, probabilities: np.ndarray, classes: list) -> dict:
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
    target: ArrayLike, predicted: ArrayLike, classes: list, curve: dict, name: str
) -> dict[str, Figure]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    confusion = ConfusionMatrixDisplay.from_predictions(
        target, predicted, labels=natural_order(classes), colorbar=False
    )
    confusion.ax_.set_title(f"{name}: confusion matrix (test set)")
    roc, axes = plt.subplots(figsize=(5, 5))
    axes.plot(curve["fpr"], curve["tpr"], label=name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{name}: ROC")
    axes.legend(loc="lower right")
    return {"confusion_matrix.png": confusion.figure_, "roc.png": roc}


def regression_figures(target: np.ndarray, predicted: np.ndarray, name: str) -> dict[str, Figure]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.scatter(predicted, target - predicted, s=12, alpha=0.7)
    axes.axhline(0.0, color="grey", linestyle="--")
    axes.set(xlabel="predicted", ylabel="residual (actual - predicted)", title=f"{name}: residuals")
    return {"residuals.png": figure}


def predict_test(model: object, test_table: pd.DataFrame, meta: TableMeta) -> HeldOutPredictions:
    """Any fitted model's predictions on the test table (the register step compares models on
    them)."""
    features, target = raw_features(test_table, meta), test_table[meta.target]
    predicted = model.predict(features)  # type: ignore[attr-defined]
    if meta.task == "regression":
        return HeldOutPredictions(target.to_numpy(), predicted, None, [])
    return HeldOutPredictions(
        target.to_numpy(),
        predicted,
        model.predict_proba(features),  # type: ignore[attr-defined]
        list(model.classes_),  # type: ignore[attr-defined]
    )


def model_metrics(model: object, test_table: pd.DataFrame, meta: TableMeta) -> dict[str, float]:
    """The held-out metrics of any fitted model."""
    return predict_test(model, test_table, meta).metrics()


@dataclass
class Evaluation:
    """What evaluate finds for one model."""

    metrics: dict[str, float]
    figures: dict[str, Figure]
    curve: dict | None  # the ROC points (classification only)
    per_class: dict[str, Any] | None  # confusion matrix and per-class metrics (classification)


def evaluate(model_uri: str, test_table: pd.DataFrame, meta: TableMeta, name: str) -> Evaluation:
    """Score a model (a folder or any MLflow model URI) on the test table."""
    import matplotlib

    matplotlib.use("Agg")
    import mlflow.sklearn

    phase(f"loading the model of {name}")
    model = mlflow.sklearn.load_model(model_uri)
    phase(f"predicting {len(test_table)} test rows with {name}")
    predictions = predict_test(model, test_table, meta)
    phase(f"scoring and plotting {name}")
    metrics = predictions.metrics()
    target, predicted = predictions.target, predictions.predicted
    if predictions.probabilities is None:
        return Evaluation(metrics, regression_figures(target, predicted, name), None, None)
    classes = predictions.classes
    curve = roc_curve_points(target, predictions.probabilities, classes)
    return Evaluation(
        metrics,
        classification_figures(target, predicted, classes, curve, name),
        curve,
        per_class_results(target, predicted, classes),
    )


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
    from mlrig.tracking.step_run import TAG_EXPERIMENT, tracked_step
    from mlrig.tracking.train_runs import find_train_run

    settings = load_settings()
    meta = read_meta(split_dir)
    output = TrainOutput.model_validate_json(read_output(model_dir / RUN_FILE))
    evaluation = evaluate(
        str(model_dir / MODEL_DIR), read_parquet(split_dir / TEST_FILE), meta, experiment
    )
    # the run that logged this model; a store without it (another one) gets a run of its own
    train_run = find_train_run(settings, output)
    with tracked_step(
        settings,
        "evaluate",
        f"evaluate@{experiment}",
        mlflow_run_id=train_run.mlflow_run_id if train_run else None,
        new_mlflow_run=train_run is None,
        tags={TAG_EXPERIMENT: experiment},
    ) as run:
        phase("logging the metrics and plots")
        plots_dir = out_dir / PLOTS_DIR
        plots_dir.mkdir(parents=True, exist_ok=True)
        for file_name, figure in evaluation.figures.items():
            figure.savefig(plots_dir / file_name, dpi=90, bbox_inches="tight")
            run.log_figure(figure, file_name)
        # regression has no ROC curve nor classes; empty files keep the stage's outputs the same
        (out_dir / CURVE_FILE).write_text(json.dumps(evaluation.curve or {}) + "\n")
        per_class_path = out_dir / PER_CLASS_FILE
        per_class_path.write_text(json.dumps(evaluation.per_class or {}, indent=2) + "\n")
        if evaluation.per_class:
            run.log_artifact(per_class_path)
        run.log_metrics(evaluation.metrics)
        (out_dir / METRICS_FILE).write_text(json.dumps(evaluation.metrics, indent=2) + "\n")
    shown = ", ".join(f"{key}={value:.4f}" for key, value in evaluation.metrics.items())
    typer.echo(f"evaluate@{experiment}: {shown}")
