"""tracked_step: one ClearML offline session and one MLflow run per step, each naming the other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlrig.settings import Settings
from mlrig.tracking.step_run import (
    TAG_CLEARML_TASK,
    TAG_EXPERIMENT,
    TAG_EXPERIMENT_KIND,
    TAG_IMAGE,
    TAG_PIPELINE_RUN,
    TAG_STEP,
    setup_mlflow,
    tracked_step,
)


def session_task(settings: Settings, task_id: str) -> dict[str, Any]:
    """The task.json of the offline session ClearML wrote when the task closed."""
    archive_path = settings.clearml_sessions_dir / f"{task_id}.zip"
    assert archive_path.is_file(), f"no offline session zip for {task_id} in {archive_path.parent}"
    with zipfile.ZipFile(archive_path) as archive:
        return json.loads(archive.read("task.json"))


def user_property(task: dict[str, Any], name: str) -> str | None:
    return task.get("hyperparams", {}).get("properties", {}).get(name, {}).get("value")


def test_the_experiment_is_marked_as_model_training(project_settings: Settings) -> None:
    """MLflow 3's UI opens an experiment on runs and models, not GenAI traces, by this tag: on
    the pipeline's experiment, `mlrig tune`'s, and one made before mlrig set it."""
    client = MlflowClient(project_settings.tracking_uri)
    setup_mlflow(project_settings)  # points MLflow at the project's store
    older = client.create_experiment("made-by-hand")
    chosen = client.create_experiment(
        "a-genai-one", tags={TAG_EXPERIMENT_KIND: "genai_development"}
    )

    pipeline = setup_mlflow(project_settings)
    searches = setup_mlflow(project_settings, f"{project_settings.mlflow_experiment}-tune")
    setup_mlflow(project_settings, "made-by-hand")
    setup_mlflow(project_settings, "a-genai-one")

    for experiment_id in (pipeline, searches, older):
        kind = client.get_experiment(experiment_id).tags[TAG_EXPERIMENT_KIND]
        assert kind == "custom_model_development"
    assert client.get_experiment(chosen).tags[TAG_EXPERIMENT_KIND] == "genai_development"


def test_new_run_and_clearml_task_name_each_other(project_settings: Settings) -> None:
    with tracked_step(
        project_settings,
        "train",
        "train@probe",
        new_mlflow_run=True,
        tags={TAG_EXPERIMENT: "probe"},
    ) as run:
        run.log_params({"C": 0.1, "max_depth": None})
        run.log_metrics({"accuracy": 0.875})

    assert run.mlflow_run_id
    assert run.clearml_task_id.startswith("offline-")
    client = MlflowClient(project_settings.tracking_uri)
    mlflow_run = client.get_run(run.mlflow_run_id)
    experiment = client.get_experiment_by_name(project_settings.mlflow_experiment)
    assert mlflow_run.info.experiment_id == experiment.experiment_id
    assert mlflow_run.info.run_name == "train@probe"
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags[TAG_CLEARML_TASK] == run.clearml_task_id
    assert mlflow_run.data.tags[TAG_STEP] == "train"
    assert mlflow_run.data.tags[TAG_EXPERIMENT] == "probe"
    assert mlflow_run.data.params == {"C": "0.1", "max_depth": "None"}
    assert mlflow_run.data.metrics == {"accuracy": 0.875}

    task = session_task(project_settings, run.clearml_task_id)
    assert task["id"] == run.clearml_task_id
    assert task["name"] == "train@probe"
    assert user_property(task, "mlflow_run_id") == run.mlflow_run_id
    assert {"step:train", f"{TAG_EXPERIMENT}:probe"} <= set(task["tags"])
    assert task["hyperparams"]["params"]["C"]["value"] == "0.1"


def test_step_without_mlflow_run_still_writes_a_clearml_session(
    project_settings: Settings,
) -> None:
    with tracked_step(project_settings, "split", "split") as run:
        run.log_params({"test_size": 0.25})

    assert run.mlflow_run_id is None
    task = session_task(project_settings, run.clearml_task_id)
    assert task["name"] == "split"
    assert task["hyperparams"]["params"]["test_size"]["value"] == "0.25"
    assert user_property(task, "mlflow_run_id") is None


def test_resumed_run_gains_the_second_steps_task(project_settings: Settings) -> None:
    with tracked_step(project_settings, "train", "train@probe", new_mlflow_run=True) as train:
        pass
    with tracked_step(
        project_settings, "evaluate", "evaluate@probe", mlflow_run_id=train.mlflow_run_id
    ) as evaluate:
        evaluate.log_metrics({"f1": 0.5})

    assert evaluate.mlflow_run_id == train.mlflow_run_id
    assert evaluate.clearml_task_id != train.clearml_task_id
    tags = MlflowClient(project_settings.tracking_uri).get_run(train.mlflow_run_id).data.tags
    assert tags[TAG_CLEARML_TASK] == train.clearml_task_id  # the creating step keeps its link
    assert tags[f"{TAG_CLEARML_TASK}.evaluate"] == evaluate.clearml_task_id
    task = session_task(project_settings, evaluate.clearml_task_id)
    assert user_property(task, "mlflow_run_id") == train.mlflow_run_id


def test_a_resumed_run_names_the_image_each_step_ran_in(project_settings: Settings) -> None:
    train_settings = project_settings.model_copy(update={"image": "localhost/mlrig/train:1"})
    evaluate_settings = project_settings.model_copy(update={"image": "localhost/mlrig/evaluate:2"})
    with tracked_step(train_settings, "train", "train@probe", new_mlflow_run=True) as train:
        pass
    with tracked_step(
        evaluate_settings, "evaluate", "evaluate@probe", mlflow_run_id=train.mlflow_run_id
    ):
        pass

    tags = MlflowClient(project_settings.tracking_uri).get_run(train.mlflow_run_id).data.tags
    assert tags[TAG_IMAGE] == "localhost/mlrig/train:1"  # the creating step keeps its own
    assert tags[f"{TAG_IMAGE}.evaluate"] == "localhost/mlrig/evaluate:2"


def test_run_started_inside_a_pipeline_run_is_its_child(
    project_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(project_settings.tracking_uri)
    parent = client.create_run(setup_mlflow(project_settings), run_name="pipeline")
    monkeypatch.setenv("MLRIG_PARENT_RUN_ID", parent.info.run_id)
    monkeypatch.setenv("MLRIG_PIPELINE_RUN_ID", "pipeline-7")

    with tracked_step(Settings(), "train", "train@child", new_mlflow_run=True) as run:
        pass

    child = client.get_run(run.mlflow_run_id)
    assert child.info.run_id != parent.info.run_id
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags[TAG_PIPELINE_RUN] == "pipeline-7"
    task = session_task(project_settings, run.clearml_task_id)
    assert f"{TAG_PIPELINE_RUN}:pipeline-7" in task["tags"]


def test_run_without_pipeline_run_has_no_parent(project_settings: Settings) -> None:
    with tracked_step(project_settings, "train", "train@alone", new_mlflow_run=True) as run:
        pass

    tags = MlflowClient(project_settings.tracking_uri).get_run(run.mlflow_run_id).data.tags
    assert "mlflow.parentRunId" not in tags
    assert TAG_PIPELINE_RUN not in tags


def test_exception_inside_marks_the_mlflow_run_failed(project_settings: Settings) -> None:
    with (
        pytest.raises(RuntimeError, match="fit diverged"),
        tracked_step(project_settings, "train", "train@broken", new_mlflow_run=True) as run,
    ):
        raise RuntimeError("fit diverged")

    mlflow_run = MlflowClient(project_settings.tracking_uri).get_run(run.mlflow_run_id)
    assert mlflow_run.info.status == "FAILED"
    # the ClearML task is still closed, so its session is there to inspect
    task = session_task(project_settings, run.clearml_task_id)
    assert user_property(task, "mlflow_run_id") == run.mlflow_run_id


def git_recorder(folder: Path) -> Path:
    """A `git` for PATH that appends its arguments to `folder/calls`, then runs the real git."""
    real_git = shutil.which("git")
    assert real_git, "git is not installed"
    folder.mkdir()
    wrapper = folder / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {folder / "calls"}\nexec {real_git} "$@"\n')
    wrapper.chmod(0o755)
    return folder / "calls"


def test_a_steps_clearml_task_runs_no_git_and_keeps_no_diff(
    project_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a git status of ClearML's beside a parallel stage's `git add dvc.lock` (DVC autostage)
    # failed the one or the other on .git/index.lock; an uncommitted diff carries secrets
    root = project_settings.root
    step_file = root / "steps" / "probe.py"
    step_file.parent.mkdir()
    step_file.write_text("print('probe')\n")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "probe"]):
        subprocess.run(["git", *command], cwd=root, check=True, capture_output=True)
    step_file.write_text("TOKEN = 'uncommitted-canary'\n")
    calls = git_recorder(tmp_path / "git-bin")
    monkeypatch.setenv("PATH", f"{calls.parent}{os.pathsep}{os.environ['PATH']}")
    # the executor passes the commit to its stages; the step itself looks nothing up
    monkeypatch.setenv("MLRIG_GIT_COMMIT", "0" * 40)
    monkeypatch.setattr(sys, "argv", [str(step_file)])  # the script ClearML inspects

    with tracked_step(Settings(), "split", "split") as run:
        pass

    assert not calls.exists(), f"git ran during the step: {calls.read_text()}"
    task = session_task(project_settings, run.clearml_task_id)
    assert "uncommitted-canary" not in json.dumps(task)
    assert f"mlrig.git_commit:{'0' * 40}" in task["tags"]
