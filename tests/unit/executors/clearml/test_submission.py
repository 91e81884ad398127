"""A ClearML pipeline's MLflow parent run (mlrig.executors.clearml.submission): opened by the
submitter, kept on the controller's task, read by a step's pod from its task's parent.

No ClearML server runs here. What is real: MLflow (a SQLite store), the step store on S3
(SeaweedFS, the session's `s3_server`), the controller's own entrypoint storing the submission
on its task (an offline session, which offline ClearML reads back by id as a server would), and
`mlrig stage` run as a step's pod. What a server would do in between, this test does with
ClearML's own API: the controller's ClearmlJob creates each step's task and sets its parent to
the controller (`Task.set_parent`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from mlrig.errors import MlrigError
from mlrig.executors.clearml.compile import (
    PIPELINE_ID_PREFIX,
    PipelineDescription,
    PipelineStep,
    compile_pipeline,
)
from mlrig.executors.clearml.submission import (
    PARENT_RUN_VARIABLE,
    PIPELINE_RUN_VARIABLE,
    Submission,
    pipeline_outcome,
    submission_of_step,
)
from mlrig.executors.clearml.submit import (
    PipelineEnd,
    end_parent_run_from_controller,
    open_submission,
    prepare_submission,
    remote_store,
    step_task_definition,
)
from mlrig.experiments.params import Params, load_params
from mlrig.settings import Settings
from mlrig.tracking.step_run import TAG_HOST, TAG_PIPELINE_RUN
from tests.support.project import REPO_ROOT, run_mlrig
from tests.support.s3 import S3Server

pytestmark = pytest.mark.clearml

BUCKET = "mlrig-submissions"
#: what Task.init in this process sets: a child that inherits them takes itself for a part of
#: that task
TASK_OF_PROCESS = ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID", "CLEARML_TASK_ID")
#: what a tracked step does: one MLflow run (a child of the pipeline's, if there is one)
TRACKED_STEP = """\
import json
from pathlib import Path

from mlrig.settings import load_settings
from mlrig.tracking.step_run import tracked_step

with tracked_step(load_settings(), "train", "train@x", new_mlflow_run=True) as run:
    run.log_metrics({"score": 1.0})
Path("out").mkdir(exist_ok=True)
Path("out/run.json").write_text(json.dumps({"run_id": run.mlflow_run_id}))
"""


@pytest.fixture
def remote(
    s3_server: S3Server, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A DVC remote of its own on the S3 server, whose keys are in the environment."""
    s3_server.create_bucket(BUCKET)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}/{request.node.name}/dvc"


