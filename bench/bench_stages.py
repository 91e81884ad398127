"""The local pipeline: what each stage costs beyond its own work, and the parallel executor.

In fresh copies of this checkout (so every stage runs), on the embedded MLflow store:
- baseline: `dvc repro`, one stage after another in one DVC process (mlrig before the local
  parallel executor);
- `mlrig run --jobs 1` and `mlrig run --jobs 2` (the default): each stage its own
  `dvc repro --single-item`, independent stages side by side.

Per stage, from the `--jobs 1` run: its wall time as a separate process, and its own work: the
same stage's command run again inside one warm Python process (libraries imported, tracking
included). The difference is the per-stage overhead: process start, imports, DVC's bookkeeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Timings, report, scratch_project
from mlrig.settings import load_settings

TRACKING_VARIABLES = ("MLFLOW_TRACKING_URI", "MLRIG_PROJECT_DIR", "CLEARML_CACHE_DIR")


def local_environment() -> dict[str, str]:
    """This shell's environment without tracking settings: the embedded store of each copy."""
    return {key: value for key, value in os.environ.items() if key not in TRACKING_VARIABLES}


def mlrig_run(root: Path, environment: dict[str, str], jobs: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run", "--no-push", "--json", "--jobs", str(jobs)],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mlrig run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def stage_commands(root: Path) -> dict[str, list[str]]:
    """Each stage's command from dvc.yaml (foreach expanded), as arguments."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        return {stage.addressing: shlex.split(stage.cmd) for stage in repo.index.stages}


def warm_seconds(root: Path, command: list[str]) -> float:
    """The stage's command run inside this (warm) process: its own work, tracking included."""
    import importlib

    from typer.testing import CliRunner

    module = command[2]  # python -m steps.<name> ...
    app = importlib.import_module(f"{module}.{module.split('.')[-1]}").app
    with contextlib.chdir(root):
        CliRunner().invoke(app, command[3:], catch_exceptions=False)  # imports, caches
        started = time.perf_counter()
        CliRunner().invoke(app, command[3:], catch_exceptions=False)
        return time.perf_counter() - started


def run(environment: dict[str, str]) -> str:
    settings = load_settings()
    timings = Timings()
    base_env = local_environment()
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-stages-") as scratch:
        copies = {
            name: scratch_project(settings.root, Path(scratch) / name)
            for name in ("dvc", "jobs1", "jobs2")
        }
        with timings.measure("pipeline, dvc repro (one stage at a time)"):
            subprocess.run(
                [sys.executable, "-m", "dvc", "repro"],
                cwd=copies["dvc"],
                env=base_env | {"MLRIG_PROJECT_DIR": str(copies["dvc"])},
                check=True,
                capture_output=True,
            )
        with timings.measure("pipeline, mlrig run --jobs 1"):
            sequential = mlrig_run(copies["jobs1"], base_env, jobs=1)
        with timings.measure("pipeline, mlrig run --jobs 2"):
            mlrig_run(copies["jobs2"], base_env, jobs=2)
        with timings.measure("no-op mlrig run (nothing changed)"):
            mlrig_run(copies["jobs2"], base_env, jobs=2)
        for name in TRACKING_VARIABLES:  # the warm runs use the jobs1 copy's own store
            os.environ.pop(name, None)
        os.environ["MLRIG_PROJECT_DIR"] = str(copies["jobs1"])
        commands = stage_commands(copies["jobs1"])
        rows = []
        for stage, wall in sequential["stage_seconds"].items():
            work = warm_seconds(copies["jobs1"], commands[stage])
            rows.append((stage, wall, work, wall - work))
    overheads = [overhead for *_, overhead in rows]
    compute = sum(work for _, _, work, _ in rows)
    timings.seconds["sum of the stages' own work (warm)"] = compute
    table = report(
        "Local pipeline: per-stage overhead and the parallel executor",
        timings,
        [
            ("pipeline, mlrig run --jobs 2", "pipeline, dvc repro (one stage at a time)"),
            ("pipeline, mlrig run --jobs 2", "pipeline, mlrig run --jobs 1"),
            ("pipeline, mlrig run --jobs 2", "sum of the stages' own work (warm)"),
        ],
    )
    lines = ["", "| stage | wall, own process (s) | own work, warm (s) | overhead (s) |"]
    lines += ["|---|---:|---:|---:|"]
    lines += [f"| {s} | {wall:.2f} | {work:.2f} | {over:.2f} |" for s, wall, work, over in rows]
    lines += ["", f"Median per-stage overhead: {statistics.median(overheads):.2f} s"]
    return table + "\n".join(lines) + "\n"
