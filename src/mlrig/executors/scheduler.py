"""Walk dvc.yaml's DAG: start each stage once the stages it depends on are done, `jobs` at a time.

The executors that run stages from here use it: `local` runs each stage with `dvc repro
--single-item` in this checkout, `containers` runs each in its step image. What "changed" and
"run" mean is the executor's; what a run asks of an executor is a `StageRequest`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from mlrig.errors import MlrigError
from mlrig.executors.base import StageRunner
from mlrig.stopping import StopRequested

if TYPE_CHECKING:  # DVC loads inside functions
    pass


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
