"""A team's own estimator (`family: estimator`): any class with scikit-learn's estimator API,
by its import path, built with the experiment's params.

`check_estimator` is what preflight runs before any stage: the class imports, is a classifier
or a regressor as the task needs, and takes those params, each failure naming its key in
params.yaml. `build_own_estimator` is what the train step builds from it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from mlrig.errors import ParamsError
from mlrig.experiments.params import TaskKind
from steps.train.params import EstimatorExperiment, EstimatorParams

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

#: the methods mlrig calls on a model (evaluate adds predict_proba for a classifier)
ESTIMATOR_METHODS = ("fit", "predict", "get_params", "set_params")
SEED_PARAM = "random_state"


def import_estimator_class(path: str, key: str) -> type:
    """The class at `path` (package.module.ClassName).

    Raises:
        ParamsError: it does not import, or is no class with the estimator API; naming `key`.
    """
    module_name, _, class_name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except Exception as error:  # the team's module: whatever its import raises, name the key
        raise ParamsError(
            f"{key}: {path} cannot be imported ({type(error).__name__}: {error}). Give the "
            "import path of a class installed in the project's environment (e.g. "
            "sklearn.svm.SVC), or add the package that has it (uv add <package>)."
        ) from None
    missing = [name for name in ESTIMATOR_METHODS if not callable(getattr(found, name, None))]
    if not isinstance(found, type) or missing:
        lacks = f"it has no {', '.join(missing)}" if missing else "it is no class"
        raise ParamsError(
            f"{key}: {path} is no estimator class ({lacks}): a model is a class with "
            f"scikit-learn's estimator API ({', '.join(ESTIMATOR_METHODS)})."
        )
    return found


def accepted_params(estimator_class: type) -> list[str] | None:
    """The params the class's constructor names, or None when it takes any (`**kwargs`)."""
    signature = inspect.signature(estimator_class.__init__)
    parameters = list(signature.parameters.values())[1:]  # after self
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [p.name for p in parameters if p.kind is not p.VAR_POSITIONAL]


def construct(estimator_class: type, params: dict[str, Any], key: str) -> BaseEstimator:
    """The class built with `params`.

    Raises:
        ParamsError: it takes no such param, or refuses the values; naming the param's key.
    """
    accepted = accepted_params(estimator_class)
    for name in params:
        if accepted is not None and name not in accepted:
            raise ParamsError(
                f"{key}.params.{name}: {estimator_class.__name__} takes no param {name!r} "
                f"(its params: {', '.join(sorted(accepted)) or 'none'}). Fix it in params.yaml."
            )
    try:
        estimator = estimator_class(**params)
    except Exception as error:  # the team's constructor: whatever it raises, name the key
        raise ParamsError(
            f"{key}.params: {estimator_class.__name__}({_call_text(params)}) fails: "
            f"{type(error).__name__}: {error}. Fix the params in params.yaml."
        ) from None
    if stray := sorted(set(params) - set(estimator.get_params(deep=False))):
        raise ParamsError(
            f"{key}.params.{stray[0]}: {estimator_class.__name__} does not keep {stray[0]!r} "
            "among its get_params(), so the model could not be cloned or tuned with it. Give "
            "only the params its get_params() lists."
        )
    return estimator


def _call_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


def check_task(estimator: BaseEstimator, path: str, task: TaskKind, key: str) -> None:
    """Refuse a regressor for a classification task (and the other way round), and a
    classifier without class probabilities (evaluate scores ROC AUC and log loss from them).

    Raises:
        ParamsError: naming `key`.
    """
    from sklearn.base import is_classifier, is_regressor

    kind = "classifier" if is_classifier(estimator) else None
    kind = kind or ("regressor" if is_regressor(estimator) else None)
    wanted = "classifier" if task == "classification" else "regressor"
    if kind != wanted:
        what = f"a {kind}" if kind else "neither a classifier nor a regressor to scikit-learn"
        raise ParamsError(
            f"{key}: {path} is {what}, and the task is {task} (inferred at ingest from the "
            f"target, or set by ingest.task): give a {wanted} class."
        )
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        raise ParamsError(
            f"{key}: {path} gives no class probabilities (predict_proba) with these params, and "
            "evaluate scores them (ROC AUC, log loss): set the param that turns them on (for "
            "sklearn.svm.SVC, params.probability: true) or choose a class that has them."
        )


def build_own_estimator(
    params: EstimatorParams, task: TaskKind, seed: int, key: str = ""
) -> BaseEstimator:
    """The team's estimator, seeded with `seed` when it takes a `random_state` the params do
    not set.

    Raises:
        ParamsError: the class does not import, does not fit the task or the params.
    """
    key = key or f"the estimator {params.class_path}"
    kwargs = params.model_dump()
    estimator = construct(import_estimator_class(params.class_path, f"{key}.class"), kwargs, key)
    check_task(estimator, params.class_path, task, f"{key}.class")
    if SEED_PARAM in estimator.get_params(deep=False) and SEED_PARAM not in kwargs:
        estimator.set_params(**{SEED_PARAM: seed})
    return estimator


def check_estimator(name: str, experiment: EstimatorExperiment, task: TaskKind) -> None:
    """Preflight of one `estimator` experiment: it builds for the task, or the error names
    `train.experiments.<name>.class` or `.params.<param>`.

    Raises:
        ParamsError: what is wrong, with its key.
    """
    build_own_estimator(experiment.params, task, seed=0, key=f"train.experiments.{name}")
