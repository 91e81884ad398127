"""The xgboost and lightgbm families: the table's labels, early stopping on a seeded validation
slice of the train split, their params, and a model that pyfunc serves from the raw columns
while the booster loads with the library's own MLflow flavor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from mlrig.errors import DataError
from mlrig.experiments.tables import TableMeta
from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.train import raw_features
from steps.train.families import booster_of
from steps.train.model_format import model_format, save_model
from steps.train.params import TrainParams
from steps.train.train import fit_experiment

BOOSTERS = ("xgboost", "lightgbm")
FAST: dict[str, dict[str, Any]] = {
    "xgboost": {"n_estimators": 30},
    "lightgbm": {"n_estimators": 30, "min_child_samples": 5},
}


def labelled_table(rows: int = 300) -> tuple[pd.DataFrame, TableMeta]:
    """breast_cancer with text labels, as a team's CSV has them."""
    table, meta = ingest(IngestParams(source="builtin:breast_cancer"), Path.cwd())
    table = table.sample(n=rows, random_state=0).reset_index(drop=True)
    labels = np.where(table["target"] == 1, "benign", "malignant")
    return table.assign(target=labels), meta.model_copy(update={"classes": ["benign", "malignant"]})


def regression_table() -> tuple[pd.DataFrame, TableMeta]:
    return ingest(IngestParams(source="builtin:diabetes"), Path.cwd())


def train_params(family: str, seed: int = 42, **params: Any) -> TrainParams:
    experiment = {"family": family, "params": {**FAST[family], **params}}
    return TrainParams.model_validate({"seed": seed, "experiments": {family: experiment}})


def fitted(family: str, table: pd.DataFrame, meta: TableMeta, seed: int = 42, **params: Any):
    return fit_experiment(table, meta, family, train_params(family, seed, **params))


def features(table: pd.DataFrame, meta: TableMeta) -> pd.DataFrame:
    return raw_features(table, meta)


@pytest.mark.parametrize("family", BOOSTERS)
def test_a_booster_predicts_the_tables_own_labels(family: str) -> None:
    """XGBoost's classifier takes classes 0..n-1 only: the model still answers in the labels."""
    table, meta = labelled_table()

    pipeline, _, found = fitted(family, table, meta)

    assert list(pipeline.classes_) == ["benign", "malignant"]
    predicted = pipeline.predict(features(table, meta))
    assert set(predicted) == {"benign", "malignant"}
    assert (predicted == table["target"]).mean() > 0.9
    assert found == {}  # no early stopping asked


@pytest.mark.parametrize("family", BOOSTERS)
@pytest.mark.parametrize("data", [labelled_table, regression_table])
def test_early_stopping_keeps_the_rounds_found_on_the_validation_slice(family: str, data) -> None:
    table, meta = data()

    pipeline, _, found = fitted(
        family, table, meta, n_estimators=400, learning_rate=0.3, early_stopping_rounds=5
    )
    again = fitted(
        family, table, meta, n_estimators=400, learning_rate=0.3, early_stopping_rounds=5
    )[2]

    rounds = found["best_iteration"]
    assert 1 <= rounds < 400
    assert booster_of(pipeline[-1]).get_params()["n_estimators"] == rounds
    assert again == found  # the slice is seeded


def test_a_different_validation_fraction_stops_elsewhere() -> None:
    table, meta = labelled_table()
    stop = {"n_estimators": 400, "learning_rate": 0.3, "early_stopping_rounds": 5}

    tenth = fitted("xgboost", table, meta, **stop, validation_fraction=0.1)[2]
    half = fitted("xgboost", table, meta, **stop, validation_fraction=0.5)[2]

    assert tenth != half


def test_a_class_too_rare_for_the_validation_slice_is_a_data_error() -> None:
    table, meta = labelled_table()
    rare = table.assign(target=table["target"].where(table.index > 0, "cyst"))
    with pytest.raises(DataError, match=r"validation slice for early stopping \(10% of the 300"):
        fitted("lightgbm", rare, meta, early_stopping_rounds=5)


