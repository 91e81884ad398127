"""The pipeline at scale: `synthetic:<rows>` of mixed types, per stage wall time, CPU, peak RSS.

In a fresh copy of this checkout per size (embedded MLflow store), `mlrig run` of a mixed-type
synthetic table (15 numeric and 5 categorical features) with the experiments `SCALE_EXPERIMENTS`
(linear, gradient_boosting, xgboost, baseline), at each of `BENCH_ROWS` rows (comma-separated,
default 100000,1000000,10000000). Per stage: its wall time, and its process's own CPU time and
peak RSS as the run summary reports them (counted by the kernel for the forked step). Then, at
`BENCH_DEFAULT_ROWS` rows (default 1000000; empty: skipped), the default experiments of
params.yaml as they are, against the goal of 10 minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_containers import scratch_project
from bench.bench_stages import local_environment
from mlrig.settings import load_settings

DEFAULT_ROWS = "100000,1000000,10000000"
#: the experiments of the scale run, as params.yaml has them (xgboost with its defaults)
SCALE_EXPERIMENTS = {
    "linear": {"family": "linear", "params": {"C": 1.0}},
    "gradient_boosting": {
        "family": "gradient_boosting",
        "params": {"learning_rate": 0.1, "max_iter": 200},
    },
    "xgboost": {"family": "xgboost", "params": {"n_estimators": 200}},
    "baseline": {"family": "baseline"},
}


def row_counts(variable: str, default: str) -> list[int]:
    """The row counts a variable lists (`1000000,10_000_000`); none when it is empty."""
    text = os.environ.get(variable, default)
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def set_experiments(root: Path, experiments: dict) -> None:
    """Replace train.experiments in the copy's params.yaml (comments kept)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    path = root / "params.yaml"
    params = yaml.load(path.read_text())
    params["train"]["experiments"] = experiments
    with path.open("w") as stream:
        yaml.dump(params, stream)


def timed_run(root: Path, rows: int) -> tuple[float, dict]:
    """`mlrig run` of `synthetic:<rows>` in the copy: its wall time and its `--json` summary."""
    import json

    environment = local_environment() | {"MLRIG_PROJECT_DIR": str(root)}
    command = [sys.executable, "-m", "mlrig", "run", "--no-push", "--json"]
    started = time.perf_counter()
    result = subprocess.run(
        [*command, "-S", f"ingest.source=synthetic:{rows}"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"mlrig run at {rows} rows failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(result.stdout)


def stage_table(title: str, runs: dict[int, tuple[float, dict]]) -> list[str]:
    """A row per stage: per size its wall time, CPU time and peak RSS."""
    sizes = list(runs)
    header = " | ".join(f"{rows:,} rows: wall s / CPU s / peak MB" for rows in sizes)
    lines = [f"## {title}", "", f"| stage | {header} |", "|---" + "|---:" * len(sizes) + "|"]
    stages = list(
        dict.fromkeys(stage for _, summary in runs.values() for stage in summary["stage_seconds"])
    )
    for stage in stages:
        cells = []
        for _, summary in runs.values():
            wall = summary["stage_seconds"].get(stage)
            usage = summary.get("stage_usage", {}).get(stage)
            if wall is None:
                cells.append("-")
            elif usage:
                cells.append(
                    f"{wall:.1f} / {usage['cpu_seconds']:.1f} / {usage['peak_rss_mb']:.0f}"
                )
            else:
                cells.append(f"{wall:.1f}")
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    totals = " | ".join(f"{seconds:.1f} s" for seconds, _ in runs.values())
    lines.append(f"| **whole run** | {totals} |")
    return lines


def growth(runs: dict[int, tuple[float, dict]]) -> list[str]:
    """Each stage's wall time at the largest size over the next smaller (goal: at most 12x
    for 10x the rows)."""
    sizes = sorted(runs)
    if len(sizes) < 2:
        return []
    small, large = runs[sizes[-2]][1]["stage_seconds"], runs[sizes[-1]][1]["stage_seconds"]
    ratios = [f"{stage} {large[stage] / small[stage]:.1f}x" for stage in large if small.get(stage)]
    return ["", f"Wall time, {sizes[-1]:,} over {sizes[-2]:,} rows: " + ", ".join(ratios)]


def run(environment: dict[str, str]) -> str:
    settings = load_settings()
    scale: dict[int, tuple[float, dict]] = {}
    defaults: dict[int, tuple[float, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-scale-") as scratch:
        for rows in row_counts("BENCH_ROWS", DEFAULT_ROWS):
            root = scratch_project(settings.root, Path(scratch) / f"scale-{rows}")
            set_experiments(root, SCALE_EXPERIMENTS)
            scale[rows] = timed_run(root, rows)
            print(f"scale: {rows} rows in {scale[rows][0]:.0f} s", file=sys.stderr, flush=True)
        for rows in row_counts("BENCH_DEFAULT_ROWS", "1000000"):
            root = scratch_project(settings.root, Path(scratch) / f"defaults-{rows}")
            defaults[rows] = timed_run(root, rows)
            print(f"defaults: {rows} rows in {defaults[rows][0]:.0f} s", file=sys.stderr)
    lines = stage_table(
        "Pipeline at scale: synthetic mixed table, linear, gradient_boosting, xgboost, baseline",
        scale,
    )
    lines += growth(scale)
    if defaults:
        lines += ["", *stage_table("The default experiments of params.yaml", defaults)]
    return "\n".join(lines) + "\n"
