"""`mlrig clearml pipeline` / `mlrig run --executor clearml`: the compiled pipeline on ClearML.

The submitter checks the server, uploads the workspace and the steps' records to the step store,
opens the pipeline's MLflow parent run and starts the controller in a process of its own
(`mlrig.entrypoints.controller`: ClearML's `start` ends its process), which stores the
description and the submission on the controller's task (`mlrig.executors.clearml.submission`).
The controller, enqueued on the services queue, builds one bash task per step from the stored
description. `--wait` follows the steps, ends the parent run as the pipeline ended and takes
their results back; without it, the controller ends the parent run when the pipeline ends.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError, Stopped, redact
from mlrig.executors.clearml.compile import (
    DESCRIPTION_CONFIGURATION,
    PIPELINE_ENDED,
    PIPELINE_ID_PREFIX,
    STEP_BINARY,
    STEP_FAILED,
    STEP_TASK_TYPE,
    PipelineDescription,
    PipelineStep,
    bash_entry_point,
    describe_pipeline,
    project_archive,
)
from mlrig.executors.clearml.submission import (
    SUBMISSION_CONFIGURATION,
    Submission,
    pipeline_outcome,
)
from mlrig.experiments.params import Params
from mlrig.settings import Settings
from mlrig.stopping import StopRequested
from mlrig.tracking.clearml_server import SUBMISSION, require_server
from mlrig.tracking.parent_run import (
    finish_parent_run,
    new_pipeline_run_id,
    parent_run_ending,
    start_parent_run,
)

if TYPE_CHECKING:  # ClearML and DVC load inside functions, so `mlrig --help` stays fast
    from clearml import PipelineController, Task

    from mlrig.executors.clearml.store import StepStore


#: what the submitter starts, and a services agent runs again: the pipeline's controller
CONTROLLER_MODULE = "mlrig.entrypoints.controller"


def remote_store(settings: Settings) -> StepStore:
    """The step store of this project's DVC remote (MLRIG_DVC_REMOTE, else the default).

    Raises:
        RemoteError: no remote, or one that is not on S3.
    """
    from mlrig.dvc.remote import shared_remote
    from mlrig.executors.clearml.store import StepStore

    remote = shared_remote(settings)
    return StepStore.of_remote(remote.url, remote.endpoint)


@dataclass(frozen=True)
class ClearMLExecutor:
    """`--executor clearml`: dvc.yaml compiled into a ClearML pipeline, each stage a step in
    its image (`mlrig.cli` submits it)."""

    settings: Settings

    def plan(self) -> dict[str, set[str]]:
        return describe_pipeline(self.settings).graph()


def prepare_submission(settings: Settings, description: PipelineDescription) -> PipelineDescription:
    """Upload the workspace the pods start from; mark the steps whose result the remote holds.

    Raises:
        ConfigError: the DVC remote is not on S3.
        MlrigError: the remote cannot be read or written.
    """
    store = remote_store(settings)
    if store.upload_workspace(project_archive(settings.root)) != description.workspace:
        raise MlrigError("The project's files changed while it was compiled: submit again.")
    description = with_records(description, store)
    for step in description.submitted():
        store.put_step_task(description.step_task(step))
    return description


def take_results(settings: Settings, steps: list[PipelineStep]) -> None:
    """Merge the steps' records into this checkout's dvc.lock and pull their outputs, so it
    ends as after a local run (then `git commit dvc.lock` records what the cluster made).

    Raises:
        MlrigError: a step has no record (it did not finish), or pulling failed.
    """
    from mlrig.dvc.commands import remote_arguments, run_dvc
    from mlrig.dvc.lockfile import merge_lock_entries

    store = remote_store(settings)
    entries = {step.name: store.get_record(step.input_key, step.name) for step in steps}
    merge_lock_entries(settings.root / "dvc.lock", entries)
    arguments = ["pull", *remote_arguments(settings), *entries]
    log_path = settings.state_dir / "logs" / "clearml-pull.log"
    run_dvc(arguments, settings.root, dict(os.environ), log_path, lambda _: None)


def with_records(description: PipelineDescription, store: StepStore) -> PipelineDescription:
    """The description with each step whose result the store holds marked `recorded`."""
    steps = [
        step.model_copy(update={"recorded": store.has_record(step.input_key)})
        for step in description.steps
    ]
    return description.model_copy(update={"steps": steps})


def bash_task_arguments(
    project: str,
    name: str,
    command: str,
    image: str,
    task_type: str = STEP_TASK_TYPE,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The arguments of `Task.create` for a task that runs `command` in `image`.

    Bash binary, no repository, no packages: an agent builds no environment, the image has
    everything. `environment` becomes the task's container arguments (`-e NAME=value`), which
    the k8s glue makes the pod's environment.
    """
    return {
        "project_name": project,
        "task_name": name,
        "task_type": task_type,
        "script": bash_entry_point(command),
        "binary": STEP_BINARY,
        "packages": "",  # ClearML: an empty string installs nothing, not even a repo's
        "docker": image,
        "docker_args": shlex.join(
            word for key, value in (environment or {}).items() for word in ("-e", f"{key}={value}")
        ),
        "add_task_init_call": False,
        "detect_repository": False,
    }


