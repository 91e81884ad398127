"""What train takes: the schema of its section of params.yaml, the model families and theirs.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key, a
wrong type or an unknown model family is named up front.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from mlrig.experiments.params import Section


class LinearParams(Section):
    """Logistic regression (classification) or ridge (regression, alpha = 1/C)."""

    C: float = Field(1.0, gt=0.0, description="inverse regularization strength")
    max_iter: int = Field(1000, ge=1)


class RandomForestParams(Section):
    n_estimators: int = Field(200, ge=1)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(1, ge=1)
    max_samples: int | None = Field(
        100_000,
        ge=1,
        description="each tree is grown on a bootstrap sample of at most this many train rows "
        "(none: as many as the train split has); a forest's fit grows with the rows each tree "
        "sees, and past ~100k rows more of them barely changes its scores",
    )


class GradientBoostingParams(Section):
    """Histogram gradient boosting (handles missing values natively)."""

    learning_rate: float = Field(0.1, gt=0.0)
    max_iter: int = Field(200, ge=1)
    max_depth: int | None = Field(None, ge=1)


class KnnParams(Section):
    n_neighbors: int = Field(15, ge=1)
    max_train_rows: int | None = Field(
        20_000,
        ge=1,
        description="the model keeps a seeded sample (by class) of at most this many train rows "
        "(none: all of them); every prediction measures its distance to each kept row, so "
        "scoring the test set costs test rows x kept rows",
    )


class BaselineParams(Section):
    """Predicts the most frequent class (classification) or the mean (regression)."""


class BoosterParams(Section):
    """What XGBoost and LightGBM share: the ensemble's size and pace, row and column sampling,
    regularization, early stopping, and the library's other parameters as they are."""

    n_estimators: int = Field(
        200, ge=1, description="boosting rounds (the most, with early stopping)"
    )
    learning_rate: float = Field(0.1, gt=0.0)
    subsample: float = Field(1.0, gt=0.0, le=1.0, description="share of rows each tree sees")
    colsample_bytree: float = Field(1.0, gt=0.0, le=1.0, description="share of columns per tree")
    reg_alpha: float = Field(0.0, ge=0.0, description="L1 regularization of the leaf weights")
    reg_lambda: float = Field(1.0, ge=0.0, description="L2 regularization of the leaf weights")
    early_stopping_rounds: int | None = Field(
        None,
        ge=1,
        description="stop after this many rounds without improvement on the validation slice "
        "(none: every round is fitted, on the whole train split)",
    )
    validation_fraction: float = Field(
        0.1,
        gt=0.0,
        le=0.5,
        description="share of the train split held out (seeded, by class) to stop early on; "
        "only with early_stopping_rounds",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="the library's other parameters, passed as they are (e.g. {gamma: 0.5})",
    )

    #: set by mlrig itself: the seed, the threads, categorical support, logging
    reserved: ClassVar[frozenset[str]] = frozenset(
        {
            "random_state",
            "seed",
            "n_jobs",
            "nthread",
            "enable_categorical",
            "verbose",
            "verbosity",
            "early_stopping_round",
            "eval_set",
            "callbacks",
        }
    )

    @model_validator(mode="after")
    def _extra_sets_no_param_twice(self) -> BoosterParams:
        if reserved := sorted(set(self.extra) & self.reserved):
            raise ValueError(
                f"extra sets {', '.join(reserved)}, which mlrig sets itself (the seed is "
                "train.seed, the early stopping early_stopping_rounds): remove it from extra"
            )
        if named := sorted(set(self.extra) & set(type(self).model_fields)):
            raise ValueError(
                f"extra sets {', '.join(named)}, a param of its own: set it beside extra, "
                f"e.g. params.{named[0]}"
            )
        return self


class XGBoostParams(BoosterParams):
    """XGBoost's gradient-boosted trees (histogram method, categorical columns native)."""

    max_depth: int = Field(6, ge=1, description="depth of each tree")
    min_child_weight: float = Field(1.0, ge=0.0, description="least hessian sum in a leaf")


