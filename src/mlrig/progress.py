"""What a running stage says about itself: what it is doing, and what it cost.

- **Phases and the heartbeat.** A step names what it is doing (`phase("fitting knn on 20000
  rows")`); while a stage runs, a heartbeat thread writes `<stage>: <phase> (<s> s, <cpu> s CPU,
  peak <MB> MB)` to its stderr every `heartbeat_seconds()` (10 s), so a stage that runs longer
  than that says in its log what it is doing. A stage that ends sooner writes no line. The run
  reads the newest line back from the stage's log (`newest_heartbeat`) to show it on the
  console.
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
import re
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
#: how often a running stage says what it is doing, in seconds (tests shorten it)
HEARTBEAT_VARIABLE = "MLRIG_HEARTBEAT_SECONDS"
HEARTBEAT_SECONDS = 10.0
#: a heartbeat line as `heartbeat_line` writes it
HEARTBEAT_LINE = re.compile(
    r"^(?P<stage>\S+): (?P<phase>.*) \((?P<seconds>\d+) s, (?P<cpu>\d+) s CPU, "
    r"peak (?P<mb>\d+) MB\)$"
)
#: how much of the end of a stage's log is searched for its newest heartbeat
LOG_TAIL_BYTES = 64 * 1024


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
        Path(target).parent.mkdir(parents=True, exist_ok=True)
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
    """What the stage is doing now (one per process); None: this process says nothing."""

    text: str | None = "starting"


def phase(text: str | None) -> None:
    """Say what the stage is doing now: the next heartbeat line names it. None: say nothing
    until the next phase (a process this one waits for says what the stage is doing)."""
    _Phase.text = text


def heartbeat_seconds(environment: dict[str, str] | None = None) -> float:
    """How often a running stage says what it is doing: `MLRIG_HEARTBEAT_SECONDS`, else 10 s."""
    value = (environment if environment is not None else os.environ).get(HEARTBEAT_VARIABLE)
    try:
        seconds = float(value) if value else HEARTBEAT_SECONDS
    except ValueError:
        return HEARTBEAT_SECONDS
    return seconds if seconds > 0 else HEARTBEAT_SECONDS


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat line, read back: what the stage was doing, and what it had cost."""

    stage: str
    phase: str
    seconds: int  # since the step's process started
    cpu_seconds: int
    peak_rss_mb: int


def read_heartbeat(line: str) -> Heartbeat | None:
    """The heartbeat a log line holds; None when it is another line."""
    match = HEARTBEAT_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    return Heartbeat(
        stage=match["stage"],
        phase=match["phase"],
        seconds=int(match["seconds"]),
        cpu_seconds=int(match["cpu"]),
        peak_rss_mb=int(match["mb"]),
    )


def newest_heartbeat(log_path: Path, stage: str) -> Heartbeat | None:
    """The last heartbeat of `stage` in the end of its log; None when there is none (yet)."""
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            tail = log.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        beat = read_heartbeat(line)
        if beat is not None and beat.stage == stage:
            return beat
    return None


def heartbeat_line(stage: str, started: float) -> str:
    usage = own_usage()
    elapsed = time.monotonic() - started
    return (
        f"{stage}: {_Phase.text} ({elapsed:.0f} s, {usage.cpu_seconds:.0f} s CPU, "
        f"peak {usage.peak_rss_mb:.0f} MB)"
    )


@contextmanager
def heartbeat(stage: str, interval: float | None = None) -> Iterator[None]:
    """While the block runs, write what the stage is doing to stderr every `interval` s
    (`heartbeat_seconds()` by default), unless its phase is None."""
    done = threading.Event()
    started = time.monotonic()
    every = interval if interval is not None else heartbeat_seconds()
    _Phase.text = "starting"

    def beat() -> None:
        while not done.wait(every):
            if _Phase.text is not None:
                sys.stderr.write(heartbeat_line(stage, started) + "\n")
                sys.stderr.flush()

    thread = threading.Thread(target=beat, name="mlrig-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)
