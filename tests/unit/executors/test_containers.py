"""The containers executor's plan for its step containers: which to start ahead, in which order."""

from __future__ import annotations

from pathlib import Path

from mlrig.executors.base import StageRequest
from mlrig.executors.containers import steps_in_order
from mlrig.executors.step_containers import serving_steps

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


def test_steps_whose_images_hold_the_same_content_share_the_first_ones_container() -> None:
    contents = {"ingest": "ml", "validate": "bare", "split": "ml", "train": "boost", "reg": "boost"}
    assert serving_steps(contents) == {
        "ingest": "ingest",
        "validate": "validate",
        "split": "ingest",
        "train": "train",
        "reg": "train",
    }


def test_a_step_whose_image_content_is_unknown_has_its_own_container() -> None:
    assert serving_steps({"ingest": "", "split": ""}) == {"ingest": "ingest", "split": "split"}
