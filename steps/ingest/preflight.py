"""Ingest's part of `mlrig run`'s preflight: a source DVC watches, read in memory before any
stage runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.experiments.metrics import primary_metric
from mlrig.experiments.params import Params
from mlrig.experiments.tables import CheckedTable
from steps.ingest.ingest import ingest
from steps.ingest.params import check_source_tracked


def preflight(params: Params, root: Path, checked: dict[str, Any]) -> CheckedTable:
    """The table and what it is, as the ingest stage will write them (for the checks of the
    steps after this one: the stages that read outputs/ingest).

    Raises:
        DataError: the source is a file outside data/ (which DVC would not watch), or it
            cannot be read.
        ParamsError: compare.metric does not fit the task the data gives.
    """
    check_source_tracked(params.ingest.source)
    table, meta = ingest(params.ingest, root)
    primary_metric(params.compare.metric, meta.task)
    return CheckedTable(table, meta)
