"""What a running stage says about itself: what it is doing, and what it cost.

- **Phases and the heartbeat.** A step names what it is doing (`phase("fitting knn on 20000
  rows")`); while a stage runs, a heartbeat thread writes `<stage>: <phase> (<s> s, <cpu> s CPU,
  peak <MB> MB)` to its stderr every `HEARTBEAT_SECONDS`, so a stage that runs longer than that
  says in its log what it is doing. A stage that ends sooner writes no line.
- **Its process title.** The stage's process is named after it (`mlrig stage train@knn` in
  `ps`, `train@knn` in `top`): in the warm server every step is a fork of the same process.
- **Its usage.** `own_usage` is the CPU time and peak RSS of the stage's process itself (and of
  the processes it waited for), counted by the kernel for that process; the command DVC started
  writes it where `USAGE_VARIABLE` says, and the run summary shows it per stage.

Only the standard library is imported at module level: the steps' commands import this module
and must start in milliseconds.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

#: the stage a step's command runs for (set per stage by the executor: `train@knn`)
STAGE_VARIABLE = "MLRIG_STAGE"
#: where the command DVC started writes its stage's usage (JSON), when set
USAGE_VARIABLE = "MLRIG_STAGE_USAGE"
HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class StageUsage:
    """What one stage's process cost, as the kernel counted it for that process."""

    cpu_seconds: float  # user + system time of all its threads, and of the children it reaped
    peak_rss_mb: float  # its largest resident set (of it or of a child it reaped)


def own_usage() -> StageUsage:
    """This process's usage so far: its own threads plus the children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    peak_kb = max(own.ru_maxrss, children.ru_maxrss)  # Linux counts it in KiB
    return StageUsage(cpu_seconds=round(cpu, 2), peak_rss_mb=round(peak_kb / 1024, 1))


def write_usage(usage: StageUsage, environment: dict[str, str] | None = None) -> None:
    """Write the stage's usage where `USAGE_VARIABLE` says (nowhere when it is unset)."""
    target = (environment if environment is not None else os.environ).get(USAGE_VARIABLE)
    if target:
        Path(target).write_text(json.dumps(asdict(usage)) + "\n")


def usage_path(log_path: Path, stage: str) -> Path:
    """Where a stage's command writes its usage: beside its log in the run's log folder."""
    return log_path.with_suffix("") / f"{stage.replace('@', '-')}.usage.json"


def read_usage(path: Path) -> StageUsage | None:
    """A stage's usage as its command wrote it; None when it wrote none (or not readable)."""
    try:
        return StageUsage(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stage_name(module: str, argv: list[str]) -> str:
    """The stage a step's command runs for: `MLRIG_STAGE`, else the step's name from its module
    (`steps.train.train` -> `train`) with its `--experiment` (`train@knn`)."""
    if named := os.environ.get(STAGE_VARIABLE):
        return named
    parts = module.split(".")
    step = parts[1] if len(parts) > 1 and parts[0] == "steps" else parts[-1]
    if "--experiment" in argv[:-1]:
        return f"{step}@{argv[argv.index('--experiment') + 1]}"
    return step


def name_process(stage: str, title: str | None = None) -> None:
    """Name this process after its stage in `ps` (its command line, or `title`) and `top`
    (its name)."""
    import setproctitle

    setproctitle.setproctitle(title or f"mlrig stage {stage}")
    setproctitle.setthreadtitle(stage)  # the name `top` shows: 15 characters at most


class _Phase:
    """What the stage is doing now, and since when (one per process)."""

    text = "starting"


def phase(text: str) -> None:
    """Say what the stage is doing now: the next heartbeat line names it."""
    _Phase.text = text


def heartbeat_line(stage: str, started: float) -> str:
    usage = own_usage()
    elapsed = time.monotonic() - started
    return (
        f"{stage}: {_Phase.text} ({elapsed:.0f} s, {usage.cpu_seconds:.0f} s CPU, "
        f"peak {usage.peak_rss_mb:.0f} MB)"
    )


@contextmanager
def heartbeat(stage: str, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """While the block runs, write what the stage is doing to stderr every `interval` s."""
    done = threading.Event()
    started = time.monotonic()
    _Phase.text = "starting"

    def beat() -> None:
        while not done.wait(interval):
            sys.stderr.write(heartbeat_line(stage, started) + "\n")
            sys.stderr.flush()

    thread = threading.Thread(target=beat, name="mlrig-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)
