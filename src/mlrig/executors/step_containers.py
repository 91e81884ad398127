"""The step containers of a containers run: one long-lived container per step image.

A cold `podman run` per stage paid, every time, the engine's start, Python's and DVC's imports,
and the step's own libraries (pandas, scikit-learn, MLflow, ClearML: about 6 s). Instead each
step image gets one container for the run, started as soon as a stage that needs it could be
next, whose entrypoint is a step server (`mlrig-stage --serve`, `mlrig.executors.warm`) that
imports all of that once. A stage is then `mlrig-stage <stage>` run in that container (`exec`),
in a fresh workspace folder of its own; it hands itself to the server and runs as the server's
forked child, as isolated as a process of its own, and so does its step's command.

Each container is the child of an attached `<engine> run` started as a process group of the run
(`mlrig.stopping`): a stop signal reaches it (the engine passes it to tini, which passes it to
the server's process group, every stage and step running there included), and so does the
watchdog's when mlrig itself dies. However the run ends, `close` stops and removes them all.

Steps whose images hold the same files and run the same way (the same layers, entrypoint,
environment and user: steps that lock the same packages, which differ only in their labels) share
one container (`serving_steps`): its server imports their libraries once for all of them.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlrig import stopping
from mlrig.errors import EXIT_FAILED, MlrigError
from mlrig.executors.warm import SOCKET_VARIABLE
from mlrig.images.engine import Engine

#: where the run's stage workspaces and the step servers' sockets are, in every container
CONTAINER_WORKSPACES = "/workspaces"
CONTAINER_SERVERS = "/servers"
CONTAINER_UID = 1001
#: how long a step server may take to import its libraries before its first stage gives up
READY_SECONDS = 600.0
#: how long a container gets to stop at the run's end before it is killed
STOP_GRACE_SECONDS = 10.0
#: how long `close` keeps looking for the run's containers to remove: an engine process stopped
#: while it was creating one leaves it "Created", listed a moment after that process ended
SWEEP_SECONDS = 10.0
SWEEP_PAUSE_SECONDS = 0.25
LOG_TAIL_LINES = 25
#: the label every container of a run carries, with the run's id
RUN_LABEL = "io.mlrig.run"
#: what makes two images run a stage the same way: their files and how they start (not labels)
IMAGE_CONTENT = (
    "{{json .RootFS.Layers}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} "
    "{{json .Config.Env}} {{.Config.User}} {{.Config.WorkingDir}}"
)


class StepContainerFailed(MlrigError):
    """A step container ended, or never answered, before it could run a stage."""

    def __init__(self, stage: str, image: str, why: str, log_path: Path) -> None:
        lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
        super().__init__(
            f"Stage {stage!r} did not start: the step container of {image} {why}; no stage "
            f"after it ran. Full log: {log_path}\n"
            + "\n".join(f"  | {line}" for line in lines[-LOG_TAIL_LINES:]),
            exit_code=EXIT_FAILED,
        )


@dataclass(frozen=True)
class StepContainer:
    """One step image's container in a run, and the attached engine process that started it."""

    step: str
    image: str
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    socket: Path  # the step server's socket, as this host sees it

    @property
    def container_socket(self) -> str:
        return f"{CONTAINER_SERVERS}/{self.socket.name}"


