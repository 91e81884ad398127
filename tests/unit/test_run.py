"""pipeline.thread_limits: stages running side by side share the CPUs instead of each sizing
its thread pools to all of them."""

from __future__ import annotations

import os

import pytest

from mlrig.run import THREAD_VARIABLES, thread_limits


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("jobs", "share"), [(1, "8"), (2, "4"), (3, "2"), (8, "1"), (16, "1")])
def test_each_stage_gets_its_share_of_the_cpus(eight_cpus: None, jobs: int, share: str) -> None:
    assert thread_limits(jobs) == {name: share for name in THREAD_VARIABLES}


def test_a_limit_the_user_set_is_left_as_it_is(
    eight_cpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    limits = thread_limits(2)
    assert "OMP_NUM_THREADS" not in limits
    assert limits == {"OPENBLAS_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
