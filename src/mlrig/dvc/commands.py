"""DVC as mlrig runs it: the dvc commands of a run, the remote they use, the push.

The one home of running `dvc`. Every dvc process runs `dvc_command` (this interpreter's DVC,
whatever PATH holds), and each need has one way, chosen for how it must stop:

- `run_dvc`: a pipeline command (repro, pull, push) as its own process group, so a signal or
  mlrig's death stops it and all it started (`mlrig.stopping`); its log is teed, its stages
  reported, and a failure raised with the log's tail.
- `run_dvc_logged`: one stage of the local executor, the same way (`errors.run_logged`); the
  caller reads the log to tell a stage that ran from one restored.
- `query_dvc`: a short command outside a run (a diff, a config edit), captured, in mlrig's own
  process group, so a Ctrl-C in the terminal reaches it with mlrig.
- `dvc_in_process`: `dvc.cli.main` in this process, where a container or pod runs one stage:
  DVC is imported once for its pull, repro and push, and the container's end ends it.

mlrig's own dvc processes send DVC no usage report (`dvc_environment`): for each command DVC
would start a detached process to send one, about 1 s of CPU, and a pipeline run is twenty dvc
commands and more. The dvc commands a user types follow the user's DVC configuration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mlrig import stopping
from mlrig.errors import EXIT_FAILED, MlrigError, redact, run_logged
from mlrig.settings import Settings

RUNNING_STAGE = re.compile(r"^Running stage '([^']+)'")
LOG_TAIL_LINES = 25


def dvc_command(arguments: list[str]) -> list[str]:
    """The command line of a dvc process: this interpreter's DVC, whatever PATH holds."""
    return [sys.executable, "-m", "dvc", *arguments]


#: what turns DVC's usage report off for a dvc process
NO_USAGE_REPORT = {"DVC_NO_ANALYTICS": "1"}


def dvc_environment(environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a dvc process mlrig starts: `environment` (else this process's), with
    DVC's usage report off."""
    return {**(os.environ if environment is None else environment), **NO_USAGE_REPORT}


def run_dvc(
    arguments: list[str],
    root: Path,
    environment: dict[str, str],
    log_path: Path,
    on_stage: Callable[[str], None],
) -> dict[str, float]:
    """Run a dvc command, teeing its output to `log_path` and reporting each stage it starts.

    Returns:
        The stages that ran, each with its wall time in seconds (DVC's own work included).

    Raises:
        MlrigError: dvc failed; the message names the stage and ends with the log's last lines.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    started_at: list[float] = []
    with (
        log_path.open("w") as log,
        stopping.start(
            dvc_command(arguments),
            cwd=root,
            env=dvc_environment(environment),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(redact(line))
            if match := RUNNING_STAGE.match(line):
                started.append(match.group(1))
                started_at.append(time.monotonic())
                on_stage(match.group(1))
    stopping.GROUPS.forget(process.pid)
    if process.returncode != 0:
        tail = log_path.read_text().splitlines()[-LOG_TAIL_LINES:]
        where = f"stage {started[-1]!r}" if started else f"dvc {arguments[0]}"
        raise MlrigError(
            f"The pipeline failed in {where} (dvc exited with {process.returncode}). "
            f"Full log: {log_path}\n" + "\n".join(f"  | {line}" for line in tail),
            exit_code=EXIT_FAILED,
        )
    ends = [*started_at[1:], time.monotonic()][: len(started_at)]
    timed = zip(started, started_at, ends, strict=True)
    return {stage: round(end - start, 2) for stage, start, end in timed}


def run_dvc_logged(
    arguments: list[str], root: Path, environment: dict[str, str], log_path: Path
) -> int:
    """Run a dvc command with its output in `log_path`, as a process group a signal stops.

    Returns:
        dvc's exit code (the caller reads the log: it tells a stage run from one restored).
    """
    return run_logged(dvc_command(arguments), log_path, cwd=root, env=dvc_environment(environment))


def query_dvc(arguments: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """Run a short dvc command (a diff, a config edit) and capture its output.

    It stays in mlrig's own process group: started outside a run, it gets a Ctrl-C with mlrig.

    Returns:
        The finished process (the caller checks its return code).
    """
    return subprocess.run(
        dvc_command(arguments), cwd=root, env=dvc_environment(), capture_output=True, text=True
    )


def dvc_in_process(*arguments: str) -> int:
    """Run a dvc command in this process: a stage container imports DVC once for the stage.

    Returns:
        dvc's exit code.
    """
    from dvc.cli import main

    return int(main(list(arguments)))


def remote_arguments(settings: Settings) -> list[str]:
    """`--remote NAME` for dvc push/pull when MLRIG_DVC_REMOTE names one, else nothing."""
    return ["--remote", settings.dvc_remote] if settings.dvc_remote else []


def push_outputs(settings: Settings, log_path: Path) -> None:
    """`dvc push` outputs and run-cache to the configured remote.

    Raises:
        MlrigError: the remote failed; the outputs stay in the local cache for a later push.
    """
    remote = settings.dvc_remote or "the default remote"
    arguments = ["push", "--run-cache", *remote_arguments(settings)]
    try:
        run_dvc(arguments, settings.root, dict(os.environ), log_path, lambda stage: None)
    except MlrigError as error:
        raise MlrigError(
            f"The pipeline ran, but pushing to DVC remote {remote} failed; the outputs are safe "
            f"in the local cache. When the remote is back: dvc push --run-cache"
            f"{' --remote ' + settings.dvc_remote if settings.dvc_remote else ''}\n{error}",
            exit_code=EXIT_FAILED,
        ) from None
