"""`mlrig clearml pipeline`: dvc.yaml compiled into a ClearML pipeline, one step per stage.

The compiled description holds, per stage, what a ClearML step needs and what its cache key
must cover: the command (`mlrig stage <stage>`), its parents in DVC's DAG, the DVC hashes of its
deps, the params it reads with their values, its outs, its step image and its queue.

ClearML's step cache hashes a task's script, hyperparameters and container arguments, but not
the data a step reads nor its image (clearml#971). So each step's hyperparameters carry the DVC
hashes of its source deps (code, data: what no stage makes), its params, its image, and a key
of everything upstream of it. The outputs of upstream stages it reads are left to that key:
they are made again before it runs, so their hashes here (workspace or dvc.lock) say only what
this checkout holds. The cache key then changes exactly when data, params, image or anything
upstream changes.

A step's task is a bash-binary task (`/bin/bash -c "mlrig stage <stage>"`) with no repository
and no pip requirements, so an agent builds no environment: the step image has everything.
Settings and secrets reach the step from the agent's pod template, never from the task. The
task's container arguments name the stage and its input key; the pod reads its workspace and
its parents' results from the DVC remote (`mlrig.step_store`), and a stage whose result the
remote already holds for its input key is not submitted at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mlrig import __version__
from mlrig.dag import step_of, topological_order
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.images import no_image_error
from mlrig.lineage import git_commit
from mlrig.settings import Settings, unset_names
from mlrig.stage import overlaps
from mlrig.step_store import StepTask

if TYPE_CHECKING:  # ClearML and DVC load inside functions, so `mlrig --help` stays fast
    from clearml import PipelineController, Task
    from dvc.stage import Stage

    from mlrig.step_store import StepStore

PIPELINE_NAME = "mlrig"
#: sections of a step's ClearML hyperparameters (`section/name`)
MLRIG_SECTION = "mlrig"
DEPS_SECTION = "deps"
PARAMS_SECTION = "params"
STEP_BINARY = "/bin/bash"
STEP_TASK_TYPE = "custom"
#: the params file DVC reads when a stage names params without a file
DEFAULT_PARAMS_FILE = "params.yaml"
#: what a ClearML server needs to be reached, and what each setting is for
SERVER_SETTINGS = {
    "CLEARML_API_HOST": "the ClearML API server, e.g. https://api.clear.ml or http://clearml:8008",
    "CLEARML_API_ACCESS_KEY": "the access key of ClearML credentials (Settings > Workspace)",
    "CLEARML_API_SECRET_KEY": "the secret key of those credentials",
}
#: what the submitting subprocess prints before ClearML ends it, so the caller learns the id
PIPELINE_ID_PREFIX = "mlrig-pipeline-id: "
#: a controller task's statuses once it will change no more, and a failed step's
PIPELINE_ENDED = frozenset({"completed", "failed", "stopped", "closed", "published"})
STEP_FAILED = frozenset({"failed", "stopped"})
#: the configuration object of the controller's task that holds the compiled description
DESCRIPTION_CONFIGURATION = "mlrig pipeline"


def digest(value: Any) -> str:
    """SHA-256 of a JSON value with sorted keys: equal values, equal digest."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def bash_entry_point(command: str) -> str:
    """A bash-binary task's entry point, `-c <command>` unquoted: clearml-agent (3.0.3,
    worker.py) runs `bash -c` with the words after `-c` joined by spaces, quotes and all."""
    return f"-c {command}"


