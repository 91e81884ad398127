"""`mlrig run --executor containers`: every stage in its own step image, as pods will run them.

The executor walks dvc.yaml's DAG (DVC's own graph) and starts a stage once every stage it
depends on is done, up to `jobs` at a time. Each step image has one container for the run
(`mlrig.executors.step_containers`; steps whose images hold the same content share one),
started ahead of its first stage, one after another in the order the stages can start. A
stage gets a fresh workspace (the project's files, no data) and runs in its step's container:
`mlrig stage` pulls its inputs from the DVC remote, runs it and pushes its outputs and
run-cache. Back on the host, the stage's dvc.lock entry is merged and its outputs checked out,
so the checkout ends as after a local run. A stage DVC finds unchanged is not started at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mlrig.dvc.dag import stage_graph, step_of, topological_order
from mlrig.dvc.lockfile import HeldLock, lock_entry
from mlrig.dvc.remote import DvcRemote, shared_remote
from mlrig.dvc.repo import (
    check_out_stages,
    copy_cache_objects,
    is_stage_changed,
    local_cache_dir,
)
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError, run_logged
from mlrig.executors.base import StageRequest
from mlrig.executors.scheduler import schedule
from mlrig.executors.step_containers import (
    StepContainers,
    hand_over,
    image_contents,
    remove_workspace,
    serving_steps,
)
from mlrig.executors.timeline import (
    BEGIN,
    WORKSPACE_TIMELINE,
    Timeline,
    append_timeline,
)
from mlrig.images.build import current_step_images, no_image_error
from mlrig.images.engine import Engine, find_engine
from mlrig.progress import HEARTBEAT_VARIABLE, STAGE_VARIABLE, USAGE_VARIABLE, usage_path
from mlrig.settings import Settings

LOG_TAIL_LINES = 25
#: what `dvc repro` says of a stage it restores from the run-cache instead of running it
RESTORED_FROM_RUN_CACHE = "is cached - skipping run"
#: where a stage's step writes its usage in its workspace (`mlrig.progress`), for the host
WORKSPACE_USAGE = Path(".mlrig") / "stage-usage.json"
#: a stage's share of the CPUs (mlrig.run.thread_limits), which libraries read at import
THREAD_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: settings a stage gets when they are set here; values travel in the environment of the
#: engine process, never on its command line
PASSED_SETTINGS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLRIG_EXPERIMENT",
    "MLRIG_PARENT_RUN_ID",
    "MLRIG_PIPELINE_RUN_ID",
    "MLRIG_GIT_COMMIT",
    "MLRIG_DVC_REMOTE_URL",
    HEARTBEAT_VARIABLE,
    *THREAD_SETTINGS,
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "CLEARML_API_HOST",
    "CLEARML_WEB_HOST",
    "CLEARML_FILES_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY",
)


def require_mlflow_server(settings: Settings) -> None:
    if not settings.tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(
            "The containers executor logs through an MLflow server, but MLFLOW_TRACKING_URI is "
            f"{settings.tracking_uri}. Start the stack (mlrig stack up) and run with --stack "
            "local, or set MLFLOW_TRACKING_URI to a server."
        )


def project_files(root: Path) -> list[str]:
    """The files a checkout of this commit has (with uncommitted edits, e.g. params.yaml)."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (root / name).is_file()]


def copy_project_files(root: Path, destination: Path) -> None:
    """Copy what a checkout of `root` holds (no data, no outputs) into `destination`."""
    for name in project_files(root):
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination / name)


class StageFailed(MlrigError):
    """A stage exited non-zero in its step's container, or ended without finishing."""

    def __init__(
        self, stage: str, image: str, code: int, log_path: Path, unfinished: bool = False
    ) -> None:
        tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        how = "ended before it finished" if unfinished else "failed"
        super().__init__(
            f"Stage {stage!r} {how} in its container ({image}, exit code {code}); no stage "
            f"after it ran. Full log: {log_path}\n" + "\n".join(f"  | {line}" for line in tail),
            exit_code=EXIT_FAILED,
        )


