"""Scratch copies of the repository, and the shell a user runs mlrig from in one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from mlrig.executors.containers import copy_project_files

REPO_ROOT = Path(__file__).parents[2]
TRACKING_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "CLEARML_API_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY",
    "CLEARML_CACHE_DIR",
    "CLEARML_CONFIG_FILE",
    "CLEARML_OFFLINE_MODE",
    "MLRIG_PARENT_RUN_ID",
    "MLRIG_PIPELINE_RUN_ID",
    # set by Task.init in this process: a child process that inherits them takes itself for
    # a subprocess of that task and records no session of its own
    "CLEARML_PROC_MASTER_ID",
    "TRAINS_PROC_MASTER_ID",
    "CLEARML_TASK_ID",
)


# The tiers that test servers, containers, the chart and CI run the pipeline with two of
# params.yaml's experiments: what they check does not depend on the model families, and each
# experiment is two more stages per run (the e2e tier runs every family).
FEW_EXPERIMENTS = ("knn", "linear_c0_1")


def keep_experiments(root: Path, names: tuple[str, ...]) -> None:
    """Leave only `names` in the copy's params.yaml, and their stages in its dvc.lock."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    experiments = params["train"]["experiments"]
    params["train"]["experiments"] = {name: experiments[name] for name in names}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    dropped = {
        f"{step}@{name}"
        for name in experiments.keys() - set(names)
        for step in ("train", "evaluate")
    }
    lock["stages"] = {
        stage: entry for stage, entry in lock["stages"].items() if stage not in dropped
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def copy_repository(destination: Path, experiments: tuple[str, ...] | None = None) -> None:
    """Copy what a fresh clone holds (the files git tracks or would track) and commit it;
    with `experiments`, only those are in its params."""
    copy_project_files(REPO_ROOT, destination)
    if experiments is not None:
        keep_experiments(destination, experiments)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=destination, check=True, capture_output=True)


def clean_environment(root: Path) -> dict[str, str]:
    """The environment of a user's shell in `root`: no tracking settings, the venv's tools first."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in TRACKING_VARIABLES and not key.startswith("MLRIG_CLEARML_")
    }
    # MAKEFLAGS: `make test`'s own variables (PYTEST_ARGS) would override a nested make's
    for name in (
        "MLRIG_PROJECT_DIR",
        "MLRIG_EXPERIMENT",
        "MLRIG_DVC_REMOTE",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
    ):
        env.pop(name, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_mlrig(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """`mlrig ...` as a user's shell in `cwd` runs it (clean_environment), plus `environment`."""
    return subprocess.run(
        [sys.executable, "-m", "mlrig", *arguments],
        cwd=cwd,
        env=clean_environment(cwd) | environment,
        capture_output=True,
        text=True,
        timeout=900,  # a safety net: a loaded 2-core CI machine is slow
    )


@contextmanager
def checkout_lock(name: str) -> Iterator[None]:
    """Held while a test worker builds what every worker shares in the checkout (images,
    tools): the others wait, then find it built. `make test` runs several workers at once."""
    from filelock import FileLock

    folder = REPO_ROOT / ".mlrig" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / f"{name}.lock"):
        yield
