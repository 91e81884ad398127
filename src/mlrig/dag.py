"""Walk dvc.yaml's DAG: start each stage once the stages it depends on are done, `jobs` at a time.

The executors that run stages from here use it: `local` runs each stage with `dvc repro
--single-item` in this checkout, `containers` runs each in its step image. What "changed" and
"run" mean is the executor's; what a run asks of an executor is a `StageRequest`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlrig.errors import ConfigError, MlrigError
from mlrig.stopping import StopRequested

if TYPE_CHECKING:  # DVC loads inside functions
    from dvc.repo import Repo


def stage_graph(root: Path) -> dict[str, set[str]]:
    """Each stage of dvc.yaml with the stages it depends on (DVC's own DAG)."""
    from dvc.repo import Repo

    # DVC names stages relative to the working directory: from the root, `train@knn`
    with contextlib.chdir(root), Repo(str(root)) as repo:
        return graph_of(repo)


def graph_of(repo: Repo) -> dict[str, set[str]]:
    """Each stage of an open DVC repo with the stages it depends on (open it from its root)."""
    graph = repo.index.graph
    return {
        stage.addressing: {upstream.addressing for upstream in graph.successors(stage)}
        for stage in graph.nodes
    }


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


@dataclass(frozen=True)
class StageRequest:
    """What a pipeline run asks of its executor, once its checks passed and its parent run is
    open: the stages to look at, and the environment to run them in."""

    run_id: str  # the pipeline run's id
    graph: dict[str, set[str]]  # each stage with the stages it depends on
    changed: set[str]  # DVC found these changed at the start
    forced: set[str]  # run even if unchanged: all with --force, else those this store lacks
    environment: dict[str, str]  # the run ids, the commit and the thread limits included
    jobs: int  # how many stages run at once
    log_path: Path  # the pipeline run's log
    on_stage: Callable[[str], None]  # called with each stage as it starts


class StageRunner(Protocol):
    """What an executor does with one stage."""

    def stage_changed(self, stage: str) -> bool:
        """False when the stage needs no run at all (nothing it depends on changed)."""
        ...

    def run_stage(self, stage: str) -> float | None:
        """Run the stage; its wall time in seconds, or None when it was restored, not run.

        Raises:
            MlrigError: the stage failed; nothing downstream of it is started.
        """
        ...


def start_ready(
    graph: dict[str, set[str]],
    runner: StageRunner,
    pool: ThreadPoolExecutor,
    running: dict[Future[float | None], str],
    done: set[str],
    on_stage: Callable[[str], None],
) -> bool:
    """Start each stage whose upstream stages are done; an unchanged one is done at once.

    Returns:
        Whether any stage was ready.
    """
    started = set(running.values()) | done
    ready = [stage for stage in graph if stage not in started and graph[stage] <= done]
    for stage in sorted(ready):
        if not runner.stage_changed(stage):
            done.add(stage)
            continue
        on_stage(stage)
        running[pool.submit(runner.run_stage, stage)] = stage
    return bool(ready)


def schedule(
    graph: dict[str, set[str]],
    runner: StageRunner,
    jobs: int,
    on_stage: Callable[[str], None],
) -> dict[str, float]:
    """Start each stage when its upstream stages are done; stop at the first failure.

    Args:
        graph: each stage with the stages it depends on.
        runner: the executor.
        jobs: how many stages run at once.
        on_stage: called with each stage as it starts.

    Returns:
        The stages that ran, each with its wall time in seconds.

    Raises:
        MlrigError: the first stage that failed (the stages already running are finished).
        StopRequested: SIGINT/SIGTERM: no stage starts after it, the running ones are stopped
            (`mlrig.stopping`); it names the stages that finished and those stopped.
    """
    done: set[str] = set()
    finished: list[str] = []
    seconds: dict[str, float] = {}
    running: dict[Future[float | None], str] = {}
    failure: MlrigError | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while True:
                ready = failure is None and start_ready(
                    graph, runner, pool, running, done, on_stage
                )
                if not running:
                    if ready and len(done) < len(graph):
                        continue  # skipped stages may have made more ready
                    break
                completed, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in completed:
                    stage = running.pop(future)
                    try:
                        if (took := future.result()) is not None:
                            seconds[stage] = took
                        done.add(stage)
                        finished.append(stage)
                    except MlrigError as error:
                        failure = failure or error
        except StopRequested as stop:
            # the signal stopped the stages' processes: their threads end now, failing
            stop.finished = finished
            stop.stopped = sorted(running.values())
            wait(running)
            raise
    if failure is not None:
        raise failure
    return seconds
