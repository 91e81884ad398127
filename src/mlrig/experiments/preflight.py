"""The params and data checks every run makes before any stage starts.

`prepare_params` validates params.yaml with the `-S` overrides applied; `preflight` runs each
step's own `preflight.py` in the pipeline's order. Bad input then changes nothing: no runs, no
registry change, no outputs, and params.yaml is not rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.dvc.dag import stage_graph, step_of, topological_order
from mlrig.experiments.params import (
    PARAMS_FILE,
    STEPS_DIR,
    Params,
    apply_overrides,
    dump_params,
    read_params_file,
    validate_params,
)


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


def preflight(params: Params, root: Path) -> None:
    """Run each step's checks in memory, in the pipeline's order, so that bad data or params
    fail before any stage runs.

    A step takes part with a `preflight.py` in its folder, whose `preflight(params, root,
    checked)` raises on what it refuses and returns what the steps after it may check
    (`checked` maps each step before it to what it returned). The library knows no step: it
    imports these by name, as it finds them.

    Raises:
        DataError, ParamsError: what a step's check refused.
    """
    import importlib

    steps = dict.fromkeys(step_of(stage) for stage in topological_order(stage_graph(root)))
    checked: dict[str, Any] = {}
    for step in steps:
        if (root / STEPS_DIR / step / "preflight.py").is_file():
            module = importlib.import_module(f"{STEPS_DIR}.{step}.preflight")
            checked[step] = module.preflight(params, root, checked)


def checked_params(root: Path, overrides: list[str]) -> tuple[Params, str | None]:
    """The params with the overrides, checked with every step's preflight: what a run checks
    before any stage starts (see `prepare_params`)."""
    params, new_params_text = prepare_params(root, overrides)
    preflight(params, root)
    return params, new_params_text
