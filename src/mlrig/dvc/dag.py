"""dvc.yaml's DAG as DVC reads it: each stage with the stages it depends on, in a stable order.

A stage's step (and image) is its name before `@`: `train@knn` runs the `train` step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from mlrig.dvc.repo import open_repo
from mlrig.errors import ConfigError

if TYPE_CHECKING:  # DVC loads inside functions
    from dvc.repo import Repo


def stage_graph(root: Path) -> dict[str, set[str]]:
    """Each stage of dvc.yaml with the stages it depends on (DVC's own DAG)."""
    with open_repo(root) as repo:
        return graph_of(repo)


def graph_of(repo: Repo) -> dict[str, set[str]]:
    """Each stage of an open DVC repo with the stages it depends on (open it from its root)."""
    graph = repo.index.graph
    return {
        stage.addressing: {upstream.addressing for upstream in graph.successors(stage)}
        for stage in graph.nodes
    }


class StageView(NamedTuple):
    """What a stage runs and writes, as dvc.yaml says (foreach stages expanded)."""

    commands: list[str]
    #: its outputs, relative to the project as dvc.yaml names them
    outs: list[str]


class PipelineView(NamedTuple):
    """dvc.yaml's stages: the DAG and what each stage runs and writes."""

    graph: dict[str, set[str]]
    stages: dict[str, StageView]

    def producer_of(self, path: str) -> str | None:
        """The stage whose output is `path` or holds it (none for a file DVC tracks apart)."""
        import posixpath

        wanted = posixpath.normpath(path)
        for name, stage in self.stages.items():
            for out in stage.outs:
                if wanted == out or wanted.startswith(out.rstrip("/") + "/"):
                    return name
        return None


def pipeline_view(root: Path) -> PipelineView:
    """dvc.yaml's DAG with each stage's commands and outputs, read with DVC in one go."""
    with open_repo(root) as repo:
        stages = {
            stage.addressing: StageView(
                commands=[stage.cmd] if isinstance(stage.cmd, str) else list(stage.cmd or []),
                outs=[str(out.def_path) for out in stage.outs],
            )
            for stage in repo.index.stages
        }
        return PipelineView(graph_of(repo), stages)


def step_of(stage: str) -> str:
    """The step (and image) of a stage: `train@knn` runs in the `train` image."""
    return stage.split("@", 1)[0]


def topological_order(graph: Mapping[str, set[str]]) -> list[str]:
    """The stages, each after the stages it depends on (ties by name, so the order is stable)."""
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(graph):
        ready = sorted(name for name in graph if name not in done and graph[name] <= done)
        if not ready:  # DVC refuses cycles before this; kept so a bad graph cannot loop
            raise ConfigError(f"dvc.yaml's stages form a cycle: {sorted(set(graph) - done)}")
        order.extend(ready)
        done.update(ready)
    return order


def downstream(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each stage with the stages that depend on it directly."""
    return {
        stage: {child for child, parents in graph.items() if stage in parents} for stage in graph
    }


def with_descendants(graph: dict[str, set[str]], stages: list[str]) -> set[str]:
    """The stages, and every stage that depends on them, directly or not."""
    children = downstream(graph)
    found, waiting = set(stages), list(stages)
    while waiting:
        for child in children.get(waiting.pop(), set()) - found:
            found.add(child)
            waiting.append(child)
    return found
