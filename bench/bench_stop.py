"""Stopping a run: SIGTERM to exit with 2 stages running, against a plain `dvc repro`.

In fresh copies of this checkout with two experiments whose train stages wait while a file
`hold` exists (so both are running when the signal comes, whatever the machine's speed):
- baseline: `dvc repro` (one stage at a time: one held stage), SIGTERM, until it exits;
- `mlrig run`, SIGTERM, until it exits: its stages, the warm server and the watchdog stopped,
  the parent MLflow run closed KILLED.
Each also reports how many of the copy's processes were still running a second after the exit
(the baseline leaves its stage's command behind; mlrig must leave none).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from bench.bench_stages import local_environment
from bench.common import Timings, report, scratch_project
from mlrig.settings import load_settings

EXPERIMENTS = ("knn", "linear_c0_1")
HOLD = "while [ -e hold ]; do sleep 0.1; done; "


def held_copy(destination: Path) -> Path:
    """A fresh copy whose two train stages wait while `hold` exists."""
    root = scratch_project(load_settings().root, destination)
    params = yaml.safe_load((root / "params.yaml").read_text())
    experiments = params["train"]["experiments"]
    params["train"]["experiments"] = {name: experiments[name] for name in EXPERIMENTS}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline = (root / "dvc.yaml").read_text()
    (root / "dvc.yaml").write_text(
        pipeline.replace("cmd: python -m steps.train", f"cmd: {HOLD}python -m steps.train")
    )
    (root / "hold").touch()
    return root


def processes_in(root: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cwd", "status", "cmdline"]):
        cwd, status = process.info["cwd"], process.info["status"]
        if cwd and status != psutil.STATUS_ZOMBIE and Path(cwd).is_relative_to(root):
            found.append(process)
    return found


def held(root: Path) -> int:
    return sum("hold" in " ".join(p.info["cmdline"] or []) for p in processes_in(root))


def stop_seconds(root: Path, command: list[str], running: int) -> tuple[float, int]:
    """SIGTERM to `command` once `running` stages hold; seconds to its exit, processes left."""
    # the steps' `python` is this environment's, as `make` or an activated venv has it
    environment = local_environment()
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    process = subprocess.Popen(
        command, cwd=root, env=environment, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    while held(root) < running:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{command} never had {running} stage(s) running")
        time.sleep(0.1)
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    seconds = time.perf_counter() - started
    time.sleep(1)
    left = processes_in(root)
    for leftover in left:  # the baseline's orphans: not the next measurement's load
        leftover.kill()
    return seconds, len(left)


def run(environment: dict[str, str]) -> str:
    timings = Timings()
    left: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-stop-") as scratch:
        cases = {
            "baseline: dvc repro, 1 stage running": ([sys.executable, "-m", "dvc", "repro"], 1),
            "mlrig run, 2 stages running": ([sys.executable, "-m", "mlrig", "run"], 2),
        }
        for number, (label, (command, running)) in enumerate(cases.items()):
            root = held_copy(Path(scratch) / f"copy-{number}")
            seconds, left[label] = stop_seconds(root, command, running)
            timings.seconds[label] = seconds
    labels = list(cases)
    table = report("SIGTERM to exit", timings, [(labels[1], labels[0])])
    lines = [f"| {label} | {count} |" for label, count in left.items()]
    return (
        table
        + "\n| processes left 1 s after the exit | count |\n|---|---:|\n"
        + "\n".join(lines)
        + "\n"
    )