@pytest.mark.parametrize("family", BOOSTERS)
def test_params_reach_the_library_and_extra_passes_through(family: str) -> None:
    table, meta = labelled_table()
    extra = {"gamma": 0.5} if family == "xgboost" else {"min_split_gain": 0.01}

    pipeline = fitted(family, table, meta, seed=5, learning_rate=0.05, extra=extra)[0]

    options = booster_of(pipeline[-1]).get_params()
    assert options["learning_rate"] == 0.05 and options["random_state"] == 5
    assert all(options[name] == value for name, value in extra.items())


@pytest.mark.parametrize("family", BOOSTERS)
def test_the_model_serves_raw_columns_and_the_booster_loads_with_its_flavor(
    family: str, tmp_path: Path
) -> None:
    table, meta = labelled_table()
    pipeline = fitted(family, table, meta)[0]
    raw = features(table, meta)
    fmt = model_format(pipeline, family)

    save_model(tmp_path / "model", pipeline=pipeline, fmt=fmt, input_example=raw.head(3))

    flavors = yaml.safe_load((tmp_path / "model/MLmodel").read_text())["flavors"]
    assert set(flavors) == {"python_function", "sklearn", family}
    assert flavors["python_function"]["loader_module"] == "mlflow.sklearn"
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    np.testing.assert_array_equal(served.predict(raw.head(20)), pipeline.predict(raw.head(20)))
    encoded = pipeline[:-1].transform(raw.head(20))
    expected = pipeline.predict_proba(raw.head(20))[:, 1]
    if family == "xgboost":
        booster = mlflow.xgboost.load_model(str(tmp_path / "model"))
        np.testing.assert_allclose(booster.predict_proba(encoded)[:, 1], expected, rtol=1e-6)
    else:
        booster = mlflow.lightgbm.load_model(str(tmp_path / "model"))
        np.testing.assert_allclose(booster.predict(encoded), expected, rtol=1e-6)


def test_the_xgboost_model_requires_the_cpu_build_it_was_fitted_with(tmp_path: Path) -> None:
    """MLflow's xgboost flavor would name `xgboost`, whose wheel brings CUDA's libraries."""
    from importlib.metadata import version

    table, meta = labelled_table()
    pipeline = fitted("xgboost", table, meta)[0]

    save_model(tmp_path / "model", pipeline=pipeline, fmt=model_format(pipeline, "xgboost"))

    requirements = (tmp_path / "model/requirements.txt").read_text().split()
    assert f"xgboost-cpu=={version('xgboost-cpu')}" in requirements
    assert not any(line.startswith("xgboost==") for line in requirements)


def test_the_boosters_split_the_categorical_columns_natively(tmp_path: Path) -> None:
    """The categorical columns reach XGBoost and LightGBM as categories (codes first), not as
    ordered numbers, and the early-stopping fit marks them too."""
    from tests.support.tables import mixed_table

    (tmp_path / "data").mkdir()
    mixed_table(rows=240).to_csv(tmp_path / "data" / "customers.csv", index=False)
    params = IngestParams(
        source="data/customers.csv", target="outcome", columns={"customer_id": "drop"}
    )
    table, meta = ingest(params, tmp_path)
    categorical = meta.features_with_role("categorical")
    assert categorical  # city, visits

    stop = {"early_stopping_rounds": 5, "min_data_per_group": 5}
    lightgbm = booster_of(fitted("lightgbm", table, meta, **stop)[0][-1])
    xgboost = booster_of(fitted("xgboost", table, meta, early_stopping_rounds=5)[0][-1])

    assert lightgbm.booster_.params["categorical_column"] == list(range(len(categorical)))
    types = xgboost.get_params()["feature_types"]
    assert types[: len(categorical)] == ["c"] * len(categorical)
    assert set(types[len(categorical) :]) == {"q"}
