"""What register takes: the schema of its section of params.yaml, `compare`.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key or
a wrong type is named up front.
"""

from __future__ import annotations

from pydantic import Field

from mlrig.experiments.params import Section


class CompareParams(Section):
    """How the champion is chosen and where it is registered."""

    metric: str = Field("auto", description="auto: f1 for classification, rmse for regression")
    registered_model: str = Field("auto", description="auto: mlrig-<dataset name>")
    min_improvement: float = Field(
        0.0,
        ge=0,
        description="how much better, in the metric's units, a challenger must be to replace the "
        "champion (0: any gain the interval confirms)",
    )
    confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="confidence of the bootstrap interval of the difference; a challenger "
        "replaces the champion only when the whole interval is in its favour",
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, description="resamples of the test rows the interval is computed from"
    )
    seed: int = Field(42, description="seed of the bootstrap resampling")


SECTION = CompareParams
#: the section's key in params.yaml, when it is not the step's name: what register does with
#: it is compare the experiments
SECTION_NAME = "compare"
