"""The params and data checks every run makes before any stage starts.

`prepare_params` validates params.yaml with the `-S` overrides applied; `preflight` runs each
step's own `preflight.py` in the pipeline's order. Bad input then changes nothing: no runs, no
registry change, no outputs, and params.yaml is not rewritten.

The checks follow the pipeline: a step checks the table its stage reads as dvc.yaml says
(`table_read_by`), not the source as ingest read it. When that table is made by a stage before
it, the check takes what that stage's own preflight returned (`CheckedTable`); a team's step with
no preflight has not made its table from this data yet, so the check is `Deferred` to the stage
itself, which runs it before anything after it, and the run says so.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from mlrig.dvc.dag import PipelineView, pipeline_view, step_of, topological_order
from mlrig.experiments.params import (
    PARAMS_FILE,
    STEPS_DIR,
    Params,
    apply_overrides,
    dump_params,
    load_params,
    read_params_file,
    validate_params,
)
from mlrig.experiments.tables import META_FILE, TABLE_FILE, CheckedTable, read_meta, read_parquet

#: the option by which a stage's command names the table folder it reads
TABLE_DIR_OPTION = "--table-dir"


class Deferred(NamedTuple):
    """A step's check that cannot be made before the run: its stage makes it when it runs."""

    note: str


class Checked(dict[str, Any]):
    """What each step's preflight returned, by step, and the pipeline they were checked on."""

    def __init__(self, pipeline: PipelineView) -> None:
        super().__init__()
        self.pipeline = pipeline

    def deferred(self) -> list[str]:
        """The notes of the checks left to their stages, in pipeline order."""
        return [value.note for value in self.values() if isinstance(value, Deferred)]

    def table_read_by(self, stage: str, params: Params, root: Path) -> CheckedTable | Deferred:
        """The table `stage` reads, for its step's preflight (see the module function):
        a method, so a step's preflight imports nothing of the library's DVC code and its
        stage does not depend on it."""
        return table_read_by(stage, params, root, self)


def prepare_params(root: Path, overrides: list[str]) -> tuple[Params, str | None]:
    """Validate params.yaml with the overrides applied.

    Returns:
        The params, and the new params.yaml text when the overrides change it (else None).
    """
    path = root / PARAMS_FILE
    document = apply_overrides(read_params_file(path), overrides)
    origin = f"{PARAMS_FILE} with -S overrides" if overrides else PARAMS_FILE
    params = validate_params(document, origin, root)
    text = dump_params(document)
    return params, (text if overrides and text != path.read_text() else None)


def preflight(params: Params, root: Path) -> list[str]:
    """Run each step's checks in memory, in the pipeline's order, so that bad data or params
    fail before any stage runs.

    A step takes part with a `preflight.py` in its folder, whose `preflight(params, root,
    checked)` raises on what it refuses and returns what the steps after it may check
    (`checked` maps each step before it to what it returned; a step whose stage makes a table
    returns it as a `CheckedTable`, one that cannot check yet a `Deferred`). The library knows
    no step: it imports these by name, as it finds them.

    Returns:
        The notes of the checks deferred to their stages (see `table_read_by`).

    Raises:
        DataError, ParamsError: what a step's check refused.
    """
    import importlib

    pipeline = pipeline_view(root)
    steps = dict.fromkeys(step_of(stage) for stage in topological_order(pipeline.graph))
    checked = Checked(pipeline)
    for step in steps:
        if (root / STEPS_DIR / step / "preflight.py").is_file():
            module = importlib.import_module(f"{STEPS_DIR}.{step}.preflight")
            checked[step] = module.preflight(params, root, checked)
    return checked.deferred()


def table_dir_of(pipeline: PipelineView, stage: str) -> str | None:
    """The folder a stage's command reads its table from (its `--table-dir`), if it names one."""
    for command in pipeline.stages[stage].commands:
        words = shlex.split(command)
        for position, word in enumerate(words):
            if word == TABLE_DIR_OPTION and position + 1 < len(words):
                return words[position + 1]
            if word.startswith(f"{TABLE_DIR_OPTION}="):
                return word.split("=", 1)[1]
    return None


def made_before(producer: str, params: Params, root: Path) -> bool:
    """Whether a stage's outputs in the workspace are what it would make now: params.yaml holds
    these params (no override pending) and DVC finds it and the stages before it unchanged."""
    from mlrig.dvc.repo import changed_stages

    saved = load_params(root / PARAMS_FILE).model_dump()
    return saved == params.model_dump() and not changed_stages(root, producer)


def table_read_by(
    stage: str, params: Params, root: Path, checked: Mapping[str, Any]
) -> CheckedTable | Deferred:
    """The table a stage reads, as dvc.yaml wires it, for that stage's checks before the run.

    The folder is the stage's `--table-dir`. Made by a stage whose step's preflight returned
    it (ingest's: the source read in memory), it is that; made by a stage that is up to date
    with these params and data, it is read from the workspace; otherwise (a team's own step,
    e.g. a `featurize` between ingest and validate, that has not run on this data) it cannot be
    known before that step runs, and the check is deferred to `stage` itself.

    Args:
        checked: what the steps before it returned (`preflight`'s `Checked`).
    """
    pipeline = getattr(checked, "pipeline", None) or pipeline_view(root)
    table_dir = table_dir_of(pipeline, stage)
    if table_dir is None:
        return Deferred(
            f"stage {stage} names no {TABLE_DIR_OPTION} in dvc.yaml: it checks its input itself"
        )
    producer = pipeline.producer_of(table_dir)
    found = checked.get(step_of(producer)) if producer else None
    if isinstance(found, CheckedTable):
        return found
    folder = root / table_dir
    on_disk = (folder / TABLE_FILE).is_file() and (folder / META_FILE).is_file()
    if on_disk and (producer is None or made_before(producer, params, root)):
        return CheckedTable(read_parquet(folder / TABLE_FILE), read_meta(folder))
    made = (
        f"made by stage {producer}, which has not run on this data and these params yet"
        if producer
        else "which no stage makes and the workspace lacks"
    )
    return Deferred(
        f"{stage} reads {table_dir}, {made}: the {stage} stage checks it itself when it runs, "
        "before the stages after it"
    )


def checked_params(root: Path, overrides: list[str]) -> tuple[Params, str | None]:
    """The params with the overrides, checked with every step's preflight: what a run checks
    before any stage starts (see `prepare_params`)."""
    params, new_params_text = prepare_params(root, overrides)
    preflight(params, root)
    return params, new_params_text
