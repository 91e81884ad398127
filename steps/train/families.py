"""Model families: params.yaml names a family, this builds its scikit-learn pipeline.

Every pipeline starts with the features' encoding (steps/train/features.py: imputation per
column type, categories, date parts, scaling for the families that need it), so the logged
model takes the raw feature columns (and MLflow serves it as is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlrig.experiments.params import Section, TaskKind
from mlrig.experiments.tables import TableMeta
from steps.train.features import build_preprocessor
from steps.train.params import (
    BaselineParams,
    GradientBoostingParams,
    KnnParams,
    LinearParams,
    RandomForestParams,
)

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

SCALED_FAMILIES = frozenset({"linear", "knn"})
#: the tree families: categories as ordinal codes rather than one-hot columns
NATIVE_CATEGORICAL_FAMILIES = frozenset({"random_forest", "gradient_boosting"})
# MLflow stores models with skops, which loads only reviewed types: these are the ones the
# families' pipelines hold (each listed by skops.io.get_untrusted_types on a fitted pipeline).
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "steps.train.dates.DateParts",
    # histogram gradient boosting with categorical features checks its input with these
    "functools.partial",
    "sklearn.utils.validation.check_array",
]


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
            return forest(**params.model_dump(), random_state=seed, n_jobs=-1)
        case GradientBoostingParams():
            boosting = (
                ensemble.HistGradientBoostingClassifier
                if classify
                else ensemble.HistGradientBoostingRegressor
            )
            return boosting(**params.model_dump(), random_state=seed)
        case KnnParams():
            knn = neighbors.KNeighborsClassifier if classify else neighbors.KNeighborsRegressor
            return knn(**params.model_dump())
        case BaselineParams():
            return dummy.DummyClassifier(strategy="prior") if classify else dummy.DummyRegressor()
    raise TypeError(f"no estimator for {type(params).__name__}")  # the params schema prevents this


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
