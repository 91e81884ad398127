"""What DVC knows of each stage: the inputs a stage workspace pulls, and the facts a compiled
pipeline keys its steps on (deps with their DVC hashes, params with their values, outs).

Read through DVC's own API from `open_repo`, so foreach stages are expanded and named as
dvc.yaml names them (`train@knn`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mlrig.dvc.dag import graph_of
from mlrig.dvc.repo import open_repo
from mlrig.errors import ConfigError

if TYPE_CHECKING:  # DVC loads inside functions, so `mlrig --help` stays fast
    from dvc.output import Output
    from dvc.stage import Stage

#: the params file DVC reads when a stage names params without a file
DEFAULT_PARAMS_FILE = "params.yaml"


def overlaps(path: str, other: str) -> bool:
    """True when one path is the other or lies inside it."""
    return path == other or path.startswith(other + os.sep) or other.startswith(path + os.sep)


def stage_inputs(root: Path, name: str) -> list[str]:
    """The stage's deps that DVC tracks (other stages' outputs, .dvc files): what to pull.

    Raises:
        ConfigError: dvc.yaml has no stage of that name.
    """
    with open_repo(root) as repo:
        stages = {stage.addressing: stage for stage in repo.index.stages}
        if name not in stages:
            raise ConfigError(
                f"dvc.yaml has no stage {name!r}. Its stages: {', '.join(sorted(stages))}."
            )
        deps = [dep.fs_path for dep in stages[name].deps]
        # a dep may be an output, a folder of outputs (outputs/train), or a file inside one
        return sorted(
            os.path.relpath(out.fs_path, root)
            for out in repo.index.outs
            if any(overlaps(out.fs_path, dep) for dep in deps)
        )


class StageFacts(NamedTuple):
    """A stage's deps with their DVC hashes, its params with their values, and its outs."""

    deps: dict[str, str | None]
    params: dict[str, Any]
    outs: list[str]


def dep_hash(dep: Output) -> str | None:
    """A dep's DVC hash in the workspace, else the one dvc.lock records, else None."""
    hash_info = dep.get_hash() if dep.exists else dep.hash_info
    if not hash_info:
        return None
    # DVC names the hash of a dep dvc.lock lacks `md5-dos2unix` (its 2.x hash) and `md5` once
    # the lock has it: the same value for a file without CRLF, and the key must not change
    name = "md5" if hash_info.name.startswith("md5") else hash_info.name
    return f"{name}:{hash_info.value}"


def stage_facts(stage: Stage) -> StageFacts:
    """A stage's deps with their DVC hashes, its params with their values, and its outs.

    Raises:
        ConfigError: the stage reads a param its params file does not have.
    """
    from dvc.dependency.param import ParamsDependency

    deps: dict[str, str | None] = {}
    params: dict[str, Any] = {}
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            prefix = "" if dep.def_path == DEFAULT_PARAMS_FILE else f"{dep.def_path}:"
            values = dep.read_params()
            if missing := sorted(set(dep.params or []) - set(values)):  # DVC skips them silently
                raise ConfigError(
                    f"Stage {stage.addressing!r} reads param(s) {', '.join(missing)} that "
                    f"{dep.def_path} does not have: add them, or drop them from dvc.yaml."
                )
            params |= {f"{prefix}{key}": value for key, value in values.items()}
        else:
            deps[str(dep.def_path)] = dep_hash(dep)
    return StageFacts(deps, params, [str(out.def_path) for out in stage.outs])


def read_pipeline(root: Path) -> tuple[dict[str, set[str]], dict[str, StageFacts]]:
    """dvc.yaml's DAG and each stage's deps, params and outs, through DVC's own API.

    Raises:
        ConfigError: DVC cannot read dvc.yaml or params.yaml.
    """
    from dvc.exceptions import DvcException

    try:
        with open_repo(root) as repo:
            graph = graph_of(repo)
            stages = {stage.addressing: stage for stage in repo.index.stages}
            return graph, {name: stage_facts(stages[name]) for name in graph}
    except DvcException as error:
        detail = f" ({error.__cause__})" if error.__cause__ else ""  # which key, for validation
        raise ConfigError(
            f"DVC cannot read the pipeline in {root}: {error}{detail}. Fix dvc.yaml (or "
            "params.yaml); dvc status shows the same problem."
        ) from None