@dataclass
class ContainerRun:
    """One pipeline run in containers: what it needs, and the host state it keeps current."""

    settings: Settings
    containers: StepContainers
    environment: dict[str, str]  # the run's settings, for each stage (PASSED_SETTINGS)
    lock: HeldLock  # the checkout's dvc.lock, which this run alone writes
    host_cache: Path  # the checkout's DVC cache
    graph: dict[str, set[str]]
    forced: set[str]  # stages to run even if DVC finds them unchanged
    host_lock: threading.Lock
    log_path: Path  # the pipeline run's log: each stage's usage is kept beside it
    unchecked: list[str] = field(default_factory=list)  # finished, outputs not checked out

    @property
    def run_dir(self) -> Path:
        return self.containers.run_dir

    def must_force(self, stage: str) -> bool:
        return stage in self.forced

    def stage_changed(self, stage: str) -> bool:
        if self.must_force(stage):
            return True
        self.check_out_results()  # DVC compares the stage's deps here with dvc.lock
        with self.host_lock:
            return is_stage_changed(self.settings.root, stage)

    def workspace(self, stage: str) -> Path:
        """A fresh copy of the project's files (no data) for one stage. Its dvc.lock holds
        the entries of the stage and of the stages whose outputs it reads, all it needs: DVC
        parses dvc.lock about a dozen times in a stage, and the whole pipeline's lock cost
        most of a second of every stage."""
        path = self.containers.workspaces / stage.replace("@", "-")
        with self.host_lock:  # dvc.lock is rewritten by merges; take a consistent one
            copy_project_files(self.settings.root, path)
            self.lock.write_part(path / "dvc.lock", {stage, *self.graph[stage]})
        hand_over(path, self.containers.engine)
        return path

    def stage_log(self, stage: str) -> Path:
        """The stage's log in the run's folder: the engine streams the container's output
        into it while the stage runs."""
        return self.run_dir / f"{stage.replace('@', '-')}.log"

    def stage_settings(self, stage: str, workspace: Path) -> dict[str, str]:
        """What a stage's processes in the container are told besides the run's settings: its
        image, its name (its heartbeat's), and where its step writes its usage."""
        in_container = self.containers.container_path(workspace)
        return {
            "MLRIG_IMAGE": self.containers.images[step_of(stage)],
            STAGE_VARIABLE: stage,
            USAGE_VARIABLE: f"{in_container}/{WORKSPACE_USAGE}",
        }

    def run_stage(self, stage: str) -> float | None:
        """Run one stage in its step's container.

        Returns:
            Its wall time in seconds, or None when DVC restored it from the run-cache.

        Raises:
            StageFailed: the stage exited non-zero.
            StepContainerFailed: its step's container ended before it could run the stage.
        """
        timeline = Timeline()
        timeline.mark(BEGIN)
        workspace = self.workspace(stage)
        timeline.mark("copy workspace")
        image = self.containers.images[step_of(stage)]  # its container may be another step's
        container = self.containers.ready(step_of(stage), stage)
        timeline.mark("start step container")
        log_path = self.stage_log(stage)
        own = self.stage_settings(stage, workspace)
        environment = self.environment | own
        names = [name for name in (*PASSED_SETTINGS, *own) if environment.get(name)]
        command = self.containers.stage_command(
            container, stage, workspace, names, force=self.must_force(stage)
        )
        code = run_logged(command, log_path, env=environment)
        timeline.mark("stage exit")
        if code != 0:
            raise StageFailed(stage, image, code, log_path)
        # a finished stage leaves its marks; an engine's exec process that was signalled
        # exits 0 (podman's does) while the stage goes on, or is stopped with the container
        if not (workspace / WORKSPACE_TIMELINE).is_file():
            raise StageFailed(stage, image, code, log_path, unfinished=True)
        timeline.marks |= Timeline.load(workspace / WORKSPACE_TIMELINE).marks
        self.take_results(stage, workspace)
        timeline.mark("merge lock, copy cache")
        remove_workspace(workspace, self.containers.engine)
        append_timeline(self.run_dir / "timelines.jsonl", stage, timeline)
        seconds = round(timeline.marks["stage exit"] - timeline.marks[BEGIN], 2)
        return None if RESTORED_FROM_RUN_CACHE in log_path.read_text() else seconds

    def take_results(self, stage: str, workspace: Path) -> None:
        """Merge the stage's dvc.lock entry, copy its outputs' objects into this checkout's
        cache, keep its ClearML sessions; its outputs are checked out with the others'
        (`check_out_results`), once for all of them.

        The objects come from the workspace's cache (a folder of this machine), not from the
        remote the stage also pushed them to: a `dvc pull` per stage cost seconds, one stage
        at a time.
        """
        entry = lock_entry(workspace, stage)
        if (workspace / WORKSPACE_USAGE).is_file():  # read into the summary (`mlrig.run`)
            kept = usage_path(self.log_path, stage)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workspace / WORKSPACE_USAGE, kept)
        sessions = workspace / ".mlrig" / "clearml" / "offline"
        self.settings.clearml_sessions_dir.mkdir(parents=True, exist_ok=True)
        for session in sessions.glob("*.zip") if sessions.is_dir() else []:
            shutil.copy2(session, self.settings.clearml_sessions_dir / session.name)
        copy_cache_objects(workspace / WORKSPACE_CACHE, self.host_cache)
        with self.host_lock:
            self.lock.merge({stage: entry})
            self.unchecked.append(stage)

    def check_out_results(self) -> None:
        """Check out here the outputs of the stages that finished since the last time (DVC's
        status of a stage needs its upstream outputs here; the run ends with all of them).
        A stage whose objects did not all come back is pulled from the remote instead."""
        with self.host_lock:
            stages, self.unchecked = self.unchecked, []
            if stages:
                for stage in check_out_stages(self.settings.root, stages):
                    self.pull_outputs(stage)

    def pull_outputs(self, stage: str) -> None:
        from mlrig import stopping
        from mlrig.dvc.commands import remote_arguments, run_dvc

        if stopping.GROUPS.stopping:  # nothing starts now: the next run pulls or runs it
            return
        root = self.settings.root
        arguments = ["pull", *remote_arguments(self.settings), stage]
        run_dvc(arguments, root, dict(os.environ), self.run_dir / "pull.log", lambda s: None)


