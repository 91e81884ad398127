"""`mlrig clearml pipeline` / `mlrig run --executor clearml`: the compiled pipeline on ClearML.

The submitter checks the server, uploads the workspace and the steps' records to the step store,
and starts the controller in a process of its own (`mlrig.entrypoints.controller`: ClearML's
`start` ends its process); the controller, enqueued on the services queue, builds one bash task
per step from the stored description. `--wait` follows the steps and takes their results back.
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

from mlrig.errors import EXIT_FAILED, MlrigError
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
from mlrig.settings import Settings
from mlrig.tracking.clearml_server import SUBMISSION, require_server

if TYPE_CHECKING:  # ClearML and DVC load inside functions, so `mlrig --help` stays fast
    from clearml import PipelineController, Task

    from mlrig.executors.clearml.store import StepStore


#: what the submitter starts, and a services agent runs again: the pipeline's controller
CONTROLLER_MODULE = "mlrig.entrypoints.controller"


def remote_store(settings: Settings) -> StepStore:
    """The step store of this project's DVC remote (MLRIG_DVC_REMOTE, else the default).

    Raises:
        ConfigError: no remote, or one that is not on S3.
    """
    from mlrig.executors.clearml.store import StepStore
    from mlrig.executors.containers import container_remote

    remote = container_remote(settings)
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


def submit_pipeline(
    settings: Settings, description: PipelineDescription, services_queue: str
) -> str:
    """Enqueue the pipeline's controller on `services_queue`; its id.

    ClearML's `PipelineController.start` ends its process (os._exit), so it runs in a child.

    Raises:
        ConfigError: no ClearML server is configured.
        MlrigError: the child failed to enqueue the controller.
    """
    require_server(settings, SUBMISSION)
    run_dir = settings.state_dir / "clearml" / "submit"
    run_dir.mkdir(parents=True, exist_ok=True)
    description_path = run_dir / "pipeline.json"
    description_path.write_text(description.model_dump_json(indent=2))
    command = [sys.executable, "-m", CONTROLLER_MODULE, str(description_path), services_queue]
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


def follow_pipeline(pipeline_id: str, poll_seconds: float = 10.0) -> None:
    """Print each step's status as it changes until the pipeline ends.

    Raises:
        MlrigError: the pipeline did not complete; the message names its failed steps.
    """
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
    if status != "completed" or failed:
        raise MlrigError(
            f"ClearML pipeline {pipeline_id} ended {status}; failed step(s): "
            f"{', '.join(failed) or 'none (the controller itself)'}. Their logs are in the "
            "ClearML UI under the pipeline's steps.",
            exit_code=EXIT_FAILED,
        )


def saved_description(description_path: Path) -> PipelineDescription:
    """The description to build the controller from: the file given here, or, when a services
    agent runs the enqueued controller, the copy stored on the controller's task."""
    from clearml import Task
    from clearml.config import get_remote_task_id, running_remotely

    if running_remotely():  # the agent re-runs this module; the file stayed on the submitter
        text = Task.get_task(task_id=get_remote_task_id()).get_configuration_object(
            DESCRIPTION_CONFIGURATION
        )
    else:
        text = description_path.read_text()
    if not text:
        raise MlrigError(f"No pipeline description in {description_path} or on the task.")
    return PipelineDescription.model_validate_json(text)


def start_controller(description_path: Path, services_queue: str) -> None:
    """Build the controller from a saved description and enqueue it (this process ends)."""
    description = saved_description(description_path)
    controller = build_controller(description)
    controller.task.set_configuration_object(
        name=DESCRIPTION_CONFIGURATION,
        config_text=description.model_dump_json(indent=2),
        config_type="json",
        description="the compiled dvc.yaml the controller builds its steps from (mlrig)",
    )
    print(f"{PIPELINE_ID_PREFIX}{controller.id}", flush=True)
    controller.start(queue=services_queue)
