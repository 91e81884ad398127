"""What report takes: the schema of its section of params.yaml.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key or
a wrong type is named up front.
"""

from __future__ import annotations

from mlrig.experiments.params import Section


class ReportParams(Section):
    title: str = "mlrig experiment report"


SECTION = ReportParams
