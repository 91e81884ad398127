"""Where a stage's time goes: marks taken on the host and in the stage's container.

Each mark is the moment a phase ended, on the wall clock, which a container shares with its
host (the kernel's clock is not namespaced), so the host's marks and the container's sort into
one timeline: each phase lasted from the mark before it to its own. The containers executor
keeps one line of JSON per stage in its run's folder (`timelines.jsonl`); the benchmark
(bench/bench_containers.py) turns them into a table.

Only the standard library is imported here: the container marks its process start with it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

#: where a stage leaves its own marks in its workspace once it finished, for the host to read
WORKSPACE_TIMELINE = Path(".mlrig") / "stage-timeline.json"
#: the first mark of every timeline: when the host began the stage (not a phase)
BEGIN = "begin"


def process_started() -> float:
    """When this process started, on the wall clock (from Linux's /proc; now, elsewhere)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return time.time()
    # field 22 of stat (the 20th after the command's closing parenthesis): clock ticks since
    # boot; /proc/stat's boot time is in whole seconds, uptime in hundredths
    since_start = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.time() - max(0.0, since_start)


@dataclass
class Timeline:
    """The end of each phase of one stage, in seconds since the epoch."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str, at: float | None = None) -> None:
        """`phase` ended now (or at `at`)."""
        self.marks[phase] = time.time() if at is None else at

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.marks))

    @classmethod
    def load(cls, path: Path) -> Timeline:
        """The marks saved at `path`; none when there is no such file or it is unreadable."""
        try:
            return cls(dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            return cls()

    def phases(self) -> dict[str, float]:
        """Each phase with its seconds, in the order they ended (the first mark is the start)."""
        ordered = sorted(self.marks.items(), key=lambda item: item[1])
        return {
            phase: round(end - previous_end, 3)
            for (_, previous_end), (phase, end) in pairwise(ordered)
        }


def append_timeline(path: Path, stage: str, timeline: Timeline) -> None:
    """Add one stage's phases to a run's `timelines.jsonl`."""
    with path.open("a") as lines:
        lines.write(json.dumps({"stage": stage, "phases": timeline.phases()}) + "\n")


def read_timelines(path: Path) -> dict[str, dict[str, float]]:
    """Each stage's phases from a run's `timelines.jsonl` (none when there is no such file)."""
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {record["stage"]: record["phases"] for record in records}