class LightGBMParams(BoosterParams):
    """LightGBM's gradient-boosted trees (leaf-wise growth, categorical columns native)."""

    num_leaves: int = Field(31, ge=2, le=131072, description="leaves of each tree")
    max_depth: int | None = Field(None, ge=1, description="depth limit (none: leaves only)")
    min_child_samples: int = Field(20, ge=1, description="least rows in a leaf")
    min_data_per_group: int = Field(
        100,
        ge=1,
        description="least rows of a category for LightGBM to split it apart (its own default; "
        "lower it for a small table)",
    )
    reg_lambda: float = Field(0.0, ge=0.0, description="L2 regularization of the leaf weights")


class EstimatorParams(Section):
    """The keyword arguments of a team's own estimator class: any name its constructor takes
    (preflight checks them against the class)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # the experiment's `class`, handed down by the experiment: a family's params are all
    # build_estimator gets
    _class_path: str = PrivateAttr("")

    @property
    def class_path(self) -> str:
        """The import path of the estimator class these params are for."""
        return self._class_path


class LinearExperiment(Section):
    family: Literal["linear"]
    params: LinearParams = LinearParams()


class RandomForestExperiment(Section):
    family: Literal["random_forest"]
    params: RandomForestParams = RandomForestParams()


class GradientBoostingExperiment(Section):
    family: Literal["gradient_boosting"]
    params: GradientBoostingParams = GradientBoostingParams()


class KnnExperiment(Section):
    family: Literal["knn"]
    params: KnnParams = KnnParams()


class BaselineExperiment(Section):
    family: Literal["baseline"]
    params: BaselineParams = BaselineParams()


class XGBoostExperiment(Section):
    family: Literal["xgboost"]
    params: XGBoostParams = XGBoostParams()


class LightGBMExperiment(Section):
    family: Literal["lightgbm"]
    params: LightGBMParams = LightGBMParams()


class EstimatorExperiment(Section):
    """A team's own estimator: any class with scikit-learn's estimator API, by its import path
    (`sklearn.svm.SVC`, `mypackage.models.MyClassifier`), and its constructor's params."""

    family: Literal["estimator"]
    class_path: str = Field(
        alias="class", description="the class's import path: package.module.ClassName"
    )
    params: EstimatorParams = EstimatorParams()

    @field_validator("class_path")
    @classmethod
    def _an_import_path(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) < 2 or not all(part.isidentifier() for part in parts):
            raise ValueError(
                "give the class's import path, package.module.ClassName (e.g. sklearn.svm.SVC)"
            )
        return value

    @model_validator(mode="after")
    def _params_know_their_class(self) -> EstimatorExperiment:
        params = self.params.model_copy()  # the default instance is shared by every experiment
        params._class_path = self.class_path
        object.__setattr__(self, "params", params)  # frozen: set once, while validating
        return self


Experiment = Annotated[
    LinearExperiment
    | RandomForestExperiment
    | GradientBoostingExperiment
    | KnnExperiment
    | BaselineExperiment
    | XGBoostExperiment
    | LightGBMExperiment
    | EstimatorExperiment,
    Field(discriminator="family"),
]
#: each family's params model: what `mlrig tune` may search over for it (an `estimator`
#: experiment's params are its class's, checked against the class)
FAMILY_PARAMS: dict[str, type[Section]] = {
    "linear": LinearParams,
    "random_forest": RandomForestParams,
    "gradient_boosting": GradientBoostingParams,
    "knn": KnnParams,
    "baseline": BaselineParams,
    "xgboost": XGBoostParams,
    "lightgbm": LightGBMParams,
    "estimator": EstimatorParams,
}
MODEL_FAMILIES = tuple(FAMILY_PARAMS)


class TrainParams(Section):
    """One DVC stage per experiment (`train@<name>`), so each is cached on its own."""

    error_hint: ClassVar[str] = f"Model families: {', '.join(MODEL_FAMILIES)}."

    seed: int = 42
    experiments: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")], Experiment] = Field(
        min_length=1
    )


SECTION = TrainParams
