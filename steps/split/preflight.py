"""Split's part of `mlrig run`'s preflight: the table the split stage reads (as dvc.yaml wires
it) can be split as asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.experiments.params import Params
from mlrig.experiments.tables import CheckedTable
from steps.split.split import split_table


def preflight(params: Params, root: Path, checked: Any) -> Any:
    """Split the table the split stage reads, in memory.

    Returns:
        None when the table was checked; else what `checked.table_read_by` returned (a
        `Deferred` of mlrig.experiments.preflight: a step before this one has not made the
        table from this data yet, so the stage checks it when it runs).

    Raises:
        DataError: the table cannot be split as asked.
    """
    found = checked.table_read_by("split", params, root)
    if not isinstance(found, CheckedTable):
        return found  # the stage checks it when it runs
    split_table(found.table, found.meta, params.split)
    return None
