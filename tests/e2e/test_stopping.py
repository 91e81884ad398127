"""Stopping `mlrig run`: by SIGINT/SIGTERM, by SIGKILL, and a run that finds DVC's lock held.

Each test runs the pipeline in a scratch copy whose train stages wait while a file `hold`
exists, so two stages are running when the signal comes, whatever the machine's speed.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.project import clean_environment, copy_repository

pytestmark = pytest.mark.e2e

EXPERIMENTS = ("knn", "linear_c0_1")
HOLD = "while [ -e hold ]; do sleep 0.1; done; "


@dataclass
class Started:
    """A `mlrig run` in progress, its stderr read line by line."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self.read, daemon=True).start()

    def read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def rest(self) -> str:
        """Its whole stderr, once it has exited."""
        while (line := self.lines.get(timeout=60)) is not None:
            self.seen.append(line)
        return "".join(self.seen)


def project_processes(root: Path) -> list[psutil.Process]:
    """Processes working in the project (stages, their commands, the warm server)."""
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        cwd = process.info["cwd"]
        if process.info["status"] == psutil.STATUS_ZOMBIE or cwd is None:
            continue
        if Path(cwd) == root or root in Path(cwd).parents:
            found.append(process)
    return found


def held_stages(root: Path) -> list[psutil.Process]:
    """The train stages' commands, waiting while `hold` exists."""
    found = []
    for process in project_processes(root):
        try:
            if "hold" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_for(condition, what: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the repository with two experiments whose train stages wait on `hold`."""
    root = tmp_path / "clone"
    copy_repository(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    experiments = params["train"]["experiments"]
    params["train"]["experiments"] = {name: experiments[name] for name in EXPERIMENTS}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline = (root / "dvc.yaml").read_text()
    held = pipeline.replace("cmd: python -m steps.train", f"cmd: {HOLD}python -m steps.train")
    assert held != pipeline
    (root / "dvc.yaml").write_text(held)
    subprocess.run(["git", "commit", "-qam", "hold train"], cwd=root, check=True)
    (root / "hold").touch()
    return root


def start_run(root: Path, *prefix: str) -> Started:
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "mlrig", "run"],
        cwd=root,
        env=clean_environment(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = Started(process)
    wait_for(lambda: len(held_stages(root)) == 2, "both train stages to run")
    return started


def pipeline_runs(root: Path) -> dict[str, str]:
    """Each pipeline parent run's id with its status."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / '.mlrig/mlflow.db'}")
    experiment = client.get_experiment_by_name("mlrig")
    runs = client.search_runs([experiment.experiment_id], "tags.`mlrig.step` = 'pipeline'")
    return {run.info.run_id: run.info.status for run in runs}


def resume(root: Path) -> str:
    """Let the train stages go and run again: its stderr (the run must succeed)."""
    (root / "hold").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run"],
        cwd=root,
        env=clean_environment(root),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_and_the_next_run_resumes(root: Path, signum: int) -> None:
    run = start_run(root)
    sent = time.monotonic()
    os.kill(run.process.pid, signum)
    code = run.process.wait(timeout=120)
    took = time.monotonic() - sent
    print(f"{signal.Signals(signum).name} to exit, 2 stages running: {took:.2f} s")
    stderr = run.rest()

    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    assert stderr.count(f"Stopped by {name}") == 1, stderr
    assert "Finished: ingest, validate, split." in stderr
    assert "Stopped: train@knn, train@linear_c0_1." in stderr
    assert "The next `mlrig run` resumes" in stderr
    assert "▶ evaluate" not in stderr  # nothing started after the signal
    assert project_processes(root) == []  # stages and warm server are gone with mlrig
    assert list(pipeline_runs(root).values()) == ["KILLED"]

    again = resume(root)  # DVC's lock is free, and what finished is not run again
    assert "▶ train@knn" in again
    assert "▶ ingest" not in again and "▶ split" not in again


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a PID namespace (unshare --pid, as root) is needed to run mlrig as PID 1",
)
def test_sigterm_stops_the_run_as_pid_1(root: Path) -> None:
    """As in a container without an init: PID 1 ignores a signal it has no handler for."""
    run = start_run(root, "unshare", "--pid", "--fork", "--kill-child")
    (mlrig,) = psutil.Process(run.process.pid).children()
    mlrig.send_signal(signal.SIGTERM)
    code = run.process.wait(timeout=120)
    stderr = run.rest()
    assert code == 143, stderr
    assert stderr.count("Stopped by SIGTERM") == 1, stderr
    assert project_processes(root) == []


def test_a_killed_run_leaves_nothing_running_and_is_closed_by_the_next(root: Path) -> None:
    run = start_run(root)
    os.kill(run.process.pid, signal.SIGKILL)
    run.process.wait(timeout=60)
    wait_for(lambda: project_processes(root) == [], "the stages and the warm server to exit", 60)
    (killed,) = pipeline_runs(root)

    resume(root)
    statuses = pipeline_runs(root)
    assert statuses.pop(killed) == "KILLED"
    assert list(statuses.values()) == ["FINISHED"]


HOLD_DVC_LOCK = """
import json, os, sys, time
import zc.lockfile
os.makedirs(".dvc/tmp", exist_ok=True)
if sys.argv[1] == "lock":  # as a running dvc command holds it
    held = zc.lockfile.LockFile(".dvc/tmp/lock")
else:  # as a stage's dvc holds its outputs while the stage's command runs
    info = {"pid": os.getpid(), "cmd": "dvc repro"}
    rwlock = {"write": {os.path.abspath("outputs/split"): info}, "read": {}}
    with open(".dvc/tmp/rwlock", "w") as file:
        json.dump(rwlock, file)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A clone whose DVC lock (request.param: lock or rwlock) a live process holds."""
    root = tmp_path / "clone"
    copy_repository(root)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_DVC_LOCK, request.param],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    yield root, process.pid
    process.kill()
    process.wait()


@pytest.mark.parametrize("holder", ["lock", "rwlock"], indirect=True)
def test_a_run_says_in_one_line_who_holds_dvcs_lock(holder: tuple[Path, int]) -> None:
    root, pid = holder
    params = (root / "params.yaml").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run"],
        cwd=root,
        env=clean_environment(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"pid {pid}" in result.stderr and f"kill {pid}" in result.stderr
    assert (root / "params.yaml").read_bytes() == params
    assert not (root / "outputs").exists()