@pytest.fixture
def project(tmp_path: Path, remote: str, s3_server: S3Server) -> Path:
    """A git + DVC project of one tracked stage, `train`, whose default remote is `remote`."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "track.py").write_text(TRACKED_STEP)
    stage = {"cmd": f"{sys.executable} track.py", "deps": ["track.py"], "outs": ["out/run.json"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    Repo.init(str(root)).close()
    for command in (
        ["remote", "add", "--local", "--default", "cluster", remote],
        ["remote", "modify", "--local", "cluster", "endpointurl", s3_server.endpoint],
    ):
        subprocess.run([sys.executable, "-m", "dvc", *command], cwd=root, check=True)
    return root


@pytest.fixture
def settings(project: Path, tmp_path: Path) -> Settings:
    """The submitter's settings: MLflow in a SQLite store the pods share."""
    return Settings(project_dir=project, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")


@pytest.fixture(scope="module")
def params() -> Params:
    """The params the parent run logs (the repository's)."""
    return load_params(REPO_ROOT / "params.yaml")


def submitted(settings: Settings) -> PipelineDescription:
    """The project compiled and prepared on the remote, as a submission does."""
    description = compile_pipeline(settings.root, {"train": "r.example/train:1"}, default_queue="q")
    return prepare_submission(settings, description)


def start_controller(
    settings: Settings, description: PipelineDescription, submission: Submission
) -> str:
    """The controller's entrypoint, as the submitter starts it; its task's id. Offline it stores
    the description and the submission on its task, then finds no services queue."""
    folder = settings.state_dir / "submit" / submission.pipeline_run_id
    folder.mkdir(parents=True)
    (folder / "pipeline.json").write_text(description.model_dump_json())
    (folder / "submission.json").write_text(submission.model_dump_json())
    child = subprocess.run(
        [sys.executable, "-m", "mlrig.entrypoints.controller", str(folder / "pipeline.json"),
         "services", str(folder / "submission.json")],
        cwd=settings.root, capture_output=True, text=True, timeout=300,
        env={name: value for name, value in os.environ.items() if name not in TASK_OF_PROCESS},
    )  # fmt: skip
    assert 'Could not find queue named "services"' in child.stderr, child.stderr
    (line,) = [line for line in child.stdout.splitlines() if line.startswith(PIPELINE_ID_PREFIX)]
    return line.removeprefix(PIPELINE_ID_PREFIX)


def step_task(name: str, controller_id: str | None) -> str:
    """A step's task as the controller's ClearmlJob leaves it: its parent is the controller."""
    from clearml import Task

    task = Task.init(
        project_name="mlrig",
        task_name=name,
        reuse_last_task_id=False,
        auto_connect_frameworks=False,
        auto_connect_streams=False,
        auto_resource_monitoring=False,
    )
    if controller_id:
        task.set_parent(controller_id)
    task_id = str(task.id)
    task.close()
    return task_id


def run_pod(
    settings: Settings, step: PipelineStep, task_id: str, **changed: str
) -> subprocess.CompletedProcess[str]:
    """`mlrig stage` in an empty workspace, as the glue starts a step's pod: the chart's
    settings, the step's stage and input key, and its task's id."""
    workspace = settings.root.parent / f"pod-{task_id}"
    workspace.mkdir()
    pod = {name: os.environ[name] for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
        "HOME", "TMPDIR", "CLEARML_CACHE_DIR", "CLEARML_CONFIG_FILE")}  # fmt: skip
    pod |= {
        "MLRIG_DVC_REMOTE_URL": remote_store(settings).url,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLRIG_STAGE": step.name,
        "MLRIG_INPUT_KEY": step.input_key,
        "CLEARML_TASK_ID": task_id,
        "CLEARML_OFFLINE_MODE": "1",
    }
    return run_mlrig("stage", cwd=workspace, **(pod | changed))


def child_runs(settings: Settings, parent_run_id: str) -> list[object]:
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return list(client.search_runs([experiment.experiment_id], query))


def test_a_steps_pod_runs_its_stage_under_its_submissions_parent_run(
    settings: Settings, params: Params, offline_clearml: Path
) -> None:
    from mlflow import MlflowClient

    description = submitted(settings)
    submission = open_submission(settings, params, wait=False)
    controller_id = start_controller(settings, description, submission)
    (step,) = description.steps
    task_id = step_task(step.name, controller_id)

    pod = run_pod(settings, step, task_id)

    assert pod.returncode == 0, pod.stdout + pod.stderr
    assert f"under MLflow parent run {submission.parent_run_id}" in pod.stdout
    (run,) = child_runs(settings, submission.parent_run_id)
    assert run.info.run_name == "train@x"
    assert run.data.tags[TAG_PIPELINE_RUN] == submission.pipeline_run_id
    assert run.data.metrics == {"score": 1.0}
    assert remote_store(settings).has_record(step.input_key)
    # the controller ends it (no --wait): open, and no run of this host may close it as its own
    parent = MlflowClient(settings.tracking_uri).get_run(submission.parent_run_id)
    assert parent.info.status == "RUNNING" and TAG_HOST not in parent.data.tags
    assert parent.data.params["split.seed"] == str(params.split.seed)  # the steps' sections


