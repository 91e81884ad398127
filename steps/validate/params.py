"""What validate takes: the schema of its section of params.yaml.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key or
a wrong type is named up front.
"""

from __future__ import annotations

from pydantic import Field

from mlrig.experiments.params import Section


class ValidateParams(Section):
    """Expectations on the table; a table that fails one stops the pipeline."""

    min_rows: int = Field(20, ge=2)
    min_rows_per_class: int = Field(2, ge=1)
    max_classes: int = Field(100, ge=2)
    max_missing_fraction: float = Field(0.2, ge=0.0, le=1.0)
    max_categories: int = Field(
        100, ge=2, description="most distinct values a categorical feature column may have"
    )


SECTION = ValidateParams