#: where a stage's container keeps DVC's cache: the default, inside the workspace
WORKSPACE_CACHE = Path(".dvc") / "cache"


def steps_in_order(request: StageRequest) -> list[str]:
    """The steps of the stages that may run (changed, forced, or after one of those), in the
    order their first stage can start."""
    may_run = set(request.changed | request.forced)
    for stage in topological_order(request.graph):
        if request.graph[stage] & may_run:
            may_run.add(stage)
    order = [stage for stage in topological_order(request.graph) if stage in may_run]
    return list(dict.fromkeys(step_of(stage) for stage in order))


@dataclass(frozen=True)
class ContainerPlan:
    """What a containers run needs, checked before anything starts."""

    engine: Engine
    images: dict[str, str]
    remote: DvcRemote
    graph: dict[str, set[str]]
    serving: dict[str, str]  # step -> the step whose container runs its stages


def plan_containers(settings: Settings) -> ContainerPlan:
    """Check that the pipeline can run in containers here, and how.

    Raises:
        ConfigError: no MLflow server, no reachable DVC remote, no engine, a step without image.
        MlrigError: an image is missing or older than the code (make images).
    """
    require_mlflow_server(settings)
    remote = shared_remote(settings)
    engine = find_engine(settings)
    graph = stage_graph(settings.root)
    images = current_step_images(settings, engine)
    no_image = sorted({step_of(stage) for stage in graph} - set(images))
    if no_image:
        raise no_image_error(no_image)
    # in the order the steps run: the first of those sharing an image serves the others
    order = dict.fromkeys([*(step_of(stage) for stage in topological_order(graph)), *images])
    serving = serving_steps(image_contents(engine, {step: images[step] for step in order}))
    return ContainerPlan(engine, images, remote, graph, serving)


@dataclass
class ContainersExecutor:
    """`--executor containers`: each stage in its step image, data through the DVC remote."""

    settings: Settings
    needs_dvc_remote: ClassVar[bool] = True
    container_plan: ContainerPlan | None = None
    containers: StepContainers | None = None

    def plan(self) -> dict[str, set[str]]:
        return self.checked_plan().graph

    def checked_plan(self) -> ContainerPlan:
        if self.container_plan is None:
            self.container_plan = plan_containers(self.settings)
        return self.container_plan

    def prepare(
        self, servers: ExitStack, environment: dict[str, str], log_path: Path, stages_may_run: bool
    ) -> None:
        """Check the images, the engine, the remote and the MLflow server before any stage;
        when a stage may run, start the containers of the first stages now: their servers
        import while the run asks what changed (`log_path` is .mlrig/logs/<run id>.log)."""
        plan = self.checked_plan()
        if stages_may_run:
            containers = self.step_containers(servers, log_path.stem, environment)
            first = sorted(stage for stage, parents in plan.graph.items() if not parents)
            containers.warm(dict.fromkeys(step_of(stage) for stage in first))

    def step_containers(
        self, servers: ExitStack, run_id: str, environment: dict[str, str]
    ) -> StepContainers:
        """The run's step containers, stopped when `servers` closes, however the run ends."""
        if self.containers is None:
            plan = self.checked_plan()
            self.containers = StepContainers(
                engine=plan.engine,
                run_id=run_id,
                run_dir=self.settings.state_dir / "containers" / run_id,
                images=plan.images,
                serving=plan.serving,
                # their libraries size their thread pools at import
                server_environment={
                    name: environment[name] for name in THREAD_SETTINGS if name in environment
                },
            )
            servers.callback(self.containers.close)
        return self.containers

    def run_stages(self, request: StageRequest, servers: ExitStack) -> dict[str, float]:
        """Run every changed stage in its step image, in dependency order, `jobs` at a time.

        Returns:
            The stages that ran (not those restored from the run-cache), each with its
            container's wall time in seconds.

        Raises:
            StageFailed: a stage failed; the stages after it were not started.
        """
        from mlrig.lineage import git_commit

        plan = self.checked_plan()
        containers = self.step_containers(servers, request.run_id, request.environment)
        containers.run_dir.mkdir(parents=True, exist_ok=True)
        containers.warm(steps_in_order(request))
        environment = {
            **request.environment,
            **plan.remote.stage_environment(),
            "MLRIG_GIT_COMMIT": git_commit(self.settings.root),
        }
        run = ContainerRun(
            settings=self.settings,
            containers=containers,
            environment=environment,
            lock=HeldLock.read(self.settings.root / "dvc.lock"),
            host_cache=local_cache_dir(self.settings.root),
            graph=request.graph,
            forced=request.forced,
            host_lock=threading.Lock(),
            log_path=request.log_path,
        )
        try:
            return schedule(request.graph, run, request.jobs, request.on_stage, request.on_progress)
        finally:  # however it ends, what finished is here, as after a local run
            run.check_out_results()
