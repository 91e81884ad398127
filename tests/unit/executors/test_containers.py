"""The containers executor's plan for its step containers: which to start ahead, in which order."""

from __future__ import annotations

from pathlib import Path

from mlrig.executors.base import StageRequest
from mlrig.executors.containers import steps_in_order

GRAPH = {
    "ingest": set(),
    "split": {"ingest"},
    "train@a": {"split"},
    "train@b": {"split"},
    "evaluate@a": {"train@a"},
    "evaluate@b": {"train@b"},
    "report": {"evaluate@a", "evaluate@b"},
}


def request(changed: set[str], forced: set[str] = frozenset()) -> StageRequest:
    return StageRequest(
        run_id="run",
        graph=GRAPH,
        changed=changed,
        forced=set(forced),
        environment={},
        jobs=2,
        log_path=Path("run.log"),
        on_stage=lambda stage: None,
    )


def test_every_step_once_in_the_order_its_first_stage_can_start() -> None:
    assert steps_in_order(request(set(), forced=set(GRAPH))) == [
        "ingest",
        "split",
        "train",
        "evaluate",
        "report",
    ]


def test_only_the_steps_of_stages_that_may_run() -> None:
    assert steps_in_order(request({"train@b"})) == ["train", "evaluate", "report"]
    assert steps_in_order(request({"report"})) == ["report"]
    assert steps_in_order(request(set())) == []
