"""Evaluate step: held-out metrics equal hand-computed values; a saved model is scored whole."""

from __future__ import annotations

import io
from collections.abc import Iterator
from math import log, sqrt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, f1_score, r2_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from mlrig.experiments.tables import TableMeta
from steps.evaluate import evaluate
from steps.evaluate.evaluate import (
    classification_metrics,
    per_class_results,
    regression_metrics,
    roc_curve_points,
)
from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.split import split_table
from steps.split.params import SplitParams
from steps.train import raw_features
from steps.train.families import build_pipeline
from steps.train.model_format import model_format, save_model
from steps.train.params import LinearParams

CLASSIFICATION_METRICS = {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}

# Binary example: rows 2 and 3 are positives (scores 0.65, 0.8), rows 0 and 1 negatives
# (0.1, 0.7); predicted labels put one negative on the wrong side.
BINARY_PROBABILITIES = np.array([[0.9, 0.1], [0.3, 0.7], [0.35, 0.65], [0.2, 0.8]])
BINARY_PREDICTED = [0, 1, 1, 1]
BINARY_TARGET = [0, 0, 1, 1]

# Three-class example, classes of unequal size (so one-vs-rest and one-vs-one AUC differ);
# the argmax gets rows 1 and 4 wrong.
MULTI_PROBABILITIES = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.4, 0.5, 0.1],
        [0.6, 0.1, 0.3],
        [0.2, 0.7, 0.1],
        [0.5, 0.3, 0.2],
        [0.2, 0.2, 0.6],
    ]
)
MULTI_TARGET = [0, 0, 0, 1, 1, 2]
MULTI_PREDICTED = [0, 1, 0, 1, 0, 2]


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    pyplot.close("all")


@pytest.mark.parametrize("labels", [(0, 1), ("benign", "malignant")])
def test_binary_classification_metrics_match_hand_computed_values(labels: tuple) -> None:
    relabel = dict(enumerate(labels))
    target = pd.Series([relabel[label] for label in BINARY_TARGET])
    predicted = np.array([relabel[label] for label in BINARY_PREDICTED])

    metrics = classification_metrics(target, predicted, BINARY_PROBABILITIES, list(labels))

    assert metrics == pytest.approx(
        {
            "accuracy": 3 / 4,
            "precision": (1 + 2 / 3) / 2,  # class 0: 1 of 1 predicted; class 1: 2 of 3
            "recall": (1 / 2 + 1) / 2,
            "f1": (2 / 3 + 4 / 5) / 2,
            "roc_auc": 3 / 4,  # 3 of the 4 positive-negative pairs are ordered right
            "log_loss": -(log(0.9) + log(0.3) + log(0.65) + log(0.8)) / 4,
        }
    )


def test_three_class_metrics_match_hand_computed_values() -> None:
    metrics = classification_metrics(
        pd.Series(MULTI_TARGET), np.array(MULTI_PREDICTED), MULTI_PROBABILITIES, [0, 1, 2]
    )

    assert metrics == pytest.approx(
        {
            "accuracy": 4 / 6,
            "precision": (2 / 3 + 1 / 2 + 1) / 3,  # class 0: 2 of its 3 predicted rows are 0
            "recall": (2 / 3 + 1 / 2 + 1) / 3,
            "f1": (2 / 3 + 1 / 2 + 1) / 3,
            "roc_auc": (8 / 9 + 7 / 8 + 1) / 3,  # one-vs-rest, macro over the classes
            "log_loss": -(log(0.8) + log(0.4) + log(0.6) + log(0.7) + log(0.3) + log(0.6)) / 6,
        }
    )


@pytest.mark.parametrize("labels", [(0, 1), ("benign", "malignant")])
def test_binary_roc_curve_points_are_those_of_the_positive_class(labels: tuple) -> None:
    target = pd.Series([labels[label] for label in BINARY_TARGET])

    curve = roc_curve_points(target, BINARY_PROBABILITIES, list(labels))

    assert curve == {"fpr": [0.0, 0.0, 0.5, 0.5, 1.0], "tpr": [0.0, 0.5, 0.5, 1.0, 1.0]}


def test_three_class_roc_curve_is_the_micro_average() -> None:
    curve = roc_curve_points(pd.Series(MULTI_TARGET), MULTI_PROBABILITIES, [0, 1, 2])

    assert (curve["fpr"][0], curve["tpr"][0]) == (0.0, 0.0)
    assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)
    # 67.5 of the 6 x 12 (positive, negative) cell pairs are ordered right, a tie counting half
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(67.5 / 72, abs=1e-4)