class PipelineStep(BaseModel):
    """One DVC stage as a ClearML pipeline step."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the DVC stage, as dvc.yaml names it: train@knn")
    step: str = Field(description="the step folder and image the stage runs in: train")
    command: str = Field(description="what the step's container runs")
    parents: list[str] = Field(description="the stages whose outputs this stage reads")
    deps: dict[str, str | None] = Field(
        description="each dep path with its DVC hash (workspace, else dvc.lock; None: neither)"
    )
    params: dict[str, Any] = Field(description="each param the stage reads, with its value")
    outs: list[str] = Field(description="the stage's outputs (outs, metrics and plots)")
    image: str = Field(description="the step image reference")
    queue: str = Field(description="the ClearML queue the step is enqueued on")
    upstream_key: str = Field(description="a digest of the input keys of the parents")
    upstream_deps: list[str] = Field(
        default_factory=list, description="the deps the parents make (keyed by upstream_key)"
    )
    recorded: bool = Field(
        default=False,
        description="the DVC remote holds this stage's result for its input key: not submitted",
    )

    @property
    def entry_point(self) -> str:
        """The task's entry point (see `bash_entry_point`)."""
        return bash_entry_point(self.command)

    @property
    def source_deps(self) -> dict[str, str | None]:
        """The deps no stage makes (code, data), with their hashes."""
        return {path: value for path, value in self.deps.items() if path not in self.upstream_deps}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_key(self) -> str:
        """A digest of everything the stage's result depends on, upstream included."""
        return digest(
            {
                "command": self.command,
                "deps": self.source_deps,
                "params": self.params,
                "image": self.image,
                "upstream": self.upstream_key,
            }
        )

    def clearml_parameters(self) -> dict[str, str]:
        """The step's ClearML hyperparameters: what its cache key must change with.

        `deps/<path>` holds each source dep's DVC hash (`upstream` for a dep a parent makes),
        `params/<key>` each param's value (JSON), `mlrig/image` the image and `mlrig/upstream`
        the key of everything upstream.
        """
        source = self.source_deps
        return {
            f"{MLRIG_SECTION}/stage": self.name,
            f"{MLRIG_SECTION}/image": self.image,
            f"{MLRIG_SECTION}/upstream": self.upstream_key,
            **{
                f"{DEPS_SECTION}/{path}": (source[path] or "") if path in source else "upstream"
                for path in self.deps
            },
            **{
                f"{PARAMS_SECTION}/{key}": json.dumps(value, sort_keys=True)
                for key, value in self.params.items()
            },
        }


class PipelineDescription(BaseModel):
    """dvc.yaml as a ClearML pipeline: its name, project, version and steps in DAG order."""

    model_config = ConfigDict(frozen=True)

    name: str
    project: str
    version: str
    steps: list[PipelineStep]
    workspace: str = Field(description="digest of the project files' archive the pods fetch")
    git_commit: str = Field(description="the commit the runs' lineage names")

    def graph(self) -> dict[str, set[str]]:
        """Each step with the steps it depends on."""
        return {step.name: set(step.parents) for step in self.steps}

    def submitted(self) -> list[PipelineStep]:
        """The steps to run: those whose result the remote does not hold yet."""
        return [step for step in self.steps if not step.recorded]

    def step_task(self, step: PipelineStep) -> StepTask:
        """What the step's pod is told: its stage, workspace, and the records of its parents."""
        keys = {other.name: other.input_key for other in self.steps}
        return StepTask(
            stage=step.name,
            workspace=self.workspace,
            input_key=step.input_key,
            parents={parent: keys[parent] for parent in step.parents},
            git_commit=self.git_commit,
        )


def dep_hash(dep: Any) -> str | None:
    """A dep's DVC hash in the workspace, else the one dvc.lock records, else None."""
    hash_info = dep.get_hash() if dep.exists else dep.hash_info
    return f"{hash_info.name}:{hash_info.value}" if hash_info else None


#: a stage's deps with their DVC hashes, its params with their values, and its outs
StageFacts = tuple[dict[str, str | None], dict[str, Any], list[str]]


