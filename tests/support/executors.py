"""The executor contract, checked the same way for every executor (tests/e2e/test_executors.py,
and the containers tier for `--executor containers`)."""

from __future__ import annotations

from collections.abc import Mapping


def assert_runs_its_plan(
    plan: Mapping[str, set[str]], dag: Mapping[str, set[str]], stages_run: list[str]
) -> None:
    """The executor plans dvc.yaml's DAG, runs each stage of it once, and each stage only after
    the stages it depends on (`stages_run` is in the order they finished)."""
    assert dict(plan) == dict(dag)
    assert sorted(stages_run) == sorted(plan)
    finished: set[str] = set()
    for stage in stages_run:
        assert plan[stage] <= finished, f"{stage} finished before {plan[stage] - finished}"
        finished.add(stage)
