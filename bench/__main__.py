"""`python -m bench` (make bench): every benchmark against the running local stack."""

from __future__ import annotations

import sys

from bench import bench_dvc_s3, bench_mlflow_logging
from bench.common import stack_environment
from mlrig.errors import MlrigError, report_error


def main() -> int:
    try:
        environment = stack_environment()
    except MlrigError as error:
        report_error(error)
        return error.exit_code
    for benchmark in (bench_mlflow_logging, bench_dvc_s3):
        print(benchmark.run(environment), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
