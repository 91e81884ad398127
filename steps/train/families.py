"""Model families: params.yaml names a family, this builds its scikit-learn pipeline.

Every pipeline starts with the features' encoding (steps/train/features.py: imputation per
column type, categories, date parts, scaling for the families that need it), so the logged
model takes the raw feature columns (and MLflow serves it as is). The xgboost and lightgbm
families are the libraries' scikit-learn estimators, splitting the categorical columns natively;
`estimator` is a team's own class (steps/train/estimator.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlrig.errors import DataError
from mlrig.experiments.params import Section, TaskKind
from mlrig.experiments.tables import TableMeta
from steps.train.estimator import build_own_estimator
from steps.train.features import build_preprocessor
from steps.train.params import (
    BaselineParams,
    BoosterParams,
    EstimatorParams,
    GradientBoostingParams,
    KnnParams,
    LightGBMParams,
    LinearParams,
    RandomForestParams,
    XGBoostParams,
)

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

SCALED_FAMILIES = frozenset({"linear", "knn"})
#: the tree families: categories as ordinal codes rather than one-hot columns
NATIVE_CATEGORICAL_FAMILIES = frozenset(
    {"random_forest", "gradient_boosting", "xgboost", "lightgbm"}
)
#: the families whose library keeps its own model format and MLflow flavor (train logs the
#: fitted booster with it, beside the pipeline)
BOOSTER_FAMILIES = frozenset({"xgboost", "lightgbm"})
#: the name of the booster inside the label-encoding wrapper of an XGBoost classifier
XGBOOST_STEP = "xgboost"


def build_estimator(params: Section, task: TaskKind, seed: int) -> BaseEstimator:
    """The bare estimator for a family's params and the task."""
    from sklearn import dummy, ensemble, linear_model, neighbors

    classify = task == "classification"
    match params:
        case LinearParams(C=c, max_iter=max_iter):
            if classify:
                return linear_model.LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
            return linear_model.Ridge(alpha=1.0 / c, max_iter=max_iter)
        case RandomForestParams():
            forest = ensemble.RandomForestClassifier if classify else ensemble.RandomForestRegressor
            options = params.model_dump(exclude={"max_samples"})  # set by the rows: fit_pipeline
            return forest(**options, random_state=seed, n_jobs=-1)
        case GradientBoostingParams():
            boosting = (
                ensemble.HistGradientBoostingClassifier
                if classify
                else ensemble.HistGradientBoostingRegressor
            )
            return boosting(**params.model_dump(), random_state=seed)
        case KnnParams():
            knn = neighbors.KNeighborsClassifier if classify else neighbors.KNeighborsRegressor
            return knn(**params.model_dump(exclude={"max_train_rows"}))  # fit_pipeline samples
        case BaselineParams():
            return dummy.DummyClassifier(strategy="prior") if classify else dummy.DummyRegressor()
        case XGBoostParams():
            return build_xgboost(params, classify, seed)
        case LightGBMParams():
            return build_lightgbm(params, classify, seed)
        case EstimatorParams():
            return build_own_estimator(params, task, seed)
    raise TypeError(f"no estimator for {type(params).__name__}")  # the params schema prevents this


def build_xgboost(params: XGBoostParams, classify: bool, seed: int) -> BaseEstimator:
    """XGBoost's estimator; a classifier inside scikit-learn's label encoding.

    XGBoost's classifier takes the classes 0..n-1 only, where a table's labels are any values
    (`yes`/`no`, 3/5/7). A soft-voting ensemble of this one classifier is scikit-learn's own
    label encoder around it: its probabilities are XGBoost's, its classes the table's.
    """
    import xgboost
    from sklearn.ensemble import VotingClassifier

    options = {
        **params.model_dump(exclude={"early_stopping_rounds", "validation_fraction", "extra"}),
        **params.extra,
        "enable_categorical": True,  # categorical columns are split on natively
        "random_state": seed,
    }
    if not classify:
        return xgboost.XGBRegressor(**options)
    return VotingClassifier([(XGBOOST_STEP, xgboost.XGBClassifier(**options))], voting="soft")


