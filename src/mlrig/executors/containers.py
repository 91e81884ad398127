"""`mlrig run --executor containers`: every stage in its own step image, as pods will run them.

The executor walks dvc.yaml's DAG (DVC's own graph) and starts a stage once every stage it
depends on is done, up to `jobs` at a time. A container gets a fresh workspace (the project's
files, no data) and its settings as environment variables; inside, `mlrig stage` pulls the
inputs from the DVC remote, runs the stage and pushes its outputs and run-cache. Back on the
host, the stage's dvc.lock entry is merged and its outputs pulled, so the checkout ends as
after a local run. A stage DVC finds unchanged is not started at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mlrig.dvc.dag import stage_graph, step_of
from mlrig.dvc.remote import DvcRemote, shared_remote
from mlrig.dvc.repo import check_out_from, is_stage_changed
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError, run_logged
from mlrig.executors.base import StageRequest
from mlrig.executors.scheduler import schedule
from mlrig.executors.timeline import (
    BEGIN,
    WORKSPACE_TIMELINE,
    Timeline,
    append_timeline,
)
from mlrig.images.build import current_step_images, no_image_error
from mlrig.images.engine import Engine, find_engine
from mlrig.settings import Settings

CONTAINER_WORKSPACE = "/workspace"
CONTAINER_UID = 1001
LOG_TAIL_LINES = 25
#: what `dvc repro` says of a stage it restores from the run-cache instead of running it
RESTORED_FROM_RUN_CACHE = "is cached - skipping run"
#: settings a stage container gets when they are set here; values travel in the environment
#: of the engine process, never on its command line
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
    "OMP_NUM_THREADS",  # pipeline.thread_limits: a stage's share of the CPUs
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
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


def hand_over(path: Path, engine: Engine) -> None:
    """Make `path` writable by the container's user (uid 1001)."""
    if os.geteuid() == 0:
        for folder, _, files in os.walk(path):
            os.chown(folder, CONTAINER_UID, 0)
            for file in files:
                os.chown(os.path.join(folder, file), CONTAINER_UID, 0)
    elif engine.name == "podman":  # rootless: uid 1001 in the container is a subuid here
        subprocess.run(
            ["podman", "unshare", "chown", "-R", f"{CONTAINER_UID}:0", str(path)], check=True
        )
    else:
        path.chmod(0o777)


