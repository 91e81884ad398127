"""Validate's part of `mlrig run`'s preflight: the expectations, on the table ingest read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.experiments.params import Params
from steps.validate.validate import raise_for_failures, validate_table


def preflight(params: Params, root: Path, checked: dict[str, Any]) -> None:
    """Check the table ingest read against the expectations of params.yaml.

    Raises:
        DataError: listing every failed check.
    """
    table, meta = checked["ingest"]
    raise_for_failures(validate_table(table, meta, params.validate_), meta.source)