def build_lightgbm(params: LightGBMParams, classify: bool, seed: int) -> BaseEstimator:
    """LightGBM's estimator (it splits on pandas categorical columns natively)."""
    import lightgbm

    options = params.model_dump(exclude={"early_stopping_rounds", "validation_fraction", "extra"})
    options["max_depth"] = -1 if params.max_depth is None else params.max_depth  # -1: no limit
    # LightGBM samples rows only every subsample_freq rounds: 0 (its default) would ignore it
    options["subsample_freq"] = 1 if params.subsample < 1.0 else 0
    options |= {**params.extra, "random_state": seed, "verbose": -1}
    estimator = lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor
    return estimator(**options)


def booster_of(model: BaseEstimator) -> BaseEstimator:
    """The library's own estimator in a booster family's model step (fitted or not): XGBoost's
    classifier inside its label encoding, else the step itself."""
    from sklearn.ensemble import VotingClassifier

    if isinstance(model, VotingClassifier):
        fitted = getattr(model, "estimators_", None)
        return fitted[0] if fitted else model.estimators[0][1]
    return model


def fit_pipeline(
    pipeline: Pipeline,
    params: Section,
    features: pd.DataFrame,
    target: pd.Series,
    meta: TableMeta,
    seed: int,
) -> dict[str, float]:
    """Fit the pipeline on the train split (the raw feature columns). A booster splits the
    categorical columns natively (`mark_categories`) and, asked to stop early, first finds its
    number of rounds on a seeded validation slice of the split (`stopping_rounds`).

    Returns:
        What the fit found, for the run's metrics: `best_iteration` (rounds kept) when it
        stopped early, else nothing.
    """
    if isinstance(params, KnnParams | RandomForestParams):
        return fit_within_limits(pipeline, params, features, target, meta.task, seed)
    if not isinstance(params, BoosterParams):
        pipeline.fit(features, target)
        return {}
    found: dict[str, float] = {}
    if params.early_stopping_rounds is not None:
        rounds = stopping_rounds(pipeline, params, features, target, meta, seed)
        booster_of(pipeline[-1]).set_params(n_estimators=rounds)
        found["best_iteration"] = rounds
    encoded = pipeline[:-1].fit_transform(features, target)
    categories = mark_categories(booster_of(pipeline[-1]), encoded.shape[1], meta)
    pipeline[-1].fit(encoded, target, **categories)
    return found


def fit_within_limits(
    pipeline: Pipeline,
    params: KnnParams | RandomForestParams,
    features: pd.DataFrame,
    target: pd.Series,
    task: TaskKind,
    seed: int,
) -> dict[str, float]:
    """Fit a family whose cost grows past use with the rows, within its scale-aware limit
    (`scale_note` says what it did): knn keeps a seeded sample of `max_train_rows` rows, each
    tree of a forest sees a bootstrap sample of `max_samples` rows.

    Returns:
        `fitted_rows`: the rows the model was fitted on (knn), or each tree drew (forest).
    """
    rows = len(target)
    if isinstance(params, KnnParams):
        if params.max_train_rows is not None and rows > params.max_train_rows:
            kept = bounded_sample(target, params.max_train_rows, task, seed)
            features, target = features.iloc[kept], target.iloc[kept]
        pipeline.fit(features, target)
        return {"fitted_rows": float(len(target))}
    limited = params.max_samples is not None and rows > params.max_samples
    pipeline[-1].set_params(max_samples=params.max_samples if limited else None)
    pipeline.fit(features, target)
    return {"fitted_rows": float(params.max_samples if limited else rows)}


