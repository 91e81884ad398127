"""The scheduler of every executor (mlrig.executors.scheduler.schedule), with a runner that only
records."""

from __future__ import annotations

import threading

import pytest

from mlrig.dvc.dag import step_of, topological_order
from mlrig.errors import MlrigError
from mlrig.executors.scheduler import schedule

#: ingest -> split -> train@a, train@b -> report
GRAPH = {
    "ingest": set(),
    "split": {"ingest"},
    "train@a": {"split"},
    "train@b": {"split"},
    "report": {"train@a", "train@b"},
}


class Recorder:
    """Runs nothing: records the order, skips `unchanged`, fails `failing`."""

    def __init__(self, unchanged: set[str] = frozenset(), failing: str | None = None) -> None:
        self.unchanged, self.failing = unchanged, failing
        self.ran: list[str] = []
        self.lock = threading.Lock()

    def stage_changed(self, stage: str) -> bool:
        return stage not in self.unchanged

    def run_stage(self, stage: str) -> float | None:
        with self.lock:
            self.ran.append(stage)
        if stage == self.failing:
            raise MlrigError(f"{stage} failed")
        return 1.0


def test_each_stage_runs_after_the_stages_it_depends_on() -> None:
    runner = Recorder()
    started: list[str] = []
    seconds = schedule(GRAPH, runner, jobs=2, on_stage=started.append)
    assert set(seconds) == set(GRAPH) and sorted(started) == sorted(GRAPH)
    position = {stage: runner.ran.index(stage) for stage in GRAPH}
    for stage, parents in GRAPH.items():
        assert all(position[parent] < position[stage] for parent in parents), runner.ran


def test_unchanged_stages_are_done_without_a_run_and_free_the_ones_after() -> None:
    runner = Recorder(unchanged={"ingest", "split", "train@a"})
    seconds = schedule(GRAPH, runner, jobs=2, on_stage=lambda stage: None)
    assert runner.ran == ["train@b", "report"] and set(seconds) == {"train@b", "report"}


def test_a_failure_starts_nothing_after_it_and_is_raised() -> None:
    runner = Recorder(failing="split")
    with pytest.raises(MlrigError, match="split failed"):
        schedule(GRAPH, runner, jobs=2, on_stage=lambda stage: None)
    assert runner.ran == ["ingest", "split"]


def test_the_order_and_the_step_of_a_stage() -> None:
    assert topological_order(GRAPH) == ["ingest", "split", "train@a", "train@b", "report"]
    assert step_of("train@a") == "train" and step_of("report") == "report"
