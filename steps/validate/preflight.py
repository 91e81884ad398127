"""Validate's part of `mlrig run`'s preflight: the expectations, on the table the validate stage
reads as dvc.yaml wires it (ingest's, or a team's own step's between them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.experiments.params import Params
from mlrig.experiments.tables import CheckedTable
from steps.validate.validate import raise_for_failures, validate_table


def preflight(params: Params, root: Path, checked: Any) -> Any:
    """Check the table the validate stage reads against the expectations of params.yaml.

    Returns:
        None when the table was checked; else what `checked.table_read_by` returned (a
        `Deferred` of mlrig.experiments.preflight: a step before this one has not made the
        table from this data yet, so the stage checks it when it runs).

    Raises:
        DataError: listing every failed check.
    """
    found = checked.table_read_by("validate", params, root)
    if not isinstance(found, CheckedTable):
        return found  # the stage checks it when it runs
    raise_for_failures(validate_table(found.table, found.meta, params.validate_), found.meta.source)
    return None
