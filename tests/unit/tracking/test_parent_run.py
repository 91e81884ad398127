"""The pipeline's MLflow parent run: how it ends, whose it is, and the params it logs (a real
SQLite store)."""

from __future__ import annotations

import signal

import pytest
from mlflow import MlflowClient

from mlrig.experiments.params import (
    Params,
    apply_overrides,
    load_params,
    read_params_file,
    validate_params,
)
from mlrig.settings import Settings
from mlrig.stopping import StopRequested
from mlrig.tracking.parent_run import (
    close_abandoned_runs,
    parent_run_ending,
    start_parent_run,
)
from mlrig.tracking.step_run import TAG_HOST, TAG_PID, setup_mlflow
from tests.support.project import REPO_ROOT


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO_ROOT / "params.yaml")


def status(settings: Settings, run_id: str) -> str:
    return str(MlflowClient(settings.tracking_uri).get_run(run_id).info.status)


def test_the_parent_run_ends_as_its_work_did(project_settings: Settings, params: Params) -> None:
    runs = [start_parent_run(project_settings, f"run-{n}", params) for n in range(4)]

    with parent_run_ending(project_settings, runs[0]):
        pass
    with pytest.raises(RuntimeError), parent_run_ending(project_settings, runs[1]):
        raise RuntimeError("a stage failed")
    with pytest.raises(StopRequested), parent_run_ending(project_settings, runs[2]):
        raise StopRequested(signal.SIGINT)
    with parent_run_ending(project_settings, runs[3], finish=False):
        pass  # another process (a ClearML pipeline's controller) ends it

    statuses = [status(project_settings, run_id) for run_id in runs]
    assert statuses == ["FINISHED", "FAILED", "KILLED", "RUNNING"]


def test_a_run_another_process_ends_is_not_closed_as_abandoned(
    project_settings: Settings, params: Params
) -> None:
    controllers = start_parent_run(project_settings, "controllers", params, ended_here=False)
    left_here = start_parent_run(project_settings, "left-here", params)
    client = MlflowClient(project_settings.tracking_uri)
    for run_id in (left_here, controllers):  # their submitters are gone: a pid no process has
        client.set_tag(run_id, TAG_PID, "999999999")

    closed = close_abandoned_runs(client, setup_mlflow(project_settings))

    assert closed == [left_here]
    assert status(project_settings, left_here) == "KILLED"
    assert status(project_settings, controllers) == "RUNNING"
    tags = client.get_run(controllers).data.tags
    assert TAG_HOST not in tags


def test_the_parent_run_logs_the_steps_params_read_from_the_schema(
    project_settings: Settings,
) -> None:
    document = apply_overrides(read_params_file(REPO_ROOT / "params.yaml"), ["split.seed=7"])
    params = validate_params(document, "params.yaml", REPO_ROOT)

    run_id = start_parent_run(project_settings, "pipeline-1", params)

    logged = MlflowClient(project_settings.tracking_uri).get_run(run_id).data.params
    assert logged["split.seed"] == "7"
    assert logged["ingest.source"] == "builtin:breast_cancer"
    assert logged["validate.min_rows"] == "20"
    assert logged["train.experiments.knn.params.n_neighbors"] == "15"
    assert logged["train.experiments.gradient_boosting.params.max_depth"] == "None"
    assert logged["compare.metric"] == "auto"
    assert logged["report.title"] == "mlrig experiment report"
    assert not [key for key in logged if key.startswith("tune.")]  # `mlrig tune`'s, not a run's
