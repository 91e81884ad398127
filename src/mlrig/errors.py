"""User-facing errors and the one way a command turns them into an exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

#: the user info of a URL (`scheme://user:password@`): it may hold a password
URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")

#: Exit codes mean something: 1 a run failed, 2 the input (data, params, config) is wrong.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class MlrigError(Exception):
    """A problem the user can fix; its message names the problem and what to do.

    Args:
        message: one paragraph naming the file, column, param or setting at fault and the fix.
        exit_code: the process exit code when this error ends a command.
    """

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(redact(message))  # a URL it names may come with its password
        self.exit_code = exit_code


def redact(text: str) -> str:
    """`text` with the user info of every URL in it hidden: `http://***@host:5000/...`.

    Everything mlrig shows or writes that may name a configured URL (MLFLOW_TRACKING_URI may
    be `http://user:password@host`) goes through here: errors, summaries, doctor, logs.
    """
    return URL_USERINFO.sub(r"\g<scheme>***@", text)


def run_logged(command: list[str], log_path: Path, **popen: Any) -> int:
    """Run `command` with its output (stderr too) in `log_path`, redacted line by line.

    Returns:
        The command's exit code.
    """
    from mlrig import stopping

    with log_path.open("w", buffering=1) as log:  # line by line: the log can be followed
        # its own process group, stopped with the run (a signal, or mlrig's death)
        # errors="replace": a tool's stray non-UTF-8 byte must not end the command's log
        process = stopping.start(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            **popen,
        )
        with process:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(redact(line))
    stopping.GROUPS.forget(process.pid)
    return process.returncode


class DataError(MlrigError):
    """The input table cannot be used: missing, unreadable, or failing an expectation."""


class ParamsError(MlrigError):
    """params.yaml (or a `-S` override) has an unknown key or a value of the wrong type."""


class ConfigError(MlrigError):
    """An infrastructure setting (environment variable) is missing or wrong."""


class Stopped(MlrigError):
    """SIGINT or SIGTERM stopped the command; what it started is stopped and closed."""


def report_error(error: MlrigError) -> None:
    """Print a user error to stderr the same way everywhere, without a traceback."""
    sys.stderr.write(f"error: {error}\n")


def exits_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an `MlrigError` raised by a command into its message and exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Stopped as error:
            report_error(error)
            sys.stdout.flush()
            sys.stderr.flush()
            # nothing is left to flush or close; the interpreter's teardown of the libraries
            # loaded (MLflow, DVC, pandas) takes seconds more, and a stop should be prompt
            os._exit(error.exit_code)
        except MlrigError as error:
            report_error(error)
            raise SystemExit(error.exit_code) from None

    return wrapper
