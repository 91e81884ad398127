"""Train step: every model family fits for both tasks, seeds reproduce, fitted models behave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from mlrig.errors import ParamsError
from mlrig.experiments.tables import TableMeta
from mlrig.settings import Settings
from mlrig.tracking.step_run import setup_mlflow
from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.train import fit, raw_features
from steps.train.model_format import SKOPS, model_format, save_model
from steps.train.params import TrainParams
from steps.train.train import save_and_log_model

FAMILIES = (
    "linear",
    "random_forest",
    "gradient_boosting",
    "knn",
    "baseline",
    "xgboost",
    "lightgbm",
)
SCALED = {"linear", "knn"}
# small settings, so the whole family-by-task matrix fits in a few seconds
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "linear": {},
    "random_forest": {"n_estimators": 25},
    "gradient_boosting": {"max_iter": 20},
    "knn": {"n_neighbors": 5},
    "baseline": {},
    "xgboost": {"n_estimators": 20},
    "lightgbm": {"n_estimators": 20, "min_child_samples": 5},
}
TASK_DATASET = {"classification": "breast_cancer", "regression": "diabetes"}


def load_dataset(name: str, rows: int | None = None) -> tuple[pd.DataFrame, TableMeta]:
    """A bundled scikit-learn dataset as the ingest step leaves it: table plus meta."""
    table, meta = ingest(IngestParams(source=f"builtin:{name}"), Path.cwd())
    if rows is None:
        return table, meta
    sample = table.sample(n=rows, random_state=0).reset_index(drop=True)
    return sample, meta.model_copy(update={"rows": rows})


def split(table: pd.DataFrame, meta: TableMeta) -> tuple[pd.DataFrame, pd.DataFrame]:
    stratify = table[meta.target] if meta.task == "classification" else None
    train_table, test_table = train_test_split(
        table, test_size=0.25, random_state=0, stratify=stratify
    )
    return train_table.reset_index(drop=True), test_table.reset_index(drop=True)


def experiment_params(family: str, seed: int = 42, **params: Any) -> TrainParams:
    """`train` params with one experiment named after its family."""
    return TrainParams.model_validate(
        {
            "seed": seed,
            "experiments": {
                family: {"family": family, "params": {**FAST_PARAMS[family], **params}}
            },
        }
    )


def fit_family(
    family: str, train_table: pd.DataFrame, meta: TableMeta, seed: int = 42, **params: Any
) -> Pipeline:
    return fit(train_table, meta, family, experiment_params(family, seed, **params))[0]


def features(table: pd.DataFrame, meta: TableMeta) -> pd.DataFrame:
    return raw_features(table, meta)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fits_for_the_task(family: str, task: str) -> None:
    table, meta = load_dataset(TASK_DATASET[task], rows=200)

    pipeline, fit_seconds = fit(table, meta, family, experiment_params(family))

    assert [name for name, _ in pipeline.steps] == ["features", "model"]
    assert is_classifier(pipeline) if task == "classification" else is_regressor(pipeline)
    assert fit_seconds > 0
    predicted = pipeline.predict(features(table, meta))
    assert len(predicted) == len(table)
    if task == "classification":
        assert set(predicted) <= set(table["target"])
        probabilities = pipeline.predict_proba(features(table, meta))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    else:
        assert np.isfinite(predicted).all()


@pytest.mark.parametrize("family", sorted(SCALED))
def test_scaled_families_standardize_their_inputs(family: str) -> None:
    table, meta = load_dataset("breast_cancer", rows=200)

    pipeline = fit_family(family, table, meta)

    scaled = pipeline[:-1].transform(features(table, meta))
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-9)


@pytest.mark.parametrize("family", ["random_forest", "gradient_boosting", "xgboost", "lightgbm"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_same_seed_gives_the_same_model(family: str, task: str) -> None:
    table, meta = load_dataset(TASK_DATASET[task], rows=200)
    train_table, test_table = split(table, meta)
    predict = "predict_proba" if task == "classification" else "predict"

    first = getattr(fit_family(family, train_table, meta, seed=7), predict)
    second = getattr(fit_family(family, train_table, meta, seed=7), predict)

    np.testing.assert_array_equal(
        first(features(test_table, meta)), second(features(test_table, meta))
    )


def test_a_different_seed_gives_a_different_forest() -> None:
    table, meta = load_dataset("breast_cancer", rows=200)
    train_table, test_table = split(table, meta)

    seven = fit_family("random_forest", train_table, meta, seed=7)
    eight = fit_family("random_forest", train_table, meta, seed=8)

    test_features = features(test_table, meta)
    assert not np.array_equal(
        seven.predict_proba(test_features), eight.predict_proba(test_features)
    )


def test_unknown_experiment_is_a_params_error_naming_it() -> None:
    table, meta = load_dataset("breast_cancer", rows=50)
    params = TrainParams.model_validate(
        {"experiments": {"linear_c0_1": {"family": "linear"}, "knn": {"family": "knn"}}}
    )

    with pytest.raises(ParamsError, match=r"'random_forest'") as raised:
        fit(table, meta, "random_forest", params)

    message = str(raised.value)
    assert "train.experiments" in message
    assert "linear_c0_1" in message and "knn" in message


def test_random_forest_clearly_beats_the_baseline() -> None:
    """Minimum functionality: the forest learns breast_cancer, the prior does not."""
    table, meta = load_dataset("breast_cancer")
    train_table, test_table = split(table, meta)
    target = test_table[meta.target]

    forest = fit_family("random_forest", train_table, meta, n_estimators=50)
    baseline = fit_family("baseline", train_table, meta)

    forest_accuracy = accuracy_score(target, forest.predict(features(test_table, meta)))
    baseline_accuracy = accuracy_score(target, baseline.predict(features(test_table, meta)))
    assert forest_accuracy >= 0.9
    assert forest_accuracy - baseline_accuracy >= 0.2


def test_ridge_explains_diabetes_and_the_mean_does_not() -> None:
    """Minimum functionality, regression: ridge finds signal, the mean predictor has none."""
    table, meta = load_dataset("diabetes")
    train_table, test_table = split(table, meta)
    target = test_table[meta.target]

    ridge = fit_family("linear", train_table, meta)
    baseline = fit_family("baseline", train_table, meta)

    assert r2_score(target, ridge.predict(features(test_table, meta))) > 0.3
    assert r2_score(target, baseline.predict(features(test_table, meta))) < 0.05


@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_do_not_depend_on_row_order(family: str) -> None:
    """Invariance: each row is scored on its own, whatever rows come with it."""
    table, meta = load_dataset("breast_cancer", rows=200)
    train_table, test_table = split(table, meta)
    pipeline = fit_family(family, train_table, meta)
    shuffled = test_table.sample(frac=1.0, random_state=3)

    in_order = pipeline.predict_proba(features(test_table, meta))
    reordered = pipeline.predict_proba(features(shuffled, meta))

    np.testing.assert_allclose(reordered, in_order[shuffled.index.to_numpy()])


def test_column_order_of_the_table_does_not_matter() -> None:
    """Invariance: features are taken in meta order, wherever the table keeps them."""
    table, meta = load_dataset("breast_cancer", rows=200)
    train_table, test_table = split(table, meta)
    reversed_table = train_table[list(reversed(train_table.columns))]

    as_listed = fit_family("linear", train_table, meta)
    from_reversed = fit_family("linear", reversed_table, meta)

    test_features = features(test_table, meta)
    np.testing.assert_allclose(
        from_reversed.predict_proba(test_features), as_listed.predict_proba(test_features)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fits_and_predicts_with_missing_values(family: str) -> None:
    table, meta = load_dataset("breast_cancer", rows=200)
    table = table.copy()
    rng = np.random.default_rng(0)
    holes = rng.random((len(table), len(meta.features))) < 0.1
    table[meta.features] = table[meta.features].mask(holes)
    table[meta.features[0]] = np.nan  # a feature with no value at all
    train_table, test_table = split(table, meta)

    pipeline = fit_family(family, train_table, meta)

    probabilities = pipeline.predict_proba(features(test_table, meta))
    assert probabilities.shape == (len(test_table), 2)
    assert np.isfinite(probabilities).all()


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_survives_mlflow_save_and_load(family: str, task: str, tmp_path: Path) -> None:
    """Models are stored with skops, trusting the types derived from the fitted model: loading
    must not stop at an untrusted type, and predicts as the fitted pipeline does."""
    table, meta = load_dataset(TASK_DATASET[task], rows=120)
    pipeline = fit_family(family, table, meta)

    fmt = model_format(pipeline, family)
    save_model(tmp_path / "model", pipeline=pipeline, fmt=fmt)
    loaded = mlflow.sklearn.load_model(str(tmp_path / "model"))

    assert fmt.serialization == SKOPS and fmt.reason == ""
    np.testing.assert_array_equal(
        loaded.predict(features(table, meta)), pipeline.predict(features(table, meta))
    )


def test_model_is_saved_for_the_next_steps_and_logged_to_the_run(
    project_settings: Settings, tmp_path: Path
) -> None:
    table, meta = load_dataset("breast_cancer", rows=120)
    pipeline = fit_family("knn", table, meta)
    model_dir = tmp_path / "out" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "stale.txt").write_text("left from an earlier run")

    with mlflow.start_run(experiment_id=setup_mlflow(project_settings)) as run:
        model_uri, fmt = save_and_log_model(pipeline, "knn", table, meta, model_dir)

    expected = pipeline.predict(features(table, meta))
    assert not (model_dir / "stale.txt").exists()
    saved = mlflow.sklearn.load_model(str(model_dir))
    np.testing.assert_array_equal(saved.predict(features(table, meta)), expected)
    logged = mlflow.sklearn.load_model(model_uri)
    np.testing.assert_array_equal(logged.predict(features(table, meta)), expected)
    logged_model = mlflow.get_logged_model(model_uri.split("/")[-1])
    assert logged_model.source_run_id == run.info.run_id
    assert logged_model.tags["mlrig.model.serialization"] == "skops" == fmt.serialization
    assert mlflow.get_run(run.info.run_id).data.tags["mlrig.model.flavors"] == "sklearn"
    served = mlflow.pyfunc.load_model(str(model_dir))  # its signature takes the raw columns
    np.testing.assert_array_equal(served.predict(features(table, meta).head(5)), expected[:5])
    with_gap = features(table, meta).head(1).assign(**{meta.features[0]: np.nan})
    assert len(served.predict(with_gap)) == 1  # a missing value passes the signature
