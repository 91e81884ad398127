"""Split's part of `mlrig run`'s preflight: the table ingest read can be split as asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.experiments.params import Params
from steps.split.split import split_table


def preflight(params: Params, root: Path, checked: dict[str, Any]) -> None:
    """Split the table ingest read, in memory.

    Raises:
        DataError: the table cannot be split as asked.
    """
    table, meta = checked["ingest"]
    split_table(table, meta, params.split)
