"""Step images and the containers executor, each against its baseline in the same run.

- Building every image cold (no layer cache) against building them again with nothing changed
  (the content tags say they are current, so nothing is built).
- The whole pipeline with `--executor containers` against the same pipeline run by `mlrig run`
  here, each in a fresh copy of this checkout (so every stage runs), both against
  one new local stack started for the benchmark.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dotenv import dotenv_values

from bench.common import Timings, report
from mlrig.executors.containers import copy_project_files
from mlrig.images.build import build_images
from mlrig.images.engine import Engine, find_engine
from mlrig.settings import load_settings

BENCH_REPOSITORY = "localhost/mlrig-bench"


def image_size_mb(engine: Engine, reference: str) -> float:
    return int(engine.inspect(reference, "{{.Size}}") or 0) / 1e6


def scratch_project(root: Path, destination: Path) -> Path:
    """A git checkout of this project's files, as a fresh clone has them."""
    copy_project_files(root, destination)
    identity = ["-c", "user.name=mlrig bench", "-c", "user.email=bench@mlrig.invalid"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "bench"]):
        subprocess.run(["git", *command], cwd=destination, check=True, capture_output=True)
    return destination


def mlrig(root: Path, environment: dict[str, str], *arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", *arguments],
        cwd=root,
        env=environment | {"MLRIG_PROJECT_DIR": str(root)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mlrig {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")


def run(environment: dict[str, str]) -> str:
    settings = load_settings()
    engine = find_engine(settings)
    timings = Timings()
    bench_settings = settings.model_copy(update={"image_repository": BENCH_REPOSITORY})
    with timings.measure("build all images, cold (no layer cache)"):
        cold = build_images(bench_settings, engine, no_cache=True)
    with timings.measure("build all images, nothing changed"):
        again = build_images(bench_settings, engine)
    if any(image.built for image in again):
        raise RuntimeError("an unchanged image was rebuilt: the content tags are not stable")
    sizes = {image.name: image_size_mb(engine, image.reference) for image in cold}
    for image in cold:
        subprocess.run(engine.command("rmi", "--force", image.reference), capture_output=True)
    build_images(settings, engine)  # the images the executor uses, current for this checkout

    # both pipelines on a stack of their own, started in the first copy and used by both, so
    # neither meets the registry or run-cache of earlier runs
    base_env = {key: value for key, value in os.environ.items() if key not in environment}
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-") as scratch:
        Path(scratch).chmod(0o755)  # the stack's PostgreSQL runs as `postgres`
        local = scratch_project(settings.root, Path(scratch) / "local")
        contained = scratch_project(settings.root, Path(scratch) / "containers")
        mlrig(local, base_env, "stack", "up")
        try:
            shutil.copy2(local / ".dvc/config.local", contained / ".dvc/config.local")
            values = dotenv_values(local / ".mlrig/stack/stack.env")
            stack_env = base_env | {key: value for key, value in values.items() if value}
            with timings.measure("pipeline, local executor (mlrig run)"):
                mlrig(local, stack_env, "run")
            with timings.measure("pipeline, containers executor (2 at a time)"):
                mlrig(contained, stack_env, "run", "--executor", "containers", "--jobs", "2")
        finally:
            mlrig(local, base_env, "stack", "down")
    table = report(
        "Step images and the containers executor",
        timings,
        [
            ("build all images, nothing changed", "build all images, cold (no layer cache)"),
            (
                "pipeline, containers executor (2 at a time)",
                "pipeline, local executor (mlrig run)",
            ),
        ],
    )
    size_lines = ["", "| image | size (MB) |", "|---|---:|"]
    size_lines += [f"| {name} | {size:.0f} |" for name, size in sizes.items()]
    return table + "\n".join(size_lines) + "\n"
