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


SECTION = CompareParams
#: the section's key in params.yaml, when it is not the step's name: what register does with
#: it is compare the experiments
SECTION_NAME = "compare"
