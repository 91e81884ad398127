"""What train takes: the schema of its section of params.yaml, the model families and theirs.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key, a
wrong type or an unknown model family is named up front.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from mlrig.experiments.params import Section


class LinearParams(Section):
    """Logistic regression (classification) or ridge (regression, alpha = 1/C)."""

    C: float = Field(1.0, gt=0.0, description="inverse regularization strength")
    max_iter: int = Field(1000, ge=1)


class RandomForestParams(Section):
    n_estimators: int = Field(200, ge=1)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(1, ge=1)


class GradientBoostingParams(Section):
    """Histogram gradient boosting (handles missing values natively)."""

    learning_rate: float = Field(0.1, gt=0.0)
    max_iter: int = Field(200, ge=1)
    max_depth: int | None = Field(None, ge=1)


class KnnParams(Section):
    n_neighbors: int = Field(15, ge=1)


class BaselineParams(Section):
    """Predicts the most frequent class (classification) or the mean (regression)."""


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


Experiment = Annotated[
    LinearExperiment
    | RandomForestExperiment
    | GradientBoostingExperiment
    | KnnExperiment
    | BaselineExperiment,
    Field(discriminator="family"),
]
#: each family's params model: what `mlrig tune` may search over for it
FAMILY_PARAMS: dict[str, type[Section]] = {
    "linear": LinearParams,
    "random_forest": RandomForestParams,
    "gradient_boosting": GradientBoostingParams,
    "knn": KnnParams,
    "baseline": BaselineParams,
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