def bounded_sample(target: pd.Series, size: int, task: TaskKind, seed: int) -> Any:
    """Sorted positions of a seeded sample of `size` rows, by class for classification (a
    class too rare to stratify on leaves the sample plain random)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(target))
    stratify = target if task == "classification" else None
    try:
        kept, _ = train_test_split(positions, train_size=size, random_state=seed, stratify=stratify)
    except ValueError:  # a class with a single row cannot be stratified on
        kept, _ = train_test_split(positions, train_size=size, random_state=seed)
    return np.sort(kept)


def scale_note(params: Section, rows: int) -> str | None:
    """What a scale-aware limit did to a fit on `rows` train rows, and why; None when the
    rows were within it (and for the families without one)."""
    knn_limit = params.max_train_rows if isinstance(params, KnnParams) else None
    forest_limit = params.max_samples if isinstance(params, RandomForestParams) else None
    if knn_limit is not None and rows > knn_limit:
        return (
            f"knn kept a seeded sample of {knn_limit} of the {rows} train rows "
            "(max_train_rows): each prediction measures its distance to every kept row, so "
            "scoring costs test rows x kept rows; set max_train_rows: null to keep them all"
        )
    if forest_limit is not None and rows > forest_limit:
        return (
            f"each tree was grown on a bootstrap sample of {forest_limit} of the {rows} train "
            "rows (max_samples): a forest's fit grows with the rows each tree sees; set "
            "max_samples: null for all of them"
        )
    return None


def mark_categories(booster: BaseEstimator, columns: int, meta: TableMeta) -> dict[str, Any]:
    """Tell a booster which of its `columns` encoded inputs are categories: the first ones, a
    code per categorical column (steps/train/features.py). XGBoost takes them as its
    `feature_types`; LightGBM as `categorical_feature` of its fit, returned here.
    """
    import lightgbm

    categories = len(meta.features_with_role("categorical"))
    if not categories:
        return {}
    if isinstance(booster, lightgbm.LGBMModel):
        return {"categorical_feature": list(range(categories))}
    booster.set_params(feature_types=["c"] * categories + ["q"] * (columns - categories))
    return {}


def stopping_rounds(
    pipeline: Pipeline,
    params: BoosterParams,
    features: pd.DataFrame,
    target: pd.Series,
    meta: TableMeta,
    seed: int,
) -> int:
    """The rounds a booster keeps when it stops early on a validation slice of the train split.

    A copy of the pipeline's encoding is fitted on the rest, the booster on its encoding with
    the slice as its evaluation set; the pipeline is then fitted on the whole train split with
    that many rounds (so the slice's rows train the model too).

    Raises:
        DataError: the slice cannot hold a row of every class.
    """
    import lightgbm
    from sklearn.base import clone
    from sklearn.preprocessing import LabelEncoder

    fit_rows, check_rows = validation_slice(target, params.validation_fraction, meta.task, seed)
    encoding = clone(pipeline[:-1])
    fit_features = encoding.fit_transform(features.iloc[fit_rows], target.iloc[fit_rows])
    check_features = encoding.transform(features.iloc[check_rows])
    fit_target, check_target = target.iloc[fit_rows], target.iloc[check_rows]
    if meta.task == "classification":  # XGBoost needs the classes as 0..n-1
        labels = LabelEncoder().fit(fit_target)
        fit_target, check_target = labels.transform(fit_target), labels.transform(check_target)
    booster = clone(booster_of(pipeline[-1]))
    evaluation: dict[str, Any] = {
        "eval_set": [(check_features, check_target)],
        **mark_categories(booster, fit_features.shape[1], meta),
    }
    if isinstance(params, LightGBMParams):
        rounds = params.early_stopping_rounds
        evaluation["callbacks"] = [lightgbm.early_stopping(rounds, verbose=False)]
        booster.fit(fit_features, fit_target, **evaluation)
        return int(booster.best_iteration_) or int(booster.n_estimators)
    booster.set_params(early_stopping_rounds=params.early_stopping_rounds)
    booster.fit(fit_features, fit_target, verbose=False, **evaluation)
    return int(booster.best_iteration) + 1  # XGBoost counts from 0


def validation_slice(
    target: pd.Series, fraction: float, task: TaskKind, seed: int
) -> tuple[Any, Any]:
    """Row positions of the train split to fit on and to stop early on: `fraction` of the
    rows, seeded, with every class in both for classification.

    Raises:
        DataError: a class has too few rows to be in both.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(target))
    stratify = target if task == "classification" else None
    try:
        return train_test_split(positions, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as error:
        raise DataError(
            f"The validation slice for early stopping ({fraction:.0%} of the "
            f"{len(target)} train rows, validation_fraction) cannot be cut: {error}. Raise "
            "validation_fraction, use more data, or leave early_stopping_rounds out."
        ) from None


def build_pipeline(family: str, params: Section, meta: TableMeta, seed: int) -> Pipeline:
    """The features' encoding (`build_preprocessor`), then the family's estimator."""
    from sklearn.pipeline import Pipeline

    native = family in NATIVE_CATEGORICAL_FAMILIES
    features = build_preprocessor(meta, native_categorical=native, scale=family in SCALED_FAMILIES)
    model = build_estimator(params, meta.task, seed)
    categories = len(meta.features_with_role("categorical"))
    if native and categories and "categorical_features" in model.get_params():
        # histogram gradient boosting splits the ordinal codes (the first columns) as categories
        model.set_params(categorical_features=list(range(categories)))
    return Pipeline([("features", features), ("model", model)])
