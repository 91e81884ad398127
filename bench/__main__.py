"""`python -m bench [NAME...]` (make bench): the benchmarks, each against its baseline.

NAME is stages, stop, threads, scale, mlflow_logging, dvc_s3, images, containers or serve;
without one, every benchmark runs. `mlflow_logging`, `dvc_s3` and `serve` run against the local
stack (make stack-up); `containers` starts a stack of its own. `scale` takes its sizes from
BENCH_ROWS (bench/bench_scale.py).
"""

from __future__ import annotations

import sys

from bench import (
    bench_containers,
    bench_dvc_s3,
    bench_images,
    bench_mlflow_logging,
    bench_scale,
    bench_serve,
    bench_stages,
    bench_stop,
    bench_threads,
)
from bench.common import stack_environment
from mlrig.errors import MlrigError, report_error


def main() -> int:
    benchmarks = {
        "stages": bench_stages,
        "mlflow_logging": bench_mlflow_logging,
        "dvc_s3": bench_dvc_s3,
        "images": bench_images,
        "containers": bench_containers,
        "stop": bench_stop,
        "threads": bench_threads,
        "scale": bench_scale,
        "serve": bench_serve,
    }
    chosen = sys.argv[1:] or list(benchmarks)
    unknown = sorted(set(chosen) - set(benchmarks))
    if unknown:
        print(f"Unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(benchmarks)}")
        return 2
    environment: dict[str, str] = {}
    # the others measure the stack's servers (containers starts one of its own)
    if set(chosen) - {"stages", "stop", "threads", "scale", "images", "containers"}:
        try:
            environment = stack_environment()
        except MlrigError as error:
            report_error(error)
            return error.exit_code
    for name in chosen:
        print(benchmarks[name].run(environment), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
