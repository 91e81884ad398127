"""What split takes: the schema of its section of params.yaml.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key or
a wrong type is named up front.
"""

from __future__ import annotations

from pydantic import Field

from mlrig.experiments.params import Section


class SplitParams(Section):
    """The held-out test set."""

    test_size: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 42


SECTION = SplitParams
