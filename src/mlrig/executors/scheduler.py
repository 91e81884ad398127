"""Walk dvc.yaml's DAG: start each stage once the stages it depends on are done, `jobs` at a time.

The executors that run stages from here use it: `local` runs each stage with `dvc repro
--single-item` in this checkout, `containers` runs each in its step image. What "changed" and
"run" mean is the executor's; what a run asks of an executor is a `StageRequest`.

While it waits, it shows what each stage running longer than the heartbeat interval is doing:
the newest heartbeat line (`mlrig.progress`) its step wrote into the stage's log, at most once
per stage per interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from mlrig.errors import MlrigError
from mlrig.executors.base import OnProgress, StageRunner
from mlrig.progress import Heartbeat, heartbeat_seconds, newest_heartbeat
from mlrig.stopping import StopRequested


@dataclass
class StageWatch:
    """The stages running now, each with when it started and the heartbeat last shown of it."""

    runner: StageRunner
    on_progress: OnProgress
    interval: float
    started: dict[str, float] = field(default_factory=dict)
    shown: dict[str, Heartbeat] = field(default_factory=dict)

    def start(self, stage: str) -> None:
        self.started[stage] = time.monotonic()

    def end(self, stage: str) -> None:
        self.started.pop(stage, None)
        self.shown.pop(stage, None)

    def report(self) -> None:
        """Show the newest heartbeat of each stage running for an interval or more, unless it
        was shown already (a stage that says nothing new shows nothing)."""
        now = time.monotonic()
        for stage, since in list(self.started.items()):
            if now - since < self.interval:
                continue
            beat = newest_heartbeat(self.runner.stage_log(stage), stage)
            if beat is not None and beat != self.shown.get(stage):
                self.shown[stage] = beat
                self.on_progress(stage, now - since, beat)


def start_ready(
    graph: dict[str, set[str]],
    runner: StageRunner,
    pool: ThreadPoolExecutor,
    running: dict[Future[float | None], str],
    done: set[str],
    on_stage: Callable[[str], None],
    watch: StageWatch | None = None,
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
        if watch is not None:
            watch.start(stage)
        running[pool.submit(runner.run_stage, stage)] = stage
    return bool(ready)


def schedule(
    graph: dict[str, set[str]],
    runner: StageRunner,
    jobs: int,
    on_stage: Callable[[str], None],
    on_progress: OnProgress | None = None,
) -> dict[str, float]:
    """Start each stage when its upstream stages are done; stop at the first failure.

    Args:
        graph: each stage with the stages it depends on.
        runner: the executor.
        jobs: how many stages run at once.
        on_stage: called with each stage as it starts.
        on_progress: called about every heartbeat interval (`MLRIG_HEARTBEAT_SECONDS`, 10 s)
            with each stage running that long, its seconds so far and its newest heartbeat
            not shown yet.

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
    watch = StageWatch(runner, on_progress, heartbeat_seconds()) if on_progress else None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while True:
                ready = failure is None and start_ready(
                    graph, runner, pool, running, done, on_stage, watch
                )
                if not running:
                    if ready and len(done) < len(graph):
                        continue  # skipped stages may have made more ready
                    break
                completed = wait_for_one(running, watch)
                for future in completed:
                    stage = running.pop(future)
                    if watch:
                        watch.end(stage)
                    error = take_result(future, stage, seconds, done, finished)
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


def take_result(
    future: Future[float | None],
    stage: str,
    seconds: dict[str, float],
    done: set[str],
    finished: list[str],
) -> MlrigError | None:
    """Count a stage that ended as done (with its wall time when it ran); its error if it
    failed."""
    try:
        if (took := future.result()) is not None:
            seconds[stage] = took
    except MlrigError as error:
        return error
    done.add(stage)
    finished.append(stage)
    return None


def wait_for_one(
    running: dict[Future[float | None], str], watch: StageWatch | None
) -> set[Future[float | None]]:
    """Wait until a running stage ends; meanwhile, every interval, show what the running
    stages are doing (`watch`)."""
    while True:
        completed, _ = wait(
            running, timeout=watch.interval if watch else None, return_when=FIRST_COMPLETED
        )
        if completed:
            return completed
        if watch is not None:
            watch.report()
