"""The containers executor against the local one: the same pipeline, both forced, one stack.

Each executor runs the whole pipeline with `mlrig run --force` (every stage runs: none is
restored from the run-cache the other filled) in a fresh copy of this checkout, both against
one new local stack started for the benchmark, in one process. Printed: each run's seconds and
their ratio, then per stage the local executor's seconds, the containers executor's, and where
the containers' time went (`mlrig.executors.timeline`: the phases the host and the stage's
container marked). With root and podman's cgroupfs manager, each run's CPU seconds too
(bench/cpu.py: its processes, and its containers): the work each did, whatever else the machine
ran meanwhile. BENCH_ROUNDS=n runs n rounds, the order of the two swapped every round.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from bench.common import scratch_project
from bench.cpu import cpu_meter
from mlrig.executors.timeline import read_timelines
from mlrig.images.build import build_images
from mlrig.images.engine import find_engine
from mlrig.settings import load_settings

LOCAL = "local"
CONTAINERS = "containers"


@dataclass(frozen=True)
class PipelineRun:
    """One forced `mlrig run` of the whole pipeline: its wall time and what it said."""

    executor: str
    seconds: float
    summary: dict
    busy: float  # CPUs the whole machine kept busy meanwhile, on average (this run included)
    cpu: float | None  # CPU seconds: its processes and its containers (None: not measured)


def mlrig(
    root: Path, environment: dict[str, str], *arguments: str, prefix: list[str] | None = None
) -> str:
    result = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "mlrig", *arguments],
        cwd=root,
        env=environment | {"MLRIG_PROJECT_DIR": str(root)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mlrig {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle, iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def forced_run(root: Path, environment: dict[str, str], executor: str) -> PipelineRun:
    arguments = ["run", "--force", "--json", "--executor", executor]
    with cpu_meter() as meter:
        busy = machine_busy_seconds()
        started = time.perf_counter()
        output = mlrig(root, environment, *arguments, prefix=meter.prefix() if meter else None)
        seconds = time.perf_counter() - started
        busy = (machine_busy_seconds() - busy) / seconds
        summary = json.loads(output)
        cpu = None
        if meter is not None:
            containers = meter.containers_named(f"mlrig-{summary['pipeline_run_id']}-")
            cpu = meter.own_seconds() + sum(containers.values())
    return PipelineRun(executor, seconds, summary, busy, cpu)


def phases_of(root: Path, run: PipelineRun) -> dict[str, dict[str, float]]:
    """Each stage's phases in a containers run (its timelines.jsonl)."""
    folder = root / ".mlrig" / "containers" / run.summary["pipeline_run_id"]
    return read_timelines(folder / "timelines.jsonl")


def breakdown(local: PipelineRun, contained: PipelineRun, phases: dict[str, dict]) -> str:
    """Per stage: the local seconds, the containers' seconds and their phases, in columns."""
    names = list(dict.fromkeys(name for stage in phases.values() for name in stage))
    lines = [
        "| stage | local | containers | " + " | ".join(names) + " |",
        "|---|" + "---:|" * (2 + len(names)),
    ]
    totals = dict.fromkeys(names, 0.0)
    for stage, seconds in contained.summary["stage_seconds"].items():
        stage_phases = phases.get(stage, {})
        for name in names:
            totals[name] += stage_phases.get(name, 0.0)
        cells = [f"{stage_phases[name]:.2f}" if name in stage_phases else "" for name in names]
        local_seconds = local.summary["stage_seconds"].get(stage)
        local_cell = f"{local_seconds:.2f}" if local_seconds is not None else ""
        lines.append(f"| {stage} | {local_cell} | {seconds:.2f} | " + " | ".join(cells) + " |")
    summed = [sum(run.summary["stage_seconds"].values()) for run in (local, contained)]
    total_cells = " | ".join(f"{totals[name]:.2f}" for name in names)
    lines.append(f"| sum | {summed[0]:.2f} | {summed[1]:.2f} | {total_cells} |")
    return "\n".join(lines) + "\n"


def runs_table(rounds: list[tuple[PipelineRun, PipelineRun]]) -> str:
    lines = [
        "| round | local (s) | containers (s) | containers / local | CPU s, local / containers "
        "(ratio) | machine busy, CPUs (local / containers) |",
        "|---|---:|---:|---:|---|---|",
    ]
    for number, (local, contained) in enumerate(rounds, 1):
        ratio = contained.seconds / local.seconds
        cpu = "not measured"
        if local.cpu and contained.cpu:
            cpu = f"{local.cpu:.1f} / {contained.cpu:.1f} ({contained.cpu / local.cpu:.2f})"
        lines.append(
            f"| {number} | {local.seconds:.1f} | {contained.seconds:.1f} | {ratio:.2f} | {cpu} "
            f"| {local.busy:.2f} / {contained.busy:.2f} |"
        )
    local_sum = sum(local.seconds for local, _ in rounds)
    contained_sum = sum(contained.seconds for _, contained in rounds)
    lines.append(f"\ncontainers / local, all rounds: {contained_sum / local_sum:.2f}")
    return "\n".join(lines) + "\n"


def run(environment: dict[str, str]) -> str:
    settings = load_settings()
    build_images(settings, find_engine(settings))  # current for this checkout: none is stale
    rounds_wanted = int(os.environ.get("BENCH_ROUNDS", "1"))
    base_env = {key: value for key, value in os.environ.items() if key not in environment}
    rounds: list[tuple[PipelineRun, PipelineRun]] = []
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-") as scratch:
        Path(scratch).chmod(0o755)  # the stack's PostgreSQL runs as `postgres`
        roots = {
            LOCAL: scratch_project(settings.root, Path(scratch) / LOCAL),
            CONTAINERS: scratch_project(settings.root, Path(scratch) / CONTAINERS),
        }
        # one stack for both, started in the first copy: neither meets earlier runs' data
        mlrig(roots[LOCAL], base_env, "stack", "up")
        try:
            shutil.copy2(
                roots[LOCAL] / ".dvc/config.local", roots[CONTAINERS] / ".dvc/config.local"
            )
            values = dotenv_values(roots[LOCAL] / ".mlrig/stack/stack.env")
            stack_env = base_env | {key: value for key, value in values.items() if value}
            for number in range(rounds_wanted):
                order = [LOCAL, CONTAINERS] if number % 2 == 0 else [CONTAINERS, LOCAL]
                runs = {name: forced_run(roots[name], stack_env, name) for name in order}
                rounds.append((runs[LOCAL], runs[CONTAINERS]))
            phases = phases_of(roots[CONTAINERS], rounds[-1][1])
        finally:
            mlrig(roots[LOCAL], base_env, "stack", "down")
    local, contained = rounds[-1]
    return (
        "## The containers executor against the local one (both forced, one stack)\n\n"
        f"CPUs: {len(os.sched_getaffinity(0))}\n\n"
        + runs_table(rounds)
        + "\nPer stage (seconds; the last round), and where each container stage's time went:\n\n"
        + breakdown(local, contained, phases)
    )
