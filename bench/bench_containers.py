"""Step images and the containers executor, each against its baseline in the same run.

- Building every image cold (no layer cache) against building them again with nothing changed
  (the content tags say they are current, so nothing is built).
- The whole pipeline with `--executor containers` against the same pipeline run by
  `dvc repro` here, both forced to run every stage, both against the same local stack, each
  in its own scratch copy of this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Timings, report
from mlrig.containers import copy_project_files
from mlrig.images import Engine, build_images, find_engine
from mlrig.settings import load_settings

BENCH_REPOSITORY = "localhost/mlrig-bench"


def image_size_mb(engine: Engine, reference: str) -> float:
    return int(engine.inspect(reference, "{{.Size}}") or 0) / 1e6


def run_pipeline(root: Path, environment: dict[str, str], *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run", "--force", "--json", *extra],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mlrig run {' '.join(extra)} failed:\n{result.stderr[-3000:]}")


def scratch_project(root: Path, destination: Path) -> Path:
    """A copy of this checkout with its stack's DVC remote configured."""
    copy_project_files(root, destination)
    shutil.copy2(root / ".dvc" / "config.local", destination / ".dvc" / "config.local")
    identity = ["-c", "user.name=mlrig bench", "-c", "user.email=bench@mlrig.invalid"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "bench"]):
        subprocess.run(["git", *command], cwd=destination, check=True, capture_output=True)
    return destination


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

    env = {**os.environ, **environment}
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-") as scratch:
        local = scratch_project(settings.root, Path(scratch) / "local")
        contained = scratch_project(settings.root, Path(scratch) / "containers")
        with timings.measure("pipeline, local executor (dvc repro)"):
            run_pipeline(local, env | {"MLRIG_PROJECT_DIR": str(local)})
        with timings.measure("pipeline, containers executor (2 at a time)"):
            run_pipeline(
                contained,
                env | {"MLRIG_PROJECT_DIR": str(contained)},
                "--executor",
                "containers",
                "--jobs",
                "2",
            )
    table = report(
        "Step images and the containers executor",
        timings,
        [
            ("build all images, nothing changed", "build all images, cold (no layer cache)"),
            (
                "pipeline, containers executor (2 at a time)",
                "pipeline, local executor (dvc repro)",
            ),
        ],
    )
    size_lines = ["", "| image | size (MB) |", "|---|---:|"]
    size_lines += [f"| {name} | {size:.0f} |" for name, size in sizes.items()]
    return table + "\n".join(size_lines) + "\n"
