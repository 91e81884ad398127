"""The model's first stage: the raw feature columns, each encoded by its role (meta.json).

The encoding lives inside the logged model, so the model takes the table's raw columns: its
MLflow signature lists them with their types (numbers as double, booleans, text, datetimes) and
`mlflow models serve` scores raw strings, booleans and dates.

| role | encoding |
| --- | --- |
| numeric | median imputation, scaled for the families that need it |
| boolean | 0/1, the most frequent value imputed |
| categorical | one-hot (missing values a category of their own, categories rarer than `RARE_CATEGORY_ROWS` rows grouped, unknown ones into that group or ignored); or, for the tree families (`native_categorical`), ordinal codes with unknown and missing values as NaN, which the trees handle |
| datetime | year, month, day, weekday (and hour when the column holds times), median imputed |
"""  # noqa: E501

from __future__ import annotations

from typing import TYPE_CHECKING

from mlrig.experiments.tables import TableMeta

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer

#: a category seen in fewer train rows is grouped with the other rare ones ("infrequent")
RARE_CATEGORY_ROWS = 5
#: ordinal codes stay below scikit-learn's histogram bins (255), so the tree families take them
#: as categories; rarer categories beyond this many are grouped
MAX_NATIVE_CATEGORIES = 254
#: the name of the categorical transformer; with native_categorical its columns come first
CATEGORICAL = "categorical"


def raw_features(table: pd.DataFrame, meta: TableMeta) -> pd.DataFrame:
    """The feature columns in meta order, each in the type its role takes: what the model is
    fitted on and what its MLflow signature and input example are made from.

    Numbers (numeric and whole-number categories) are float64, so a caller may send integers
    or leave a value out; booleans are pandas' nullable `boolean`; dates `datetime64[ns]`; text
    categories text.
    """
    import pandas as pd
    from pandas.api import types

    columns: dict[str, pd.Series] = {}
    for name in meta.features:
        values, role = table[name], meta.role_of(name)
        if role == "boolean":
            columns[name] = values.astype("boolean")
        elif role == "datetime":
            columns[name] = values.astype("datetime64[ns]")
        elif role == "numeric" or types.is_numeric_dtype(values):
            columns[name] = values.astype("float64")
        else:
            columns[name] = values.astype("str").where(values.notna())
    return pd.DataFrame(columns, index=table.index)


def categorical_encoder(native_categorical: bool) -> BaseEstimator:
    """One-hot for most families; ordinal codes for the trees (missing and unknown: NaN)."""
    import numpy as np
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if native_categorical:
        return OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            min_frequency=RARE_CATEGORY_ROWS,
            max_categories=MAX_NATIVE_CATEGORIES,
        )
    return OneHotEncoder(
        handle_unknown="infrequent_if_exist",
        min_frequency=RARE_CATEGORY_ROWS,
        sparse_output=False,
    )


def build_preprocessor(
    meta: TableMeta, *, native_categorical: bool, scale: bool
) -> ColumnTransformer:
    """The transformer from the raw feature columns (`raw_features`) to the model's inputs.

    Args:
        meta: the table's meta: which feature has which role.
        native_categorical: categories as ordinal codes for a family that takes them as they
            are (trees); they are the first `len(meta.features_with_role("categorical"))`
            outputs. Otherwise one-hot.
        scale: standardize numbers and date parts (linear models, nearest neighbours).
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    from steps.train.dates import DateParts

    def numbers(*first: object) -> object:
        imputed = [*first, SimpleImputer(strategy="median", keep_empty_features=True)]
        return make_pipeline(*imputed, *([StandardScaler()] if scale else []))

    by_role = {
        CATEGORICAL: categorical_encoder(native_categorical),
        "numeric": numbers(),
        "boolean": make_pipeline(
            # 0/1 from booleans however they come: bool, nullable boolean, or objects with None
            OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
            ),
            SimpleImputer(strategy="most_frequent", keep_empty_features=True),
        ),
        "datetime": numbers(DateParts()),
    }
    transformers = [
        (role, encoder, meta.features_with_role(role))  # type: ignore[arg-type]
        for role, encoder in by_role.items()
        if meta.features_with_role(role)  # type: ignore[arg-type]
    ]
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