def test_the_same_stages_submitted_twice_go_under_each_submissions_parent_run(
    settings: Settings, params: Params, offline_clearml: Path
) -> None:
    description = submitted(settings)
    (step,) = description.steps
    first, second = (open_submission(settings, params, wait=True) for _ in range(2))
    tasks = {
        submission.parent_run_id: step_task(
            step.name, start_controller(settings, description, submission)
        )
        for submission in (first, second)
    }

    for parent_run_id, task_id in tasks.items():
        found = submission_of_step(task_id)
        assert found is not None and found.parent_run_id == parent_run_id
        assert found.stage_environment()[PARENT_RUN_VARIABLE] == parent_run_id
    assert first.stage_environment()[PIPELINE_RUN_VARIABLE] != second.pipeline_run_id
    # both steps' tasks are one definition: one ClearML cache key, whichever submission
    assert json.dumps(step_task_definition(description, step)).count(first.parent_run_id) == 0


def test_a_task_of_no_submission_has_no_parent_run(offline_clearml: Path) -> None:
    assert submission_of_step(step_task("alone", None)) is None
    assert submission_of_step(step_task("train", step_task("no-submission", None))) is None


def test_a_pod_whose_mlflow_lacks_the_parent_run_stops_before_its_stage(
    settings: Settings, params: Params, offline_clearml: Path, tmp_path: Path
) -> None:
    description = submitted(settings)
    submission = open_submission(settings, params, wait=False)
    (step,) = description.steps
    task_id = step_task(step.name, start_controller(settings, description, submission))

    pod = run_pod(settings, step, task_id, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/else.db")

    assert pod.returncode == 1, pod.stdout + pod.stderr
    assert f"parent run {submission.parent_run_id} is not on MLflow at sqlite:///" in pod.stderr
    assert "else.db" in pod.stderr and "Traceback" not in pod.stderr
    assert not remote_store(settings).has_record(step.input_key)


@pytest.mark.parametrize(
    ("statuses", "outcome"),
    [
        (["completed", "cached"], "FINISHED"),
        (["completed", "failed", "skipped"], "FAILED"),
        (["completed", "aborted", "skipped"], "KILLED"),
        (["aborted", "failed"], "FAILED"),
        (["completed", "pending"], "FAILED"),  # the controller stopped before it
    ],
)
def test_the_controller_ends_the_parent_run_as_its_steps_ended(
    statuses: list[str], outcome: str
) -> None:
    assert pipeline_outcome(statuses) == outcome


@pytest.mark.parametrize(
    ("status", "failed", "outcome"),
    [("completed", [], "FINISHED"), ("failed", ["train@x"], "FAILED"),
     ("stopped", [], "KILLED"), ("completed", ["train@x"], "FAILED")],
)  # fmt: skip
def test_the_follower_ends_the_parent_run_as_the_pipeline_ended(
    status: str, failed: list[str], outcome: str
) -> None:
    end = PipelineEnd(pipeline_id="p1", status=status, failed=failed)
    assert end.parent_run_status == outcome
    if outcome == "FINISHED":
        end.raise_unless_completed()
    else:
        with pytest.raises(MlrigError, match=f"ended {status}; failed step"):
            end.raise_unless_completed()


def test_the_controller_ends_the_parent_run_on_its_own_mlflow_server(
    settings: Settings,
    params: Params,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow import MlflowClient

    submission = open_submission(settings, params, wait=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(settings.root)  # where no MLflow server is set, nothing is ended

    assert not end_parent_run_from_controller(submission, "FINISHED")
    assert "stays RUNNING: MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err
    client = MlflowClient(settings.tracking_uri)
    assert client.get_run(submission.parent_run_id).info.status == "RUNNING"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    assert end_parent_run_from_controller(submission, "FAILED")
    assert client.get_run(submission.parent_run_id).info.status == "FAILED"
