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

A step's task is a bash-binary task (`/bin/bash -c "mlrig stage <stage>"`) with no repository and no
pip requirements, so an agent builds no environment: the step image has everything. Settings and
secrets reach the step from the agent's pod template, never from the task. The task's container
arguments name the stage and its input key; the pod reads its workspace and its parents' results
from the DVC remote (`mlrig.executors.clearml.store`), and a stage whose result the remote already
holds for its input key is not submitted at all.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mlrig import __version__
from mlrig.dvc.dag import step_of, topological_order
from mlrig.dvc.stages import StageFacts, overlaps, read_pipeline
from mlrig.errors import ConfigError
from mlrig.executors.clearml.resources import (
    Placement,
    place_stages,
    queue_capacities,
    read_resources,
)
from mlrig.executors.clearml.store import StepTask
from mlrig.experiments.params import StageResources
from mlrig.images.build import no_image_error
from mlrig.lineage import git_commit
from mlrig.settings import Settings

#: what a step runs: the step image's own console script (`mlrig.entrypoints.stage`)
STAGE_ENTRYPOINT = "mlrig-stage"
PIPELINE_NAME = "mlrig"
#: sections of a step's ClearML hyperparameters (`section/name`)
MLRIG_SECTION = "mlrig"
DEPS_SECTION = "deps"
PARAMS_SECTION = "params"
STEP_BINARY = "/bin/bash"
STEP_TASK_TYPE = "custom"
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
    resources: StageResources | None = Field(
        default=None,
        description="what the stage's pod needs (params.yaml `resources`): it chose the queue, "
        "and is no input of the stage",
    )
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


def compile_pipeline(
    root: Path,
    images: Mapping[str, str],
    *,
    default_queue: str,
    step_queues: Mapping[str, str] | None = None,
    queue_resources: Mapping[str, Mapping[str, Any]] | None = None,
    project: str = PIPELINE_NAME,
    version: str = __version__,
) -> PipelineDescription:
    """Compile dvc.yaml (foreach expanded, through DVC's own API) into a pipeline description.

    Args:
        root: the project folder (the one holding dvc.yaml).
        images: each step's image reference (`mlrig.images.build.step_image_references`).
        default_queue: the queue of a stage that `step_queues` does not name.
        step_queues: queues by stage (`train@knn`) or by step (`train`).
        queue_resources: what each queue's pods provide (MLRIG_CLEARML_QUEUE_RESOURCES); a
            stage whose params.yaml `resources` ask for more than its queue provides runs on
            one that provides it (`mlrig.executors.clearml.resources`).
        project: the ClearML project of the pipeline.
        version: the pipeline version ClearML stores (semantic: 1.0.0).

    Returns:
        The steps in dependency order, with the digest of the workspace their pods fetch (the
        project's files at this checkout) and the commit.

    Raises:
        ConfigError: a stage's step has no image, or no queue can hold a stage.
        ParamsError: params.yaml's `resources` is not valid.
    """
    graph, facts = read_pipeline(root)
    no_image = sorted({step_of(name) for name in graph} - set(images))
    if no_image:
        raise no_image_error(no_image)
    order = topological_order(graph)
    placement = place_stages(
        order,
        read_resources(root, order),
        default_queue,
        step_queues or {},
        queue_capacities(queue_resources or {}),
    )
    return PipelineDescription(
        name=PIPELINE_NAME,
        project=project,
        version=version,
        steps=pipeline_steps(order, graph, facts, images, placement),
        workspace=hashlib.sha256(project_archive(root)).hexdigest(),
        git_commit=git_commit(root),
    )


def pipeline_steps(
    order: list[str],
    graph: Mapping[str, set[str]],
    facts: Mapping[str, StageFacts],
    images: Mapping[str, str],
    placement: Placement,
) -> list[PipelineStep]:
    """The steps in `order`, each with its image, queue and the key of what its parents made."""
    steps: dict[str, PipelineStep] = {}
    for name in order:
        parents = sorted(graph[name])
        deps, params, outs = facts[name]
        made_upstream = [out for parent in parents for out in steps[parent].outs]
        steps[name] = PipelineStep(
            name=name,
            step=step_of(name),
            command=shlex.join([STAGE_ENTRYPOINT, name]),
            parents=parents,
            deps=deps,
            params=params,
            outs=outs,
            image=images[step_of(name)],
            queue=placement.queues[name],
            resources=placement.needs[name],
            upstream_key=digest({parent: steps[parent].input_key for parent in parents}),
            upstream_deps=[
                path for path in deps if any(overlaps(path, out) for out in made_upstream)
            ],
        )
    return list(steps.values())


def describe_pipeline(
    settings: Settings,
    default_queue: str | None = None,
    pushed_images: Mapping[str, str] | None = None,
    digests_only: bool = False,
) -> PipelineDescription:
    """The pipeline of this project, each stage in the image the containers executor would use.

    The images' references come from the sources, so no container engine is needed (unless
    MLRIG_BASE_IMAGE names a local image); steps whose image was pushed need none at all.

    Args:
        pushed_images: step -> `registry/step@sha256:...` of the images a CI build job pushed
            (`mlrig images push --digests`); they replace the local content-tag references.
        digests_only: every step must be among `pushed_images` (CI's pipeline job runs only
            what its build jobs pushed, by digest).

    Raises:
        ConfigError: a step without an image, a pushed image of a step the pipeline does not
            have, a step not pushed with `digests_only`, or no queue that can hold a stage.
    """
    from mlrig.images.build import step_image_references, step_names
    from mlrig.images.engine import engine_if_any

    pushed = dict(pushed_images or {})
    steps = step_names(settings.root)
    unknown = sorted(set(pushed) - set(steps))
    if unknown:
        raise ConfigError(
            f"The image digest files name step(s) {', '.join(unknown)}, which this project has "
            f"no image for (steps: {', '.join(sorted(steps))}). Pass the digest files of this "
            "commit's build jobs."
        )
    not_pushed = sorted(set(steps) - set(pushed))
    if digests_only and not_pushed:
        raise ConfigError(
            f"--digests-only: no digest file names the image of step(s) {', '.join(not_pushed)}. "
            "Pass the images-<step>.json of every build job of this pipeline (--images), or "
            "leave out --digests-only to run those steps in their local content-tag images."
        )
    images = pushed
    if not_pushed:
        images = step_image_references(settings, engine_if_any(settings)) | pushed
    return compile_pipeline(
        settings.root,
        images,
        default_queue=default_queue or settings.clearml_queue,
        step_queues=settings.clearml_step_queues,
        queue_resources=settings.clearml_queue_resources,
        project=settings.clearml_project,
    )


def project_archive(root: Path) -> bytes:
    """The workspace every step's pod starts from: the project's files at this checkout."""
    from mlrig.executors.clearml.store import workspace_archive
    from mlrig.executors.containers import project_files

    return workspace_archive(root, project_files(root))
