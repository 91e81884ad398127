"""How a fitted pipeline is stored: MLflow's sklearn flavor, skops or cloudpickle, and the
booster families' own flavor beside it.

Every model is the whole pipeline (the encoding of the raw columns, then the estimator) in
MLflow's sklearn flavor, and that is what `python_function` loads: `mlflow models serve` and
`mlflow.pyfunc.load_model` take the raw columns. XGBoost's and LightGBM's own flavors cannot:
their pyfunc hands the frame to the library, which refuses string columns, and MLflow's schema
has no categorical type to give it. So an xgboost or lightgbm model also carries the fitted
booster in its library's own format and flavor (`mlflow.xgboost.load_model`,
`mlflow.lightgbm.load_model`), which takes the pipeline's encoded features.

skops loads only the types it is told to trust. They are derived from the fitted model: the
types skops does not trust by itself (`skops.io.get_untrusted_types`) that mlrig can vouch for,
classes and functions of the libraries the families come from. A model holding anything else (a
team's own estimator class or function) is saved with cloudpickle, and the reason is said.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.train.families import BOOSTER_FAMILIES, booster_of

if TYPE_CHECKING:
    from mlflow.models import Model, ModelSignature
    from sklearn.pipeline import Pipeline

SKOPS = "skops"
CLOUDPICKLE = "cloudpickle"
#: the libraries whose classes and functions mlrig vouches for when skops does not trust them
#: by itself: those the families come from, which every image that loads a model installs
VOUCHED_PACKAGES = frozenset({"sklearn", "numpy", "scipy", "xgboost", "lightgbm"})
#: standard-library names those libraries' models hold (a container, and the partial that
#: scikit-learn wraps its own functions in: skops checks the wrapped function on its own), and
#: mlrig's own transformer of dates (steps/train/dates.py), installed wherever mlrig runs
VOUCHED_NAMES = frozenset(
    {"collections.OrderedDict", "functools.partial", "steps.train.dates.DateParts"}
)
TAG_SERIALIZATION = "mlrig.model.serialization"
TAG_SERIALIZATION_REASON = "mlrig.model.serialization_reason"
TAG_FLAVORS = "mlrig.model.flavors"


@dataclass(frozen=True)
class ModelFormat:
    """How one fitted pipeline is saved."""

    serialization: str  # skops or cloudpickle
    #: what skops is told to load beyond its own trusted types (skops only)
    trusted_types: list[str] = field(default_factory=list)
    #: why the model is not in skops (cloudpickle only)
    reason: str = ""
    #: the flavor of the fitted booster beside the pipeline's (xgboost, lightgbm), if any
    booster_flavor: str | None = None

    @property
    def flavors(self) -> list[str]:
        return ["sklearn", *([self.booster_flavor] if self.booster_flavor else [])]

    def tags(self) -> dict[str, str]:
        """The MLflow tags that say how the model is stored (and why, for cloudpickle)."""
        tags = {TAG_SERIALIZATION: self.serialization, TAG_FLAVORS: ",".join(self.flavors)}
        return tags | ({TAG_SERIALIZATION_REASON: self.reason} if self.reason else {})


def resolve(name: str) -> Any:
    """The object a dotted type name of skops names, or None when it does not import."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            return None
        return found
    return None


def vouched_for(name: str) -> bool:
    """Whether mlrig vouches for a type skops does not trust by itself: a class or function
    of the libraries the families come from (one that exists), or one of `VOUCHED_NAMES`. A
    team's own module is not among them: its code may not be installed where the model loads,
    nor be what was reviewed."""
    if name in VOUCHED_NAMES:
        return True
    return name.partition(".")[0] in VOUCHED_PACKAGES and resolve(name) is not None


def model_format(pipeline: Pipeline, family: str) -> ModelFormat:
    """How to save the fitted pipeline: skops with the types derived from it when mlrig can
    vouch for every one, else cloudpickle with the reason."""
    import skops.io

    booster_flavor = family if family in BOOSTER_FAMILIES else None
    try:
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    except Exception as error:  # skops cannot write some objects at all
        reason = f"skops cannot save it ({type(error).__name__}: {error})"
        return ModelFormat(CLOUDPICKLE, reason=reason, booster_flavor=booster_flavor)
    if unvouched := [name for name in untrusted if not vouched_for(name)]:
        reason = (
            f"skops cannot vouch for {', '.join(unvouched)} (mlrig trusts the code of "
            f"{', '.join(sorted(VOUCHED_PACKAGES))} only): saved with cloudpickle, which runs "
            "code when loaded: load it only from a registry you trust, where its modules import"
        )
        return ModelFormat(CLOUDPICKLE, reason=reason, booster_flavor=booster_flavor)
    return ModelFormat(SKOPS, trusted_types=sorted(untrusted), booster_flavor=booster_flavor)