def remove_workspace(path: Path, engine: Engine) -> None:
    if os.geteuid() != 0 and engine.name == "podman":
        subprocess.run(["podman", "unshare", "rm", "-rf", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


class StageFailed(MlrigError):
    """A stage's container exited non-zero."""

    def __init__(self, stage: str, image: str, code: int, log_path: Path) -> None:
        tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        super().__init__(
            f"Stage {stage!r} failed in its container ({image}, exit code {code}); no stage "
            f"after it ran. Full log: {log_path}\n" + "\n".join(f"  | {line}" for line in tail),
            exit_code=EXIT_FAILED,
        )


@dataclass
class ContainerRun:
    """One pipeline run in containers: what it needs, and the host state it keeps current."""

    settings: Settings
    engine: Engine
    images: dict[str, str]
    environment: dict[str, str]
    run_dir: Path
    forced: set[str]  # stages to run even if DVC finds them unchanged
    host_lock: threading.Lock

    def must_force(self, stage: str) -> bool:
        return stage in self.forced

    def stage_changed(self, stage: str) -> bool:
        if self.must_force(stage):
            return True
        with self.host_lock:
            return is_stage_changed(self.settings.root, stage)

    def workspace(self, stage: str) -> Path:
        """A fresh copy of the project's files (no data) for one stage's container."""
        root = self.settings.root
        path = self.run_dir / stage.replace("@", "-")
        with self.host_lock:  # dvc.lock is rewritten by merges; copy a consistent one
            copy_project_files(root, path)
        hand_over(path, self.engine)
        return path

    def run_stage(self, stage: str) -> float | None:
        """Run one stage in its image.

        Returns:
            Its wall time in seconds, or None when DVC restored it from the run-cache.

        Raises:
            StageFailed: the container exited non-zero.
        """
        image = self.images[step_of(stage)]
        timeline = Timeline()
        timeline.mark(BEGIN)
        workspace = self.workspace(stage)
        timeline.mark("copy workspace")
        log_path = self.run_dir / f"{stage.replace('@', '-')}.log"
        environment = {**self.environment, "MLRIG_IMAGE": image}
        names = [name for name in (*PASSED_SETTINGS, "MLRIG_IMAGE") if environment.get(name)]
        command = self.engine.command(
            "run", "--rm", *self.engine.host_flags(),
            "--network", "host",
            "--volume", f"{workspace}:{CONTAINER_WORKSPACE}",
            *(flag for name in names for flag in ("--env", name)),
            image, stage, *(["--force"] if self.must_force(stage) else []),
        )  # fmt: skip
        started = time.monotonic()
        code = run_logged(command, log_path, env=environment)
        seconds = round(time.monotonic() - started, 2)
        timeline.mark("engine exit")
        if code != 0:
            raise StageFailed(stage, image, code, log_path)
        timeline.marks |= Timeline.load(workspace / WORKSPACE_TIMELINE).marks
        self.take_results(stage, workspace)
        timeline.mark("merge lock, check out")
        remove_workspace(workspace, self.engine)
        append_timeline(self.run_dir / "timelines.jsonl", stage, timeline)
        return None if RESTORED_FROM_RUN_CACHE in log_path.read_text() else seconds

    def take_results(self, stage: str, workspace: Path) -> None:
        """Merge the stage's dvc.lock entry, check its outputs out here, keep its ClearML
        sessions.

        The outputs come from the objects the container left in its workspace's cache (a
        folder of this machine), not from the remote it also pushed them to: a `dvc pull`
        per stage cost seconds, one stage at a time.
        """
        from mlrig.dvc.lockfile import lock_entry, merge_lock_entries

        root = self.settings.root
        entry = lock_entry(workspace, stage)
        sessions = workspace / ".mlrig" / "clearml" / "offline"
        self.settings.clearml_sessions_dir.mkdir(parents=True, exist_ok=True)
        for session in sessions.glob("*.zip") if sessions.is_dir() else []:
            shutil.copy2(session, self.settings.clearml_sessions_dir / session.name)
        with self.host_lock:
            merge_lock_entries(root / "dvc.lock", {stage: entry})
            if not check_out_from(workspace / WORKSPACE_CACHE, root, stage):
                self.pull_outputs(stage)

    def pull_outputs(self, stage: str) -> None:
        from mlrig.dvc.commands import remote_arguments, run_dvc

        root = self.settings.root
        arguments = ["pull", *remote_arguments(self.settings), stage]
        run_dvc(arguments, root, dict(os.environ), self.run_dir / "pull.log", lambda s: None)


#: where a stage's container keeps DVC's cache: the default, inside the workspace
WORKSPACE_CACHE = Path(".dvc") / "cache"


@dataclass(frozen=True)
class ContainerPlan:
    """What a containers run needs, checked before anything starts."""

    engine: Engine
    images: dict[str, str]
    remote: DvcRemote
    graph: dict[str, set[str]]


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
    return ContainerPlan(engine=engine, images=images, remote=remote, graph=graph)


@dataclass
class ContainersExecutor:
    """`--executor containers`: each stage in its step image, data through the DVC remote."""

    settings: Settings
    needs_dvc_remote: ClassVar[bool] = True
    container_plan: ContainerPlan | None = None

    def plan(self) -> dict[str, set[str]]:
        return self.checked_plan().graph

    def checked_plan(self) -> ContainerPlan:
        if self.container_plan is None:
            self.container_plan = plan_containers(self.settings)
        return self.container_plan

    def prepare(
        self, servers: ExitStack, environment: dict[str, str], log_path: Path, stages_may_run: bool
    ) -> None:
        """Check the images, the engine, the remote and the MLflow server before any stage."""
        self.checked_plan()

    def run_stages(self, request: StageRequest, servers: ExitStack) -> dict[str, float]:
        """Run every changed stage in its step image, in dependency order, `jobs` at a time.

        Returns:
            The stages that ran (not those restored from the run-cache), each with its
            container's wall time in seconds.

        Raises:
            StageFailed: a container failed; the stages after it were not started.
        """
        from mlrig.lineage import git_commit

        plan = self.checked_plan()
        run_dir = self.settings.state_dir / "containers" / request.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        run = ContainerRun(
            settings=self.settings,
            engine=plan.engine,
            images=plan.images,
            environment={
                **request.environment,
                **plan.remote.stage_environment(),
                "MLRIG_GIT_COMMIT": git_commit(self.settings.root),
            },
            run_dir=run_dir,
            forced=request.forced,
            host_lock=threading.Lock(),
        )
        return schedule(request.graph, run, request.jobs, request.on_stage)
