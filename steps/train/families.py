"""Model families: params.yaml names a family, this builds its scikit-learn pipeline.

Every pipeline imputes missing values, and the families that need it scale their inputs, so the
logged model takes the raw feature columns (and MLflow serves it as is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlrig.experiments.params import Section, TaskKind
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
# MLflow stores models with skops, which loads only reviewed types: these are the ones the
# families' pipelines hold (each listed by skops.io.get_untrusted_types on a fitted pipeline).
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
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


def build_pipeline(family: str, params: Section, task: TaskKind, seed: int) -> Pipeline:
    """Imputer, scaler where the family needs one, then the estimator."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    stages: list[tuple[str, object]] = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
    ]
    if family in SCALED_FAMILIES:
        stages.append(("scale", StandardScaler()))
    stages.append(("model", build_estimator(params, task, seed)))
    return Pipeline(stages)
