"""Step images: building every image cold (no layer cache) against building them again with
nothing changed (the content tags say they are current, so nothing is built), and each image's
size."""

from __future__ import annotations

import subprocess

from bench.common import Timings, report
from mlrig.images.build import build_images
from mlrig.images.engine import Engine, find_engine
from mlrig.settings import load_settings

BENCH_REPOSITORY = "localhost/mlrig-bench"


def image_size_mb(engine: Engine, reference: str) -> float:
    return int(engine.inspect(reference, "{{.Size}}") or 0) / 1e6


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
    table = report(
        "Step images",
        timings,
        [("build all images, nothing changed", "build all images, cold (no layer cache)")],
    )
    size_lines = ["", "| image | size (MB) |", "|---|---:|"]
    size_lines += [f"| {name} | {size:.0f} |" for name, size in sizes.items()]
    return table + "\n".join(size_lines) + "\n"