def step_task_arguments(description: PipelineDescription, step: PipelineStep) -> dict[str, Any]:
    """The arguments of `Task.create` for a step's task: its container arguments name its stage
    and input key; the pod reads the rest from the DVC remote."""
    environment = description.step_task(step).container_environment()
    return bash_task_arguments(
        description.project, step.name, step.command, step.image, environment=environment
    )


def step_task_definition(description: PipelineDescription, step: PipelineStep) -> dict[str, Any]:
    """The task ClearML would create for a step, as ClearML itself builds it (no server)."""
    from clearml.backend_interface.task.populate import CreateAndPopulate

    populate = CreateAndPopulate(
        **step_task_arguments(description, step), raise_on_missing_entries=False
    )
    return dict(populate.create_task(dry_run=True))


def create_step_task(description: PipelineDescription, step: PipelineStep, node: Any) -> Task:
    """The base task of a step, made when the controller launches it (needs a server).

    ClearML calls it with the step's node, which adds nothing to what `step` says.
    """
    from clearml import Task

    return Task.create(**step_task_arguments(description, step))


def build_controller(description: PipelineDescription) -> PipelineController:
    """A ClearML pipeline controller with one step per stage, cached by its inputs.

    Steps whose result the DVC remote already holds (`recorded`) are left out. In offline mode
    (CLEARML_OFFLINE_MODE=1) the controller is built and can be checked and drafted; its
    steps' tasks are made only when it runs, against a server.
    """
    from clearml import PipelineController

    controller = PipelineController(
        name=description.name,
        project=description.project,
        version=description.version,
        repo="",  # the steps run in their images; the controller needs no checkout either
        add_pipeline_tags=True,
    )
    submitted = description.submitted()
    names = {step.name for step in submitted}
    for step in submitted:  # a recorded parent is done: its pods' record is all a child needs
        controller.add_step(
            name=step.name,
            parents=[parent for parent in step.parents if parent in names],
            execution_queue=step.queue,
            parameter_override=step.clearml_parameters(),
            base_task_factory=partial(create_step_task, description, step),
            cache_executed_step=True,
        )
    return controller


def require_mlflow_server(settings: Settings) -> None:
    """A submission opens the steps' parent run on the MLflow server their pods log to.

    Raises:
        ConfigError: MLFLOW_TRACKING_URI names no server, or the server does not answer.
    """
    from mlrig.doctor import require_services

    if not settings.tracking_uri.startswith(("http://", "https://")):
        where = (
            f"is {redact(settings.tracking_uri)}, a store on this machine"
            if settings.mlflow_tracking_uri
            else "is not set (runs go to a store on this machine)"
        )
        raise ConfigError(
            "A ClearML pipeline's steps log to the MLflow server their pods reach, and the "
            f"submission opens their parent run there, but MLFLOW_TRACKING_URI {where}. Set it "
            "(and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) to the server of the "
            "chart's step pods; `mlrig clearml pipeline --dry-run` needs none."
        )
    require_services(settings, mlflow=True, dvc_remote=False)


def open_submission(settings: Settings, params: Params, *, wait: bool) -> Submission:
    """Open the pipeline's MLflow parent run, with the tags and params of `mlrig run`'s.

    Args:
        wait: this process follows the pipeline and ends the run; else the controller does.
    """
    pipeline_run_id = new_pipeline_run_id()
    return Submission(
        pipeline_run_id=pipeline_run_id,
        parent_run_id=start_parent_run(settings, pipeline_run_id, params, ended_here=wait),
        tracking_uri=redact(settings.tracking_uri),
        controller_ends_parent_run=not wait,
    )


def submit_pipeline(
    settings: Settings, description: PipelineDescription, params: Params, *, wait: bool
) -> tuple[str, Submission]:
    """Open the pipeline's MLflow parent run, then enqueue its controller on the services queue
    (MLRIG_CLEARML_SERVICES_QUEUE), which keeps the submission for the steps' pods.

    The controller ends the parent run when the pipeline ends, unless `wait`: then this process
    follows the pipeline and ends it (`follow_submission`). A failed submission ends it FAILED.

    Returns:
        The pipeline's id (its controller's task) and the submission stored on it.

    Raises:
        ConfigError: no ClearML server is configured.
        MlrigError: the child failed to enqueue the controller.
    """
    from mlflow import MlflowClient

    from mlrig.tracking.step_run import TAG_CLEARML_TASK

    require_server(settings, SUBMISSION)
    submission = open_submission(settings, params, wait=wait)
    with parent_run_ending(settings, submission.parent_run_id, finish=False):
        pipeline_id = enqueue_controller(settings, description, submission)
    # the run names the pipeline's task, as a step's run names its step's
    client = MlflowClient(settings.tracking_uri)
    client.set_tag(submission.parent_run_id, TAG_CLEARML_TASK, pipeline_id)
    return pipeline_id, submission


