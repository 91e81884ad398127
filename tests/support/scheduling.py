"""CPU priority for the suite's critical path.

`make test` runs several workers on a CI machine's two cores, and every process of theirs gets
an equal share. The step images, which the containers, CI and chart tiers wait for, then the
containers tier's pipeline runs are the longest chain of the suite: where the machine lets a
worker raise its priority (as root), that chain runs first and the others fill the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

#: the tiers on the critical path
CRITICAL_TIERS = ("containers",)
#: their nice value: about 2.5 times the CPU share of another process, which is never starved
CRITICAL_NICE = -4


def set_priority(nice: int) -> None:
    """This worker thread's nice value (the processes it starts inherit it); unchanged where
    the machine refuses (not root)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def priority_of_tier(tier: str) -> int:
    return CRITICAL_NICE if tier in CRITICAL_TIERS else 0


@contextmanager
def on_the_critical_path() -> Iterator[None]:
    """Run the block (and what it starts) at the critical path's priority."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    set_priority(CRITICAL_NICE)
    try:
        yield
    finally:
        set_priority(before)


#: a file that, when set, gets one JSON line per test: its worker, start and end (epoch
#: seconds, fixtures included) and the CPU seconds of the worker and its waited-for children
#: meanwhile, to see where CI time goes across the workers (the suite is CPU-bound on 2 cores)
TIMELINE_VARIABLE = "MLRIG_TEST_TIMELINE"


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (user and system)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def record_timeline(nodeid: str, start: float, end: float, cpu: float) -> None:
    """Append the test's span and CPU seconds to the timeline file, when one is asked for."""
    path = os.environ.get(TIMELINE_VARIABLE)
    if not path:
        return
    line = {"test": nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    with open(path, "a") as timeline:  # one short line per write: workers never interleave
        timeline.write(json.dumps(line | {"start": start, "end": end, "cpu": round(cpu, 2)}) + "\n")