def stage_inputs_and_outputs(stage: Stage) -> StageFacts:
    """A stage's deps with their DVC hashes, its params with their values, and its outs."""
    from dvc.dependency.param import ParamsDependency

    deps: dict[str, str | None] = {}
    params: dict[str, Any] = {}
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            prefix = "" if dep.def_path == DEFAULT_PARAMS_FILE else f"{dep.def_path}:"
            values = dep.read_params()
            if missing := sorted(set(dep.params or []) - set(values)):  # DVC skips them silently
                raise ConfigError(
                    f"Stage {stage.addressing!r} reads param(s) {', '.join(missing)} that "
                    f"{dep.def_path} does not have: add them, or drop them from dvc.yaml."
                )
            params |= {f"{prefix}{key}": value for key, value in values.items()}
        else:
            deps[str(dep.def_path)] = dep_hash(dep)
    return deps, params, [str(out.def_path) for out in stage.outs]


def stage_queue(stage: str, default_queue: str, step_queues: Mapping[str, str]) -> str:
    """The queue of a stage: its own entry, else its step's, else the default."""
    return step_queues.get(stage) or step_queues.get(step_of(stage)) or default_queue


def read_pipeline(root: Path) -> tuple[dict[str, set[str]], dict[str, StageFacts]]:
    """dvc.yaml's DAG and each stage's deps, params and outs, through DVC's own API.

    Raises:
        ConfigError: DVC cannot read dvc.yaml or params.yaml.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from mlrig.dag import graph_of

    # DVC names stages relative to the working directory: from the root, `train@knn`
    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:
            graph = graph_of(repo)
            stages = {stage.addressing: stage for stage in repo.index.stages}
            return graph, {name: stage_inputs_and_outputs(stages[name]) for name in graph}
    except DvcException as error:
        detail = f" ({error.__cause__})" if error.__cause__ else ""  # which key, for validation
        raise ConfigError(
            f"DVC cannot read the pipeline in {root}: {error}{detail}. Fix dvc.yaml (or "
            "params.yaml); dvc status shows the same problem."
        ) from None


def compile_pipeline(
    root: Path,
    images: Mapping[str, str],
    *,
    default_queue: str,
    step_queues: Mapping[str, str] | None = None,
    project: str = PIPELINE_NAME,
    version: str = __version__,
) -> PipelineDescription:
    """Compile dvc.yaml (foreach expanded, through DVC's own API) into a pipeline description.

    Args:
        root: the project folder (the one holding dvc.yaml).
        images: each step's image reference (`mlrig.images.step_image_references`).
        default_queue: the queue of a stage that `step_queues` does not name.
        step_queues: queues by stage (`train@knn`) or by step (`train`).
        project: the ClearML project of the pipeline.
        version: the pipeline version ClearML stores (semantic: 1.0.0).

    Returns:
        The steps in dependency order, with the digest of the workspace their pods fetch (the
        project's files at this checkout) and the commit.

    Raises:
        ConfigError: a stage's step has no image.
    """
    graph, facts = read_pipeline(root)
    no_image = sorted({step_of(name) for name in graph} - set(images))
    if no_image:
        raise no_image_error(no_image)
    steps: dict[str, PipelineStep] = {}
    for name in topological_order(graph):
        parents = sorted(graph[name])
        deps, params, outs = facts[name]
        made_upstream = [out for parent in parents for out in steps[parent].outs]
        steps[name] = PipelineStep(
            name=name,
            step=step_of(name),
            command=shlex.join(["mlrig", "stage", name]),
            parents=parents,
            deps=deps,
            params=params,
            outs=outs,
            image=images[step_of(name)],
            queue=stage_queue(name, default_queue, step_queues or {}),
            upstream_key=digest({parent: steps[parent].input_key for parent in parents}),
            upstream_deps=[
                path for path in deps if any(overlaps(path, out) for out in made_upstream)
            ],
        )
    return PipelineDescription(
        name=PIPELINE_NAME,
        project=project,
        version=version,
        steps=list(steps.values()),
        workspace=hashlib.sha256(project_archive(root)).hexdigest(),
        git_commit=git_commit(root),
    )


def describe_pipeline(
    settings: Settings,
    default_queue: str | None = None,
    pushed_images: Mapping[str, str] | None = None,
) -> PipelineDescription:
    """The pipeline of this project, each stage in the image the containers executor would use.

    The images' references come from the sources, so no container engine is needed (unless
    MLRIG_BASE_IMAGE names a local image); steps whose image was pushed need none at all.

    Args:
        pushed_images: step -> `registry/step@sha256:...` of the images a CI build job pushed
            (`mlrig images push --digests`); they replace the local content-tag references.

    Raises:
        ConfigError: a step without an image, a pushed image of a step the pipeline does not
            have, or MLRIG_BASE_IMAGE set with no engine to read it.
    """
    from mlrig.images import engine_if_any, step_image_references, step_names

    pushed = dict(pushed_images or {})
    steps = step_names(settings.root)
    unknown = sorted(set(pushed) - set(steps))
    if unknown:
        raise ConfigError(
            f"The image digest files name step(s) {', '.join(unknown)}, which this project has "
            f"no image for (steps: {', '.join(sorted(steps))}). Pass the digest files of this "
            "commit's build jobs."
        )
    images = pushed
    if not set(steps) <= set(pushed):
        images = step_image_references(settings, engine_if_any(settings)) | pushed
    return compile_pipeline(
        settings.root,
        images,
        default_queue=default_queue or settings.clearml_queue,
        step_queues=settings.clearml_step_queues,
        project=settings.clearml_project,
    )


def project_archive(root: Path) -> bytes:
    """The workspace every step's pod starts from: the project's files at this checkout."""
    from mlrig.containers import project_files
    from mlrig.step_store import workspace_archive

    return workspace_archive(root, project_files(root))


def remote_store(settings: Settings) -> StepStore:
    """The step store of this project's DVC remote (MLRIG_DVC_REMOTE, else the default).

    Raises:
        ConfigError: no remote, or one that is not on S3.
    """
    from mlrig.containers import container_remote
    from mlrig.step_store import StepStore

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
    from mlrig.dvc import merge_lock_entries, remote_arguments, run_dvc

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


def require_server(
    environment: Mapping[str, str],
    instead: str = "look at what would be submitted with: mlrig clearml pipeline --dry-run",
) -> None:
    """Raises ConfigError naming every ClearML server setting that is not set.

    Args:
        instead: what the user can do without a server, the end of the message.
    """
    unset = unset_names({name: environment.get(name) for name in SERVER_SETTINGS})
    missing = {name: SERVER_SETTINGS[name] for name in unset}
    if missing or environment.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true"):
        lines = "\n".join(f"  {name}: {why}" for name, why in missing.items())
        raise ConfigError(
            "Submitting to a ClearML queue needs a ClearML server, and "
            + (f"these are not set:\n{lines}\n" if missing else "CLEARML_OFFLINE_MODE is on. ")
            + f"Set them (and unset CLEARML_OFFLINE_MODE), or {instead}"
        )


def submit_pipeline(
    settings: Settings, description: PipelineDescription, services_queue: str
) -> str:
    """Enqueue the pipeline's controller on `services_queue`; its id.

    ClearML's `PipelineController.start` ends its process (os._exit), so it runs in a child.

    Raises:
        ConfigError: no ClearML server is configured.
        MlrigError: the child failed to enqueue the controller.
    """
    require_server(os.environ)
    run_dir = settings.state_dir / "clearml" / "submit"
    run_dir.mkdir(parents=True, exist_ok=True)
    description_path = run_dir / "pipeline.json"
    description_path.write_text(description.model_dump_json(indent=2))
    command = [sys.executable, "-m", __name__, str(description_path), services_queue]
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


if __name__ == "__main__":  # the child of submit_pipeline, and the controller on a services agent
    start_controller(Path(sys.argv[1]), sys.argv[2])
