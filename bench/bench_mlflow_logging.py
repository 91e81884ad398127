"""Logging 10,000 metric values through the stack's MLflow server, against one `log_batch`.

- as the pipeline logs them: `log_metrics` with a step's dict of metrics per call (6 values);
- baseline: one `log_batch` call with all values (the client splits it into 1,000-metric requests);
- and, on a sample of 500 values, one `log_metric` request per value (a naive training loop):
  MLflow's basic-auth app checks the password hash on every request, which makes this so slow
  that 10,000 requests would take over half an hour; its time is scaled to 10,000 and says so.
"""

from __future__ import annotations

import os
import time

from bench.common import Timings, report

VALUES = 10_000
PER_VALUE_SAMPLE = 500
METRICS_PER_STEP = 6


def run(stack_env: dict[str, str]) -> str:
    os.environ.update(stack_env)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(stack_env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    experiment = mlflow.set_experiment("mlrig-bench")
    timings = Timings()
    names = [f"metric_{index}" for index in range(METRICS_PER_STEP)]

    per_value = mlflow.start_run(experiment_id=experiment.experiment_id, run_name="per value")
    with per_value, timings.measure("log_metric per value (500 sampled, scaled to 10,000)"):
        for index in range(PER_VALUE_SAMPLE):
            mlflow.log_metric(names[index % METRICS_PER_STEP], float(index), step=index)
    label = "log_metric per value (500 sampled, scaled to 10,000)"
    timings.seconds[label] *= VALUES / PER_VALUE_SAMPLE
    per_step = mlflow.start_run(experiment_id=experiment.experiment_id, run_name="as the pipeline")
    with per_step, timings.measure("log_metrics per step (as the pipeline)"):
        for step in range(-(-VALUES // METRICS_PER_STEP)):
            mlflow.log_metrics({name: float(step) for name in names}, step=step)
    run = client.create_run(experiment.experiment_id, run_name="one batch")
    now = int(time.time() * 1000)
    metrics = [Metric(names[i % METRICS_PER_STEP], float(i), now, i) for i in range(VALUES)]
    with timings.measure("log_batch, all values"):
        client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    pairs = [
        (label, "log_batch, all values"),
        ("log_metrics per step (as the pipeline)", "log_batch, all values"),
    ]
    return report(f"MLflow logging of {VALUES:,} metric values (stack server)", timings, pairs)
