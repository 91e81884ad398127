"""The model's features stage on a mixed table: raw columns in, each encoded by its role, every
family fitted on them, and the saved model scoring a JSON request of raw strings and dates as
`mlflow models serve` parses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlrig.experiments.tables import TableMeta
from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.train import fit, raw_features
from steps.train.families import NATIVE_CATEGORICAL_FAMILIES
from steps.train.features import build_preprocessor
from steps.train.model_format import SKOPS, model_format, save_model
from steps.train.params import TrainParams
from tests.support.tables import mixed_table

FAMILIES = (
    "linear",
    "random_forest",
    "gradient_boosting",
    "knn",
    "baseline",
    "xgboost",
    "lightgbm",
)
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "linear": {},
    "random_forest": {"n_estimators": 25},
    "gradient_boosting": {"max_iter": 30},
    "knn": {"n_neighbors": 5},
    "baseline": {},
    "xgboost": {"n_estimators": 30},
    "lightgbm": {"n_estimators": 30, "min_child_samples": 5, "min_data_per_group": 5},
}
#: a request as a caller sends it: text, JSON booleans, dates as text, gaps and an unseen city
REQUEST = {
    "columns": ["city", "member", "signup", "amount", "visits"],
    "data": [
        ["Lille", True, "2024-03-01", 51.5, 2],
        ["Paris", False, "2023-11-20", 20.0, 0],
        ["Rome", None, None, None, None],
    ],
}


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, TableMeta]:
    """The mixed table as ingest leaves it, its ID dropped."""
    root = tmp_path_factory.mktemp("project")
    (root / "data").mkdir()
    mixed_table(rows=240).to_csv(root / "data" / "customers.csv", index=False)
    params = IngestParams(
        source="data/customers.csv", target="outcome", columns={"customer_id": "drop"}
    )
    return ingest(params, root)


def experiment(family: str) -> TrainParams:
    return TrainParams.model_validate(
        {"experiments": {family: {"family": family, "params": FAST_PARAMS[family]}}}
    )


def test_raw_features_keep_each_role_in_its_type(customers) -> None:
    table, meta = customers

    features = raw_features(table, meta)

    assert list(features.columns) == meta.features
    assert dict(features.dtypes.astype(str)) == {
        "city": "str",
        "member": "boolean",
        "signup": "datetime64[ns]",
        "amount": "float64",
        "visits": "float64",
    }


def test_the_signature_lists_the_raw_columns_with_their_types(customers) -> None:
    from mlflow.models import infer_signature

    table, meta = customers

    signature = infer_signature(raw_features(table.head(5), meta))

    assert {column.name: column.type.name for column in signature.inputs.inputs} == {
        "city": "string",
        "member": "boolean",
        "signup": "datetime",
        "amount": "double",
        "visits": "double",
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_learns_the_mixed_table(family: str, customers) -> None:
    table, meta = customers
    train_table, test_table = table.iloc[:180], table.iloc[180:]

    pipeline, _ = fit(train_table, meta, family, experiment(family))

    accuracy = (pipeline.predict(raw_features(test_table, meta)) == test_table["outcome"]).mean()
    if family == "baseline":
        assert accuracy < 0.8
    else:  # churn follows city, amount and membership: every family finds it
        assert accuracy >= 0.8


def test_tree_families_take_categories_as_codes(customers) -> None:
    table, meta = customers

    one_hot = build_preprocessor(meta, native_categorical=False, scale=False)
    codes = build_preprocessor(meta, native_categorical=True, scale=False)
    features = raw_features(table, meta)

    # city (4 + missing) and visits (5) one-hot; member; signup's year, month, day, weekday
    assert one_hot.fit_transform(features).shape[1] == 5 + 5 + 1 + 1 + 4
    coded = codes.fit_transform(features)
    assert coded.shape[1] == 2 + 1 + 1 + 4  # city, visits first, as one code each
    assert set(np.unique(coded[:, 0][~np.isnan(coded[:, 0])])) == {0.0, 1.0, 2.0, 3.0}
    boosting, _ = fit(table, meta, "gradient_boosting", experiment("gradient_boosting"))
    assert boosting["model"].categorical_features == [0, 1]
    assert {"random_forest", "gradient_boosting"} <= NATIVE_CATEGORICAL_FAMILIES


def test_unknown_and_missing_values_are_scored(customers) -> None:
    table, meta = customers
    unseen = raw_features(table.head(3), meta)
    unseen["city"] = ["Rome", None, "Paris"]
    unseen["signup"] = pd.NaT

    for family in FAMILIES:
        pipeline, _ = fit(table, meta, family, experiment(family))
        assert set(pipeline.predict(unseen)) <= {"churn", "stay"}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_saved_model_scores_a_request_of_raw_values(
    family: str, customers, tmp_path: Path
) -> None:
    """What `mlflow models serve` does with a request: parse the JSON by the signature, then
    predict with the pyfunc model (schema enforced)."""
    from mlflow.models import infer_signature
    from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

    table, meta = customers
    pipeline, _ = fit(table, meta, family, experiment(family))
    example = raw_features(table.head(5), meta)
    fmt = model_format(pipeline, family)
    signature = infer_signature(example, pipeline.predict(example))
    save_model(tmp_path / "model", pipeline=pipeline, fmt=fmt, signature=signature)
    assert fmt.serialization == SKOPS, fmt.reason
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))

    request = dataframe_from_parsed_json(
        json.loads(json.dumps(REQUEST)), "split", schema=served.metadata.get_input_schema()
    )
    predictions = served.predict(request)

    assert len(predictions) == 3
    assert set(predictions) <= {"churn", "stay"}


def test_numeric_tables_are_encoded_as_before() -> None:
    """The built-in tables are all numbers: the features stage is the former imputer and
    scaler, so their models and metrics are unchanged."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table, meta = ingest(IngestParams(source="builtin:breast_cancer"), Path.cwd())
    features = raw_features(table, meta)
    before = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=1000, random_state=42),
    ).fit(table[meta.features].astype("float64"), table["target"])

    now, _ = fit(
        table,
        meta,
        "linear",
        TrainParams.model_validate(
            {"experiments": {"linear": {"family": "linear", "params": {"C": 0.1}}}}
        ),
    )

    np.testing.assert_array_equal(now.predict_proba(features), before.predict_proba(features))
