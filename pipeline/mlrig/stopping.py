"""Stopping a run: SIGINT/SIGTERM stop every process a run started, and so does mlrig's death.

Every process a pipeline run starts (each stage's `dvc repro` or container engine, the warm
server, `dvc push`) is started by `start` in its own session, so its process group holds it and
whatever it starts in turn, and the group is stopped as one: SIGTERM, then SIGKILL after a grace.

- On SIGINT or SIGTERM, `stop_on_signals` stops every group at once and raises `StopRequested`
  in the main thread: the scheduler starts no further stage, and the run ends KILLED.
- If mlrig itself is killed (SIGKILL: no handler runs), a watchdog does it: a small process that
  learns each group over a pipe from mlrig and, when the pipe closes with groups left (mlrig is
  gone), stops them. It exits when mlrig does, and starts in its own session, so a Ctrl-C in
  the terminal reaches mlrig alone.

Only the standard library is imported here: the watchdog must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

#: how long a stopped group gets to exit on SIGTERM before it is killed
GRACE_SECONDS = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived: the run stops (a BaseException, so no `except Exception` of a
    library swallows it).

    Attributes:
        signum: the signal.
        finished: the stages that finished in this run before it stopped (set by the scheduler).
        stopped: the stages that were running and were stopped.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.finished: list[str] = []
        self.stopped: list[str] = []

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def group_alive(group: int, leader: subprocess.Popen[Any] | None = None) -> bool:
    """Whether a process of the group is left (its leader, if ours, is reaped to know)."""
    if leader is not None and leader.poll() is None:
        return True  # a child of ours stays in its group until reaped, even as a zombie
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else
        return False
    return True


def signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def stop_groups(
    groups: list[int],
    grace: float = GRACE_SECONDS,
    leaders: dict[int, subprocess.Popen[Any]] | None = None,
) -> None:
    """SIGTERM each process group, then SIGKILL those still there after `grace` seconds.

    Args:
        leaders: the groups' leaders that are children of this process, by group.
    """
    leaders = leaders or {}

    def alive(group: int) -> bool:
        return group_alive(group, leaders.get(group))

    for group in groups:
        signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.02)
    for group in groups:
        if alive(group):
            signal_group(group, signal.SIGKILL)


class ProcessGroups:
    """The process groups of this run, each a process started by `start` and its descendants."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # the signal handler may run while the main thread holds it
        self.groups: dict[int, subprocess.Popen[Any]] = {}  # each group's leader
        self.stopping = False
        self.watchdog: subprocess.Popen[bytes] | None = None

    def start(self, command: list[str], **options: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen(command, **options)` in a new session, stopped with this run.

        Raises:
            StopRequested: the run is stopping, so nothing new starts.
        """
        with self.lock:
            if self.stopping:
                raise StopRequested(signal.SIGTERM)
            process = subprocess.Popen(command, start_new_session=True, **options)
            self.groups[process.pid] = process
            self.tell_watchdog(f"+{process.pid}")
        return process

    def run(self, command: list[str], **options: Any) -> int:
        """Run `command` to its end in its own group (see `start`); its exit code."""
        with self.start(command, **options) as process:
            code = process.wait()
        self.forget(process.pid)
        return code

    def forget(self, group: int) -> None:
        """The group's leader ended: what it left behind is stopped now, not at the run's end."""
        if group_alive(group):
            signal_group(group, signal.SIGKILL)
        with self.lock:
            self.groups.pop(group, None)
            self.tell_watchdog(f"-{group}")

    def end(self, process: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
        """Stop one group started by `start` (SIGTERM, SIGKILL after `grace`) and forget it."""
        stop_groups([process.pid], grace, {process.pid: process})
        process.wait()
        self.forget(process.pid)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Start nothing more, and stop every group (SIGTERM, SIGKILL after `grace`)."""
        with self.lock:
            self.stopping = True
            leaders = dict(self.groups)
        stop_groups(sorted(leaders), grace, leaders)

    def tell_watchdog(self, line: str) -> None:
        if self.watchdog is not None and self.watchdog.stdin is not None:
            with contextlib.suppress(OSError):  # the watchdog is gone: nothing to tell
                self.watchdog.stdin.write(f"{line}\n".encode())
                self.watchdog.stdin.flush()

    def start_watchdog(self) -> None:
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "mlrig.stopping"],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def close_watchdog(self) -> None:
        """End the watchdog: it stops what is left (nothing, after a run that ended normally)."""
        if self.watchdog is None:
            return
        if self.watchdog.stdin is not None:
            self.watchdog.stdin.close()
        self.watchdog.wait()
        self.watchdog = None


#: the groups of the run in progress: signals and process ids are per process, and so is this
GROUPS = ProcessGroups()


def start(command: list[str], **options: Any) -> subprocess.Popen[Any]:
    """Start `command` as a process group the run stops (see `ProcessGroups.start`)."""
    return GROUPS.start(command, **options)


def run(command: list[str], **options: Any) -> int:
    """Run `command` to its end as a process group the run stops; its exit code."""
    return GROUPS.run(command, **options)


@contextlib.contextmanager
def stop_on_signals(grace: float = GRACE_SECONDS) -> Iterator[None]:
    """Within: SIGINT/SIGTERM stop every group started by `start` and raise `StopRequested`.

    Outside the main thread (no signal handler can be set there) only the watchdog is set up.
    A second signal while stopping is ignored: the stop is already under way, bounded by
    `grace`.
    """
    requested: list[StopRequested] = []

    def on_signal(signum: int, _frame: object) -> None:
        if requested:
            return
        requested.append(StopRequested(signum))
        GROUPS.stop(grace)
        raise requested[0]

    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} if main else {}
    GROUPS.stopping = False
    GROUPS.start_watchdog()
    try:
        for signum in previous:
            signal.signal(signum, on_signal)
        yield
    finally:
        try:
            if requested:
                GROUPS.stop(grace)  # what started while the signal was being handled
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            GROUPS.close_watchdog()


def watch(lines: Iterator[bytes], grace: float = GRACE_SECONDS) -> None:
    """The watchdog: follow `+group`/`-group` lines; at their end, stop the groups left."""
    groups: set[int] = set()
    for line in lines:
        text = line.decode().strip()
        if text.startswith("+"):
            groups.add(int(text[1:]))
        elif text.startswith("-"):
            groups.discard(int(text[1:]))
    stop_groups(sorted(groups), grace)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # mlrig decides; a terminal's Ctrl-C is its
    watch(iter(sys.stdin.buffer.readline, b""))
