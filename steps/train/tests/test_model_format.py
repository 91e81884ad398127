"""How a fitted model is stored: skops trusting the types derived from the model itself, and
cloudpickle, with the reason said, for a model holding what mlrig cannot vouch for."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import skops.io
import yaml
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.train import fit, raw_features
from steps.train.model_format import (
    CLOUDPICKLE,
    SKOPS,
    TAG_SERIALIZATION,
    TAG_SERIALIZATION_REASON,
    model_format,
    save_model,
    vouched_for,
)
from steps.train.params import TrainParams

TEAM_MODULE = """
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class TeamClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        self.model_ = LogisticRegression(C=self.C, max_iter=5000).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)
"""


def fitted(family: str, **experiment):
    table, meta = ingest(IngestParams(source="builtin:breast_cancer"), Path.cwd())
    table = table.sample(n=150, random_state=0).reset_index(drop=True)
    train = TrainParams.model_validate(
        {"experiments": {"x": {"family": family, **experiment}}, "seed": 0}
    )
    return fit(table, meta, "x", train)[0], raw_features(table, meta)


@pytest.mark.parametrize(
    ("family", "experiment"),
    [
        ("random_forest", {"params": {"n_estimators": 5}}),
        ("knn", {}),
        ("xgboost", {"params": {"n_estimators": 5}}),
        ("lightgbm", {"params": {"n_estimators": 5}}),
        ("estimator", {"class": "sklearn.svm.SVC", "params": {"probability": True}}),
    ],
)
def test_the_trusted_types_are_those_skops_reports_for_the_fitted_model(
    family: str, experiment: dict
) -> None:
    pipeline, _ = fitted(family, **experiment)

    fmt = model_format(pipeline, family)

    reported = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    assert fmt.serialization == SKOPS and fmt.reason == ""
    assert fmt.trusted_types == sorted(reported)
    assert fmt.tags() == {TAG_SERIALIZATION: SKOPS, "mlrig.model.flavors": ",".join(fmt.flavors)}


def test_the_trusted_types_follow_the_model_not_a_fixed_list() -> None:
    forest = model_format(fitted("random_forest", params={"n_estimators": 5})[0], "random_forest")
    boosted = model_format(fitted("xgboost", params={"n_estimators": 5})[0], "xgboost")

    assert "sklearn.tree._tree.Tree" in forest.trusted_types
    assert "xgboost.core.Booster" in boosted.trusted_types
    assert "sklearn.tree._tree.Tree" not in boosted.trusted_types


@pytest.mark.parametrize(
    ("name", "vouched"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("xgboost.core.Booster", True),
        ("numpy.log1p", True),
        ("sklearn.utils.validation.check_array", True),  # held by histogram boosting
        ("collections.OrderedDict", True),
        ("functools.partial", True),
        ("builtins.eval", False),
        ("posix.system", False),
        ("team_models.TeamClassifier", False),
        ("sklearn.no_such_module.Thing", False),
    ],
)
def test_what_mlrig_vouches_for(name: str, vouched: bool) -> None:
    assert vouched_for(name) is vouched


def test_a_team_class_is_saved_with_cloudpickle_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "team_models.py").write_text(TEAM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    pipeline, raw = fitted("estimator", **{"class": "team_models.TeamClassifier"})

    fmt = model_format(pipeline, "estimator")
    save_model(tmp_path / "model", pipeline=pipeline, fmt=fmt, input_example=raw.head(2))

    assert fmt.serialization == CLOUDPICKLE
    assert fmt.reason.startswith("skops cannot vouch for team_models.TeamClassifier")
    assert fmt.tags()[TAG_SERIALIZATION_REASON] == fmt.reason
    flavor = yaml.safe_load((tmp_path / "model/MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == CLOUDPICKLE
    assert "cloudpickle" in (tmp_path / "model/requirements.txt").read_text()
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    np.testing.assert_array_equal(served.predict(raw.head(10)), pipeline.predict(raw.head(10)))


def test_a_function_from_elsewhere_in_the_model_is_not_vouched_for() -> None:
    import math

    pipeline = Pipeline([("root", FunctionTransformer(math.sqrt))])

    fmt = model_format(pipeline, "estimator")

    assert fmt.serialization == CLOUDPICKLE and "math.sqrt" in fmt.reason
