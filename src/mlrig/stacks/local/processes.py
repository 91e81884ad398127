"""Start, find and stop the stack's server processes (detached, with pid files and logs)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from mlrig.errors import EXIT_FAILED, MlrigError


class StackError(MlrigError):
    """A stack service did not start, or is not healthy."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_FAILED)


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nothing listens on now, on 127.0.0.1."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))  # held until all are chosen: no port comes twice
            ports.append(int(probe.getsockname()[1]))
        return ports


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_with_offset(offset: int) -> int:
    """A free port `port` whose `port + offset` is free too (a server that derives a second one).

    Raises:
        StackError: none was found (nearly every port in use).
    """
    for _ in range(200):
        port = random.randrange(10000, 65535 - offset)
        if port_free(port) and port_free(port + offset):
            return port
    raise StackError(f"No two free TCP ports {offset} apart were found on 127.0.0.1.")


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def running_pid(pid_file: Path) -> int | None:
    """The pid recorded in `pid_file` when that process still runs."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" else None


def start_detached(
    command: list[str], *, env: dict[str, str], log_file: Path, pid_file: Path, cwd: Path
) -> int:
    """Start a server in its own session, output to `log_file`; returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def stop_process(pid_file: Path, timeout: float = 20.0) -> bool:
    """Stop the process group of the pid in `pid_file`; returns whether one was running."""
    pid = running_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        os.killpg(pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except psutil.TimeoutExpired:
        # what ignores SIGTERM that long is killed, and waited for: its ports and files are free
        # when this returns
        os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            process.wait(timeout=10)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
    return True


def log_tail(log_file: Path, lines: int = 10) -> str:
    text = log_file.read_text(errors="replace").splitlines()[-lines:] if log_file.exists() else []
    return "\n".join(f"  | {line}" for line in text)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log_file: Path, pid: int | None = None
) -> None:
    """Poll `check` until it is true, giving up early if process `pid` exits.

    Raises:
        StackError: naming `what` and the log to read.
    """

    def ready() -> bool:
        if pid is not None and not psutil.pid_exists(pid):
            raise StackError(
                f"{what} exited while starting. Its log: {log_file}\n{log_tail(log_file)}"
            )
        if pid is not None and psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            raise StackError(
                f"{what} exited while starting. Its log: {log_file}\n{log_tail(log_file)}"
            )
        return check()

    poll = retry(
        retry=retry_if_result(lambda answer: not answer),
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.5),
    )(ready)
    try:
        poll()
    except RetryError:
        raise StackError(
            f"{what} did not become ready in {timeout:.0f} s. Its log: {log_file}\n"
            + log_tail(log_file)
        ) from None
