"""The pipeline's MLflow parent run: opened before the first stage, ended as the stages ended.

Each experiment's run is a child of it (`MLRIG_PARENT_RUN_ID`). A parent run left RUNNING by a
killed `mlrig run` of this host is closed as KILLED when the next one opens its own. A ClearML
submission that does not wait leaves its parent run to the pipeline's controller, which ends it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mlrig.errors import EXIT_FAILED, MlrigError
from mlrig.experiments.params import Params, step_values
from mlrig.settings import Settings
from mlrig.stopping import StopRequested
from mlrig.tracking.step_run import (
    TAG_GIT_COMMIT,
    TAG_HOST,
    TAG_PID,
    TAG_PIPELINE_RUN,
    TAG_STEP,
    param_text,
    setup_mlflow,
)

PIPELINE_STEP = "pipeline"  # the TAG_STEP of a pipeline's parent run
#: the most params one MLflow log_batch call takes
MLFLOW_BATCH_PARAMS = 100


def count_runs(settings: Settings, pipeline_run_id: str | None) -> tuple[int, int]:
    """Experiment runs recorded by this pipeline run, and all runs in the MLflow experiment."""
    from mlflow import MlflowClient

    experiment_id = setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    total = len(client.search_runs([experiment_id], max_results=50000))
    if not pipeline_run_id:
        return 0, total
    query = f"tags.`{TAG_PIPELINE_RUN}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = 'train'"
    return len(client.search_runs([experiment_id], query, max_results=50000)), total


def new_pipeline_run_id() -> str:
    """A pipeline run's id: its start time, then six random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def start_parent_run(
    settings: Settings, pipeline_run_id: str, params: Params, *, ended_here: bool = True
) -> str:
    """Open the pipeline's parent MLflow run; returns its id (the run stays open).

    Args:
        ended_here: this process ends the run. False: another one does (the controller of a
            ClearML pipeline), so the run names no host and pid, and the next run here does
            not take it for one a killed run left behind.
    """
    from mlflow import MlflowClient

    from mlrig.lineage import git_commit

    experiment_id = setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    close_abandoned_runs(client, experiment_id)
    owner = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())} if ended_here else {}
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {pipeline_run_id}",
        tags={
            TAG_PIPELINE_RUN: pipeline_run_id,
            TAG_GIT_COMMIT: git_commit(settings.root),
            TAG_STEP: PIPELINE_STEP,
            **owner,
        },
    )
    log_step_params(client, run.info.run_id, params)
    return run.info.run_id


def log_step_params(client: Any, run_id: str, params: Params) -> None:
    """Log every value of the steps' sections as a param of the run, by its dotted key."""
    from mlflow.entities import Param

    logged = [Param(key, param_text(value)) for key, value in step_values(params).items()]
    for start in range(0, len(logged), MLFLOW_BATCH_PARAMS):
        client.log_batch(run_id, params=logged[start : start + MLFLOW_BATCH_PARAMS])


def close_abandoned_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the parent runs left RUNNING by an `mlrig run` of this host that is gone.

    Returns:
        Their run ids.
    """
    import psutil

    query = (
        f"tags.`{TAG_STEP}` = '{PIPELINE_STEP}' and attributes.status = 'RUNNING' "
        f"and tags.`{TAG_HOST}` = '{socket.gethostname()}'"
    )
    abandoned = [
        run.info.run_id
        for run in client.search_runs([experiment_id], query, max_results=1000)
        if not run.data.tags.get(TAG_PID, "").isdigit()
        or not psutil.pid_exists(int(run.data.tags[TAG_PID]))
    ]
    for run_id in abandoned:
        client.set_terminated(run_id, "KILLED")
    return abandoned


def finish_parent_run(settings: Settings, run_id: str, status: str) -> None:
    """Close the pipeline's parent run: FINISHED, FAILED, or KILLED (stopped by a signal).

    Raises:
        MlrigError: the server did not take it after the stages succeeded (after a failure,
            the stage's own error is the one to report, so this one is dropped).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(settings.tracking_uri).set_terminated(run_id, status)
    except MlflowException as error:
        if status == "FINISHED":
            raise MlrigError(
                f"Every stage ran, but MLflow at {settings.tracking_uri} did not take the end "
                f"of pipeline run {run_id}: {str(error).splitlines()[0]}. The outputs and the "
                "experiment runs are in place; check the server (mlrig doctor).",
                exit_code=EXIT_FAILED,
            ) from None


@contextmanager
def parent_run_ending(settings: Settings, run_id: str, *, finish: bool = True) -> Iterator[None]:
    """Within: the parent run's work. The run then ends FAILED on an error, KILLED on a signal
    (`StopRequested`), and FINISHED when the work succeeded, unless `finish` is False (another
    process ends it later: a ClearML pipeline's controller)."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except StopRequested:
        status = "KILLED"
        raise
    finally:
        if finish or status != "FINISHED":
            finish_parent_run(settings, run_id, status)