def requirements(pipeline: Pipeline, fmt: ModelFormat) -> list[str]:
    """The pip requirements of the model: scikit-learn, its serializer, and the installed
    distribution of every other package whose class the pipeline holds (xgboost-cpu, not the
    CUDA build MLflow's xgboost flavor would name; a team's own package)."""
    from importlib.metadata import version

    import mlflow.sklearn

    pinned = mlflow.sklearn.get_default_pip_requirements(
        include_cloudpickle=fmt.serialization == CLOUDPICKLE
    )
    if fmt.serialization == SKOPS:
        pinned.append(f"skops=={version('skops')}")
    packages = {type(part).__module__.partition(".")[0] for part in model_parts(pipeline)}
    for package in sorted(packages - {"sklearn"}):
        for distribution in installed_distributions().get(package, []):  # none: the stdlib
            pinned.append(f"{distribution}=={version(distribution)}")
    return sorted(set(pinned))


@functools.cache
def installed_distributions() -> Mapping[str, list[str]]:
    """Each importable top-level package's distributions. Reading every installed
    distribution's file list takes about a second: done once, and only for a model that holds
    more than scikit-learn (the model is saved, then logged: both ask)."""
    from importlib.metadata import packages_distributions

    return packages_distributions()


def model_parts(pipeline: Pipeline) -> list[Any]:
    """The pipeline and every estimator or transformer inside it, fitted ones included."""
    parts: list[Any] = [pipeline]
    for step in pipeline.named_steps.values():
        parts.append(step)
        parts.extend(getattr(step, "estimators_", []) or [])
        parts.extend(transformer for _, transformer, _ in getattr(step, "transformers_", []))
    return parts


def save_model(
    path: str | Path,
    mlflow_model: Model | None = None,
    *,
    pipeline: Pipeline,
    fmt: ModelFormat,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    **_: Any,
) -> None:
    """Write the model in MLflow's format to `path`: the pipeline in the sklearn flavor (what
    pyfunc serves), and the fitted booster in its library's flavor where there is one.

    Its signature is a flavor module's `save_model`, so `Model.log` logs with it as well.
    """
    import mlflow.sklearn
    from mlflow.models import Model

    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow.sklearn.save_model(
        pipeline,
        str(path),
        mlflow_model=mlflow_model,
        signature=signature,
        input_example=input_example,
        pip_requirements=requirements(pipeline, fmt),
        serialization_format=fmt.serialization,
        skops_trusted_types=fmt.trusted_types or None,
    )
    if fmt.booster_flavor:
        add_booster_flavor(Path(path), mlflow_model, pipeline, fmt.booster_flavor)


def add_booster_flavor(path: Path, mlflow_model: Model, pipeline: Pipeline, flavor: str) -> None:
    """Add the fitted booster in its library's own format and MLflow flavor to the model at
    `path`: the flavor saves it in a scratch folder, its file and configuration join the model.
    """
    import shutil
    import tempfile

    import mlflow.lightgbm
    import mlflow.xgboost
    from mlflow.models import Model

    booster = booster_of(pipeline[-1])
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / "booster"
        if flavor == "xgboost":  # XGBoost's UBJSON format; loads as the fitted classifier
            mlflow.xgboost.save_model(booster, saved, pip_requirements=[])
        else:  # LightGBM's text format, which every LightGBM binding reads
            mlflow.lightgbm.save_model(booster.booster_, saved, pip_requirements=[])
        configuration = Model.load(saved).flavors[flavor]
        shutil.copy2(saved / configuration["data"], path / configuration["data"])
    mlflow_model.add_flavor(flavor, **configuration)
    mlflow_model.save(str(path / "MLmodel"))


def log_model(
    pipeline: Pipeline,
    fmt: ModelFormat,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    name: str = "model",
) -> str:
    """Log the model to the active MLflow run as a logged model, tagged with its format.

    Returns:
        The logged model's URI (what the registry registers).
    """
    import types

    from mlflow.models import Model

    flavor = types.SimpleNamespace(save_model=save_model, __name__="mlflow.sklearn")
    info = Model.log(
        None,  # artifact_path: deprecated for name, though still a positional parameter
        name=name,
        flavor=flavor,
        flavor_name=fmt.booster_flavor or "sklearn",
        serialization_format=fmt.serialization,
        tags=fmt.tags(),
        pipeline=pipeline,
        fmt=fmt,
        signature=signature,
        input_example=input_example,
    )
    return info.model_uri