@pytest.mark.parametrize("labels", [(2, 10, 1), ("2", "10", "1")], ids=["int", "text"])
def test_per_class_results_list_numeric_labels_in_numeric_order(labels: tuple) -> None:
    """Classes 1, 2, 10 in that order, not 1, 10, 2, whether the labels are numbers or text."""
    two, ten, one = labels
    target = [one, two, two, ten, ten, ten]
    predicted = [one, two, ten, ten, ten, one]

    results = per_class_results(target, predicted, [two, ten, one])

    assert results["labels"] == [str(one), str(two), str(ten)]
    assert results["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [1, 0, 2]]
    assert results["classes"][str(ten)] == {
        "precision": 2 / 3,
        "recall": 2 / 3,
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }
    assert results["classes"][str(one)]["precision"] == 0.5


def test_per_class_results_of_text_labels_are_alphabetical() -> None:
    results = per_class_results(["b", "a", "c"], ["b", "a", "a"], ["c", "b", "a"])
    assert results["labels"] == ["a", "b", "c"]
    assert results["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_regression_metrics_match_hand_computed_values() -> None:
    target = pd.Series([3.0, -0.5, 2.0, 7.0])
    predicted = np.array([2.5, 0.0, 2.0, 8.0])

    metrics = regression_metrics(target, predicted)

    squared_total = sum((value - 2.875) ** 2 for value in target)
    assert metrics == pytest.approx(
        {
            "rmse": sqrt((0.25 + 0.25 + 0 + 1) / 4),
            "mae": (0.5 + 0.5 + 0 + 1) / 4,
            "r2": 1 - 1.5 / squared_total,
        }
    )


def load_split(name: str) -> tuple[pd.DataFrame, pd.DataFrame, TableMeta]:
    table, meta = ingest(IngestParams(source=f"builtin:{name}"), Path.cwd())
    train_table, test_table = split_table(table, meta, SplitParams(test_size=0.3, seed=0))
    return train_table, test_table, meta


def saved_linear_model(train_table: pd.DataFrame, meta: TableMeta, folder: Path):
    """Fit the linear family and save it as the train step does; returns the fitted pipeline."""
    pipeline = build_pipeline("linear", LinearParams(), meta, seed=0)
    pipeline.fit(raw_features(train_table, meta), train_table[meta.target])
    save_model(folder, pipeline=pipeline, fmt=model_format(pipeline, "linear"))
    return pipeline


def is_png(figure: Figure) -> bool:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_saved_classifier_gets_every_metric_and_both_plots(dataset: str, tmp_path: Path) -> None:
    train_table, test_table, meta = load_split(dataset)
    pipeline = saved_linear_model(train_table, meta, tmp_path / "model")

    evaluation = evaluate(str(tmp_path / "model"), test_table, meta, "linear")
    metrics, figures, curve = evaluation.metrics, evaluation.figures, evaluation.curve

    assert set(metrics) == CLASSIFICATION_METRICS
    target = test_table[meta.target]
    test_features = raw_features(test_table, meta)
    predicted = pipeline.predict(test_features)
    # scored on the test table with the model that was saved
    assert metrics["accuracy"] == pytest.approx(accuracy_score(target, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(target, predicted, average="macro"))
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.95
    assert set(figures) == {"confusion_matrix.png", "roc.png"}
    assert all(is_png(figure) for figure in figures.values())
    assert curve is not None and len(curve["fpr"]) == len(curve["tpr"]) > 2
    assert (curve["fpr"][0], curve["tpr"][0], curve["fpr"][-1], curve["tpr"][-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(curve["fpr"]) >= 0) and np.all(np.diff(curve["tpr"]) >= 0)
    probabilities = pipeline.predict_proba(test_features)
    onehot = label_binarize(target, classes=list(pipeline.classes_))
    expected_area = (
        roc_auc_score(target, probabilities[:, 1])
        if onehot.shape[1] == 1
        else roc_auc_score(onehot, probabilities, average="micro")
    )
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(expected_area, abs=1e-3)
    per_class = evaluation.per_class
    assert per_class is not None
    assert per_class["labels"] == [str(label) for label in sorted(pipeline.classes_)]
    matrix = np.array(per_class["confusion_matrix"])  # rows: true class, columns: predicted
    assert matrix.sum() == len(test_table)
    assert np.trace(matrix) == (predicted == target).sum()
    for index, label in enumerate(per_class["labels"]):
        row = per_class["classes"][label]
        assert row["support"] == matrix[index].sum() == (target.astype(str) == label).sum()
        assert row["recall"] == pytest.approx(matrix[index, index] / matrix[index].sum())


def test_saved_regressor_gets_regression_metrics_and_a_residual_plot(tmp_path: Path) -> None:
    train_table, test_table, meta = load_split("diabetes")
    pipeline = saved_linear_model(train_table, meta, tmp_path / "model")

    evaluation = evaluate(str(tmp_path / "model"), test_table, meta, "linear")
    metrics, figures, curve = evaluation.metrics, evaluation.figures, evaluation.curve

    assert set(metrics) == REGRESSION_METRICS
    predicted = pipeline.predict(raw_features(test_table, meta))
    assert metrics["r2"] == pytest.approx(r2_score(test_table[meta.target], predicted))
    assert metrics["r2"] > 0.3
    assert 0 < metrics["mae"] <= metrics["rmse"]
    assert set(figures) == {"residuals.png"}
    assert is_png(figures["residuals.png"])
    assert curve is None
    assert evaluation.per_class is None