def enqueue_controller(
    settings: Settings, description: PipelineDescription, submission: Submission
) -> str:
    """Enqueue the pipeline's controller on the services queue; its id.

    ClearML's `PipelineController.start` ends its process (os._exit), so it runs in a child.

    Raises:
        MlrigError: the child failed to enqueue the controller.
    """
    run_dir = settings.state_dir / "clearml" / "submit"
    run_dir.mkdir(parents=True, exist_ok=True)
    description_path = run_dir / "pipeline.json"
    description_path.write_text(description.model_dump_json(indent=2))
    submission_path = run_dir / "submission.json"
    submission_path.write_text(submission.model_dump_json(indent=2))
    queue = settings.clearml_services_queue
    command = [
        sys.executable, "-m", CONTROLLER_MODULE, str(description_path), queue, str(submission_path)
    ]  # fmt: skip
    result = subprocess.run(command, cwd=settings.root, capture_output=True, text=True)
    ids = [
        line.removeprefix(PIPELINE_ID_PREFIX)
        for line in result.stdout.splitlines()
        if line.startswith(PIPELINE_ID_PREFIX)
    ]
    if result.returncode != 0 or not ids:
        tail = "\n".join(f"  | {line}" for line in result.stderr.splitlines()[-20:])
        raise MlrigError(
            f"Submitting the pipeline to ClearML failed (exit {result.returncode}).\n{tail}",
            exit_code=EXIT_FAILED,
        )
    return ids[-1]


@dataclass(frozen=True)
class PipelineEnd:
    """How a followed pipeline ended: its controller's status and its failed steps."""

    pipeline_id: str
    status: str
    failed: list[str]

    @property
    def parent_run_status(self) -> str:
        """FINISHED, KILLED (the pipeline was stopped) or FAILED."""
        if self.status == "completed" and not self.failed:
            return "FINISHED"
        return "KILLED" if self.status == "stopped" and not self.failed else "FAILED"

    def raise_unless_completed(self) -> None:
        """Raises MlrigError naming the failed steps, unless the pipeline completed."""
        if self.parent_run_status != "FINISHED":
            raise MlrigError(
                f"ClearML pipeline {self.pipeline_id} ended {self.status}; failed step(s): "
                f"{', '.join(self.failed) or 'none (the controller itself)'}. Their logs are in "
                "the ClearML UI under the pipeline's steps.",
                exit_code=EXIT_FAILED,
            )


def follow_pipeline(pipeline_id: str, poll_seconds: float = 10.0) -> PipelineEnd:
    """Print each step's status as it changes until the pipeline ends; how it ended."""
    import time

    from clearml import Task

    controller = Task.get_task(task_id=pipeline_id)
    # on stderr: stdout keeps only the summary (--json)
    print(f"Following {controller.get_output_log_web_page()}", file=sys.stderr, flush=True)
    statuses: dict[str, str] = {}
    while True:
        controller.reload()
        status = str(controller.get_status())
        for step in Task.get_tasks(task_filter={"parent": pipeline_id}):  # the steps' tasks
            step_status = str(step.get_status())
            if statuses.get(step.name) != step_status:
                statuses[step.name] = step_status
                print(f"  {step.name}: {step_status}", file=sys.stderr, flush=True)
        if status in PIPELINE_ENDED:
            break
        time.sleep(poll_seconds)
    failed = sorted(name for name, step_status in statuses.items() if step_status in STEP_FAILED)
    return PipelineEnd(pipeline_id=pipeline_id, status=status, failed=failed)


def follow_submission(settings: Settings, pipeline_id: str, submission: Submission) -> None:
    """Follow the pipeline to its end; its MLflow parent run then ends as the pipeline did
    (FINISHED, FAILED, or KILLED when it was stopped, or when a signal stops the following).

    Raises:
        MlrigError: the pipeline did not complete; the message names its failed steps.
        Stopped: SIGINT or SIGTERM stopped the following (not the pipeline).
    """
    status = "FAILED"
    try:
        end = follow_pipeline(pipeline_id)
        status = end.parent_run_status
    except StopRequested as stop:
        status = "KILLED"
        raise Stopped(stopped_following(pipeline_id, submission, stop), stop.exit_code) from None
    finally:
        finish_parent_run(settings, submission.parent_run_id, status)
    end.raise_unless_completed()