@dataclass
class StepContainers:
    """The step containers of one run, each started once, on demand, and stopped by `close`.

    A container's own environment holds only what its server needs before any stage (the
    thread limits its libraries read at import: `server_environment`). Each stage gets the
    settings of the run when it starts (`stage_command`): their names go on the engine's
    command line (`--env NAME`), their values only into the engine's environment, never into
    the container's configuration.
    """

    engine: Engine
    run_id: str
    run_dir: Path
    images: dict[str, str]  # each step's image
    server_environment: dict[str, str]
    serving: dict[str, str] = field(default_factory=dict)  # step -> the step whose container
    # serves it (`serving_steps`); a step not named here has its own
    started: dict[str, StepContainer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    to_warm: queue.SimpleQueue[str | None] = field(default_factory=queue.SimpleQueue)
    warmer: threading.Thread | None = None
    closed: bool = False  # the run is over: nothing starts any more

    @property
    def workspaces(self) -> Path:
        return self.run_dir / "workspaces"

    @property
    def servers(self) -> Path:
        return self.run_dir / "servers"

    def start(self, step: str) -> StepContainer | None:
        """The step's container, started now unless it was (it may still be importing);
        None once the run's containers are closed. Steps with the same image content share
        one (`serving`)."""
        step = self.serving.get(step, step)
        with self.lock:
            if self.closed:
                return None
            if step not in self.started:
                self.started[step] = self.launch(step)
            return self.started[step]

    def launch(self, step: str) -> StepContainer:
        image = self.images[step]
        for folder in (self.workspaces, self.servers):
            if not folder.is_dir():
                folder.mkdir(parents=True)
                hand_over(folder, self.engine)
        container = f"mlrig-{self.run_id}-{step}"
        socket = self.servers / f"{step}.sock"
        command = self.engine.command(
            "run", "--rm", "--name", container, *self.engine.host_flags(),
            "--network", "host",
            "--label", f"{RUN_LABEL}={self.run_id}",
            "--volume", f"{self.workspaces}:{CONTAINER_WORKSPACES}",
            "--volume", f"{self.servers}:{CONTAINER_SERVERS}",
            *(flag for name in sorted(self.server_environment) for flag in ("--env", name)),
            image, "--serve", f"{CONTAINER_SERVERS}/{socket.name}",
        )  # fmt: skip
        log_path = self.run_dir / f"{step}.server.log"
        with log_path.open("w") as log:
            process = stopping.start(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | self.server_environment,
            )
        return StepContainer(step, image, container, process, log_path, socket)

    def warm(self, steps: Iterable[str]) -> None:
        """Start the containers of `steps`, in this order, in the background: each once the
        one before serves (or ended), so one server at a time imports its libraries while the
        stages run."""
        for step in steps:
            self.to_warm.put(step)
        with self.lock:
            if self.warmer is None and not self.closed:
                self.warmer = threading.Thread(target=self.warm_in_turn, daemon=True)
                self.warmer.start()

    def warm_in_turn(self) -> None:
        while (step := self.to_warm.get()) is not None:
            try:
                container = self.start(step)
            except stopping.StopRequested:  # the run is stopping: start nothing more
                return
            if container is None:
                return
            waited_for(container.socket, container)  # a failure is the next stage's to report

    def ready(self, step: str, stage: str) -> StepContainer:
        """The step's container once its server answers (started now if it was not). A stage
        waits for it rather than run cold beside it: on a busy machine, importing the same
        libraries twice at once costs more than the wait.

        Raises:
            StepContainerFailed: it ended first, or did not serve within READY_SECONDS.
        """
        container = self.start(step)
        if container is None:
            raise StepContainerFailed(stage, self.images[step], "was stopped", self.run_dir)
        why = waited_for(container.socket, container)
        if why:
            raise StepContainerFailed(stage, self.images[step], why, container.log_path)
        return container

    def container_path(self, workspace: Path) -> str:
        """Where a workspace folder of this run is, as its containers see it."""
        return f"{CONTAINER_WORKSPACES}/{workspace.relative_to(self.workspaces)}"

    def stage_command(
        self,
        container: StepContainer,
        stage: str,
        workspace: Path,
        settings: list[str],
        *,
        force: bool,
    ) -> list[str]:
        """The engine command that runs `stage` in its step container, in `workspace` (a
        folder of `workspaces`), handed to the step server, with the `settings` named (their
        values come from the engine's environment)."""
        return self.engine.command(
            "exec",
            "--workdir", self.container_path(workspace),
            "--env", f"{SOCKET_VARIABLE}={container.container_socket}",
            *(flag for name in settings for flag in ("--env", name)),
            container.name,
            "mlrig-stage", stage, *(["--force"] if force else []),
        )  # fmt: skip

    def close(self) -> None:
        """Stop every container of the run: SIGTERM through its engine process (the engine
        passes it on), SIGKILL after a grace; then remove whatever is left."""
        self.to_warm.put(None)
        with self.lock:
            self.closed = True
            containers = list(self.started.values())
            self.started.clear()
        leaders = {container.process.pid: container.process for container in containers}
        stopping.stop_groups(sorted(leaders), STOP_GRACE_SECONDS, leaders)
        for group, process in leaders.items():
            process.wait()
            stopping.GROUPS.forget(group)
        # by the run's label, not by the names started: a stop signal can end an engine
        # process half-way through creating its container, before it was recorded
        remove_run_containers(self.engine, self.run_id)
        shutil.rmtree(self.servers, ignore_errors=True)
        if self.workspaces.is_dir() and not any(self.workspaces.iterdir()):
            os.rmdir(self.workspaces)


def serving_steps(contents: dict[str, str]) -> dict[str, str]:
    """For each step, the step whose container serves it: the first (in `contents`' order) of
    those whose image has the same content (`IMAGE_CONTENT`); a step with no content known
    (an empty one) serves itself."""
    first: dict[str, str] = {}
    serving = {}
    for step, content in contents.items():
        serving[step] = first.setdefault(content, step) if content else step
    return serving


def image_contents(engine: Engine, images: dict[str, str]) -> dict[str, str]:
    """Each step's image content (`IMAGE_CONTENT`), in one call of the engine; none known
    (empty) when the engine's answer cannot be read, so that each step has its own container."""
    result = subprocess.run(
        engine.command("image", "inspect", "--format", IMAGE_CONTENT, *images.values()),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != len(images):
        return dict.fromkeys(images, "")
    return dict(zip(images, lines, strict=True))


def waited_for(path: Path, container: StepContainer) -> str | None:
    """Wait until the container's server makes `path` (its socket once it serves); None then,
    else why it never will."""
    deadline = time.monotonic() + READY_SECONDS
    while not path.exists():
        code = container.process.poll()
        if code is not None:
            return f"exited with code {code}"
        if time.monotonic() > deadline:
            return f"did not serve within {READY_SECONDS:.0f} s"
        time.sleep(0.05)
    return None


def hand_over(path: Path, engine: Engine) -> None:
    """Make `path` writable by the containers' user (uid 1001)."""
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


def remove_run_containers(engine: Engine, run_id: str) -> None:
    """Remove every container of run `run_id`, until two listings a pause apart find none (for
    SWEEP_SECONDS at most)."""
    deadline = time.monotonic() + SWEEP_SECONDS
    found_none_before = False
    while (names := run_containers(engine, run_id)) or not found_none_before:
        if names:
            subprocess.run(engine.command("rm", "--force", *names), capture_output=True)
        found_none_before = not names
        if time.monotonic() > deadline:
            return
        time.sleep(SWEEP_PAUSE_SECONDS)


def run_containers(engine: Engine, run_id: str) -> list[str]:
    """The names of the containers of run `run_id` the engine has (running or not)."""
    listing = subprocess.run(
        engine.command(
            "ps", "--all", "--filter", f"label={RUN_LABEL}={run_id}", "--format", "{{.Names}}"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    return listing.stdout.split()
