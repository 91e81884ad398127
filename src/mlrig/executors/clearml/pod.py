"""What a ClearML step's pod does: its stage, in a workspace fetched from the step store.

The pod starts from the step image with an empty workspace and `MLRIG_STAGE` / `MLRIG_INPUT_KEY`
in its environment. It fetches the project's files and the records of the stages before it,
reads the MLflow parent run of its submission from its task's parent (the pipeline's controller,
`mlrig.executors.clearml.submission`), runs its stage as a stage container does
(`mlrig.executors.workspace`) under that parent run, records its `dvc.lock` entry under its
input key, and reports its status to its ClearML task.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlrig.dvc.lockfile import lock_entry, merge_lock_entries
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError, redact
from mlrig.executors.clearml.store import INPUT_KEY_VARIABLE, STAGE_VARIABLE
from mlrig.executors.workspace import require_settings, run_stage
from mlrig.settings import Settings


def step_of_pod(environment: Mapping[str, str]) -> tuple[str, str] | None:
    """The stage and input key of a ClearML step's pod; None in any other container.

    Raises:
        ConfigError: the input key is set without the stage.
    """
    key = environment.get(INPUT_KEY_VARIABLE)
    if not key:
        return None
    if not (stage := environment.get(STAGE_VARIABLE)):
        raise ConfigError(
            f"This pod runs a ClearML pipeline step ({INPUT_KEY_VARIABLE} is set) but "
            f"{STAGE_VARIABLE} is not: the step's container arguments lost it. Submit again."
        )
    return stage, key


@contextmanager
def clearml_status(settings: Settings, task_id: str | None) -> Iterator[None]:
    """Mark a step's ClearML task running, then completed or failed.

    With the glue's K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT no clearml-agent runs in the pod, so this
    is what reports the status. The stage's own processes, with CLEARML_TASK_ID set, log their
    params, metrics and MLflow run id to the same task.
    """
    if not task_id:
        yield
        return
    if settings.clearml_is_offline:
        print(f"ClearML is offline (no CLEARML_API_HOST): task {task_id}'s status is not reported")
        os.environ.pop("CLEARML_TASK_ID")  # the stage's tasks become offline sessions instead
        yield
        return
    from mlrig.tracking.clearml_server import check_server
    from mlrig.tracking.step_run import configure_clearml

    # the SDK retries a dead server for minutes; this answers in seconds
    check_server(settings, meanwhile="the stage did not run.")
    configure_clearml(settings)
    from clearml import Task

    try:
        task = Task.get_task(task_id=task_id)
    except Exception as error:  # the SDK raises many types for a missing task or a refusal
        raise MlrigError(
            f"ClearML at {settings.clearml_api_host} has no task {task_id} for this pod "
            f"({type(error).__name__}: {error}). Was the task deleted? Submit again.",
            exit_code=EXIT_FAILED,
        ) from None
    task.mark_started(force=True)
    try:
        yield
    except BaseException as error:
        task.mark_failed(status_reason=str(error).splitlines()[0][:250], force=True)
        raise
    task.mark_completed(force=True)


def run_step_task(
    stage: str,
    input_key: str,
    workspace: Path,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> None:
    """What a pipeline step's pod runs: fetch its workspace and the records of the stages before
    it, run the stage, and record its dvc.lock entry under its input key.

    Raises:
        ConfigError: a setting is missing.
        MlrigError: the step, its workspace or a parent's record is not on the remote, or the
            stage failed.
    """
    from mlrig.executors.clearml.store import StepStore

    require_settings()
    store = StepStore.of_remote(
        os.environ["MLRIG_DVC_REMOTE_URL"], os.environ.get("AWS_ENDPOINT_URL")
    )
    settings = Settings(project_dir=workspace)
    task_id = os.environ.get("CLEARML_TASK_ID")  # the offline status report drops it
    with clearml_status(settings, task_id):
        step = store.get_step_task(input_key, stage)
        if not (workspace / "dvc.yaml").is_file():
            on_phase(f"fetching workspace {step.workspace[:12]}")
            store.download_workspace(step.workspace, workspace)
        parents = {parent: store.get_record(key, parent) for parent, key in step.parents.items()}
        merge_lock_entries(workspace / "dvc.lock", parents)
        os.environ.setdefault("MLRIG_GIT_COMMIT", step.git_commit)  # the pod has no checkout
        os.environ.update(parent_run_environment(settings, task_id, on_phase))
        run_stage(settings, stage, on_phase=on_phase)
        store.put_record(input_key, stage, lock_entry(workspace, stage))
        on_phase(f"recorded {stage} under input key {input_key[:12]}")


def parent_run_environment(
    settings: Settings, task_id: str | None, on_phase: Callable[[str], None]
) -> dict[str, str]:
    """What makes the stage's MLflow runs children of its submission's parent run: the ids the
    submission stored on the controller, the parent of this step's task ({} when there is none).

    Raises:
        MlrigError: the submission cannot be read, or its parent run is not in the MLflow store
            this pod logs to.
    """
    from mlrig.executors.clearml.submission import submission_of_step
    from mlrig.tracking.step_run import configure_clearml

    if not task_id:
        return {}
    configure_clearml(settings)
    submission = submission_of_step(task_id)
    if submission is None:
        on_phase(f"task {task_id} is of no mlrig submission: the stage's runs have no parent run")
        return {}
    require_parent_run(settings, submission.parent_run_id, submission.tracking_uri)
    on_phase(f"under MLflow parent run {submission.parent_run_id}")
    return submission.stage_environment()


def require_parent_run(settings: Settings, run_id: str, submitted_to: str) -> None:
    """Raises MlrigError unless this pod's MLflow store holds the run (the step's runs would
    fail to start under it, in the middle of the stage).

    Args:
        submitted_to: the MLflow server the submitter opened the run on, for the message.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(settings.tracking_uri).get_run(run_id)
    except MlflowException as error:
        raise MlrigError(
            f"The pipeline's MLflow parent run {run_id} is not on MLflow at "
            f"{redact(settings.tracking_uri)} (this pod's MLFLOW_TRACKING_URI): "
            f"{str(error).splitlines()[0]}. The submission opened it on {submitted_to}: give "
            "the submitter and the step pods the same MLflow server, then submit again.",
            exit_code=EXIT_FAILED,
        ) from None
