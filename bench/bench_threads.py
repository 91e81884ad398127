"""Two stages side by side: their thread pools unbounded, against mlrig's share of the CPUs.

Each side fits the pipeline's gradient boosting experiment (scikit-learn's histogram gradient
boosting, `max_iter` 200, on the built-in breast cancer table) twice at once, as two
`train@` stages of `mlrig run` (2 jobs) do:
- baseline: the processes' environment as a shell has it, so OpenMP gives each a thread per CPU;
- mlrig: the environment `pipeline.thread_limits(2)` adds (OMP_NUM_THREADS and the BLAS pools).
Reported: the wall time of both fits, and the CPU seconds they spent.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from bench.common import Timings, report
from mlrig.run import THREAD_VARIABLES, thread_limits

FIT = (
    "from sklearn.datasets import load_breast_cancer; "
    "from sklearn.ensemble import HistGradientBoostingClassifier as Model; "
    "X, y = load_breast_cancer(return_X_y=True); "
    "Model(max_iter=200, learning_rate=0.1, random_state=0).fit(X, y)"
)
JOBS = 2


def two_fits(environment: dict[str, str]) -> float:
    """Run two fits at once; the CPU seconds the pair spent (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    fit = [sys.executable, "-c", FIT]
    processes = [subprocess.Popen(fit, env=environment) for _ in range(JOBS)]
    if any(process.wait() != 0 for process in processes):
        raise SystemExit("a fit failed: is scikit-learn installed (make env)?")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(_: dict[str, str]) -> str:
    shell = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    timings = Timings()
    cpu: dict[str, float] = {}
    with timings.measure("two fits, threads unbounded (baseline)"):
        cpu["unbounded"] = two_fits(shell)
    with timings.measure("two fits, mlrig's thread limits"):
        cpu["limited"] = two_fits(shell | thread_limits(JOBS))
    table = report(
        "Threads: two stages side by side",
        timings,
        [("two fits, mlrig's thread limits", "two fits, threads unbounded (baseline)")],
    )
    return table + (
        f"\nCPU seconds: {cpu['unbounded']:.1f} unbounded, {cpu['limited']:.1f} with the "
        f"limits ({len(os.sched_getaffinity(0))} CPUs, {JOBS} fits at once)\n"
    )
