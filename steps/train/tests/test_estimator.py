"""`family: estimator`: a team's own class by its import path, checked at preflight (it imports,
fits the task, takes its params: each refusal names its key in params.yaml, exit 2), then
fitted, seeded and logged like any family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlrig.errors import EXIT_BAD_INPUT, ParamsError
from mlrig.experiments.params import validate_params
from mlrig.experiments.tables import TableMeta
from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.train import fit, raw_features
from steps.train.estimator import check_estimator
from steps.train.params import TrainParams
from steps.train.preflight import preflight
from tests.support.project import REPO_ROOT

TEAM_MODULE = '''
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class TeamClassifier(ClassifierMixin, BaseEstimator):
    """A team's own classifier: logistic regression on the features squared as well."""

    def __init__(self, C=1.0, random_state=None):
        self.C = C
        self.random_state = random_state

    def _expanded(self, X):
        import numpy as np

        X = np.asarray(X, dtype=float)
        return np.hstack([X, X**2])

    def fit(self, X, y):
        self.model_ = LogisticRegression(C=self.C, max_iter=2000).fit(self._expanded(X), y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(self._expanded(X))

    def predict_proba(self, X):
        return self.model_.predict_proba(self._expanded(X))


class Unrelated:
    """Imports fine, is no estimator."""
'''


@pytest.fixture
def team_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A team's module on the import path, as an installed package of theirs would be."""
    (tmp_path / "team_models.py").write_text(TEAM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "team_models"


def dataset(name: str = "breast_cancer") -> tuple[Any, TableMeta]:
    table, meta = ingest(IngestParams(source=f"builtin:{name}"), Path.cwd())
    return table.sample(n=150, random_state=0).reset_index(drop=True), meta


def experiment(class_path: str, **params: Any) -> Any:
    train = TrainParams.model_validate(
        {"experiments": {"own": {"family": "estimator", "class": class_path, "params": params}}}
    )
    return train.experiments["own"]


def refusal(class_path: str, task: str = "classification", **params: Any) -> str:
    """What preflight says of an estimator experiment `own`; it must be a params error."""
    with pytest.raises(ParamsError) as caught:
        check_estimator("own", experiment(class_path, **params), task)  # type: ignore[arg-type]
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


def test_a_class_path_that_does_not_import_is_named_by_its_key() -> None:
    message = refusal("sklearn.svm.SVX")
    assert message.startswith("train.experiments.own.class: sklearn.svm.SVX cannot be imported")
    assert "has no attribute 'SVX'" in message

    message = refusal("teams_missing_package.models.Model")
    assert message.startswith("train.experiments.own.class: teams_missing_package.models.Model")
    assert "No module named 'teams_missing_package'" in message


def test_a_regressor_for_a_classification_task_is_refused() -> None:
    message = refusal("sklearn.svm.SVR")
    assert message.startswith("train.experiments.own.class: sklearn.svm.SVR is a regressor")
    assert "the task is classification" in message and "give a classifier class" in message


def test_a_classifier_for_a_regression_task_is_refused() -> None:
    message = refusal("sklearn.tree.DecisionTreeClassifier", task="regression")
    assert "DecisionTreeClassifier is a classifier, and the task is regression" in message


def test_a_param_the_class_does_not_take_is_named_with_the_class_params() -> None:
    message = refusal("sklearn.svm.SVC", gama=0.1, probability=True)
    assert message.startswith("train.experiments.own.params.gama: SVC takes no param 'gama'")
    assert "gamma" in message  # its params are listed


def test_a_classifier_without_probabilities_is_refused_saying_how_to_get_them() -> None:
    message = refusal("sklearn.svm.SVC")
    assert message.startswith("train.experiments.own.class: sklearn.svm.SVC gives no class")
    assert "params.probability: true" in message
    check_estimator("own", experiment("sklearn.svm.SVC", probability=True), "classification")


def test_a_class_without_the_estimator_api_is_refused(team_package: str) -> None:
    message = refusal(f"{team_package}.Unrelated")
    assert message.startswith("train.experiments.own.class: team_models.Unrelated is no estimator")
    assert "fit, predict, get_params, set_params" in message


def test_a_malformed_class_path_is_a_schema_error(tmp_path: Path) -> None:
    document = {"train": {"experiments": {"own": {"family": "estimator", "class": "SVC"}}}}
    with pytest.raises(ParamsError) as caught:
        validate_params(json.loads(json.dumps(document)), "params.yaml", REPO_ROOT)
    assert "train.experiments.own.class: give the class's import path" in str(caught.value)


def test_preflight_checks_every_estimator_experiment_against_the_inferred_task() -> None:
    table, meta = dataset("diabetes")  # regression
    document = {
        "train": {
            "experiments": {
                "forest": {"family": "random_forest"},
                "svm": {"family": "estimator", "class": "sklearn.svm.SVC"},
            }
        }
    }
    params = validate_params(document, "params.yaml", REPO_ROOT)
    with pytest.raises(ParamsError, match=r"^train.experiments.svm.class: sklearn.svm.SVC is a"):
        preflight(params, REPO_ROOT, {"ingest": (table, meta)})
    regression = {"svm": {"family": "estimator", "class": "sklearn.svm.SVR"}}
    document["train"]["experiments"] = regression
    preflight(
        validate_params(document, "params.yaml", REPO_ROOT), REPO_ROOT, {"ingest": (table, meta)}
    )


def test_a_team_class_is_fitted_seeded_and_predicts_the_tables_labels(team_package: str) -> None:
    table, meta = dataset()
    table = table.assign(target=np.where(table["target"] == 1, "benign", "malignant"))
    train = TrainParams.model_validate(
        {
            "seed": 7,
            "experiments": {
                "own": {"family": "estimator", "class": f"{team_package}.TeamClassifier"}
            },
        }
    )

    pipeline, _ = fit(table, meta, "own", train)

    model = pipeline[-1]
    assert type(model).__module__ == "team_models" and model.random_state == 7
    assert set(pipeline.predict(raw_features(table, meta))) == {"benign", "malignant"}


def test_a_seed_the_params_give_is_kept() -> None:
    table, meta = dataset()
    train = TrainParams.model_validate(
        {
            "seed": 7,
            "experiments": {
                "tree": {
                    "family": "estimator",
                    "class": "sklearn.tree.DecisionTreeClassifier",
                    "params": {"random_state": 3, "max_depth": 2},
                }
            },
        }
    )
    model = fit(table, meta, "tree", train)[0][-1]
    assert (model.random_state, model.max_depth) == (3, 2)