def stopped_following(pipeline_id: str, submission: Submission, stop: StopRequested) -> str:
    """The message of a follower a signal stopped: the pipeline goes on without it."""
    return (
        f"Stopped following ClearML pipeline {pipeline_id} ({stop}); its MLflow parent run "
        f"{submission.parent_run_id} is marked KILLED. The pipeline had not ended and goes on "
        "on the ClearML server: abort it in the ClearML UI to stop its steps, or let it finish, "
        "then `mlrig run --executor clearml --wait` finds every stage's result on the DVC "
        "remote, submits nothing and takes them into this checkout."
    )


def saved_configuration(path: Path, name: str) -> str:
    """What the controller is built from: the file given here, or, when a services agent runs
    the enqueued controller, the copy stored on the controller's task under `name`.

    Raises:
        MlrigError: neither holds it.
    """
    from clearml import Task
    from clearml.config import get_remote_task_id, running_remotely

    if running_remotely():  # the agent re-runs this module; the file stayed on the submitter
        text = Task.get_task(task_id=get_remote_task_id()).get_configuration_object(name)
    else:
        text = path.read_text()
    if not text:
        raise MlrigError(f"No {name} in {path} or on the controller's task.")
    return str(text)


def store_on_controller(
    controller: PipelineController, description: PipelineDescription, submission: Submission
) -> None:
    """Keep the description and the submission on the controller's task, where the controller
    (run by a services agent) and the steps' pods read them; and the parent run's id as the
    task's `mlflow_run_id`, as every task of a step names its run."""
    stored = {
        DESCRIPTION_CONFIGURATION: (
            description,
            "the compiled dvc.yaml the controller builds its steps from (mlrig)",
        ),
        SUBMISSION_CONFIGURATION: (
            submission,
            "the MLflow parent run of the steps' runs, and who ends it (mlrig)",
        ),
    }
    for name, (model, meaning) in stored.items():
        controller.task.set_configuration_object(
            name=name,
            config_text=model.model_dump_json(indent=2),
            config_type="json",
            description=meaning,
        )
    controller.task.set_user_properties(mlflow_run_id=submission.parent_run_id)


def start_controller(description_path: Path, services_queue: str, submission_path: Path) -> None:
    """Build the controller from a saved description and enqueue it (this process ends). On
    the services agent: run the pipeline to its end, then end its MLflow parent run if the
    submission left that to the controller."""
    from clearml.config import running_remotely

    description_text = saved_configuration(description_path, DESCRIPTION_CONFIGURATION)
    description = PipelineDescription.model_validate_json(description_text)
    submission_text = saved_configuration(submission_path, SUBMISSION_CONFIGURATION)
    submission = Submission.model_validate_json(submission_text)
    controller = build_controller(description)
    store_on_controller(controller, description, submission)
    print(f"{PIPELINE_ID_PREFIX}{controller.id}", flush=True)
    if not running_remotely():
        controller.start(queue=services_queue)  # enqueues it, then ends this process
        return
    run_to_its_end(controller, services_queue, submission)  # pragma: no cover - see there


def run_to_its_end(  # pragma: no cover - runs on a services agent, against a ClearML server
    controller: PipelineController, services_queue: str, submission: Submission
) -> None:
    """On the services agent, `start` runs the pipeline and returns once it ended (ClearML 2.1:
    `_start(wait=True)`, then `wait()` and `stop()`); the steps' statuses say how it ended."""
    from mlrig import stopping

    status = "FAILED"
    try:
        with stopping.stop_on_signals():
            controller.start(queue=services_queue)
        nodes = controller.get_pipeline_dag().values()
        status = pipeline_outcome(node.status for node in nodes)
    except StopRequested:
        status = "KILLED"
        raise
    finally:
        if submission.controller_ends_parent_run:
            end_parent_run_from_controller(submission, status)


def end_parent_run_from_controller(submission: Submission, status: str) -> bool:
    """End the submission's parent run from the controller, on the MLflow server of its own
    environment (MLFLOW_TRACKING_URI and credentials, as the step pods have them).

    Returns:
        Whether it did; when it cannot, it says why on stderr (the pipeline's outcome stands).
    """
    from mlrig.settings import load_settings

    settings = load_settings()
    run = f"MLflow parent run {submission.parent_run_id}"
    if settings.uses_local_mlflow:
        print(
            f"{run} on {submission.tracking_uri} stays RUNNING: MLFLOW_TRACKING_URI is not set "
            "where the controller runs. Give the services agent's containers the MLflow "
            "settings the step pods have.",
            file=sys.stderr,
        )
        return False
    try:
        finish_parent_run(settings, submission.parent_run_id, status)
    except MlrigError as error:
        print(f"{run} was not ended {status}: {error}", file=sys.stderr)
        return False
    print(f"{run} ended {status}", flush=True)
    return True
