"""`mlrig run` here: the stages that need it, `jobs` at a time, in this checkout.

`dvc repro` runs one stage after another. Here each stage is its own `dvc repro --single-item`,
started once the stages it depends on are done. DVC releases its repository lock while a stage's
command runs and takes it again to record the result (`--wait-for-lock`), so independent stages
(the `train` and `evaluate` stages of each experiment) run side by side, and dvc.lock, the cache
and the run-cache end as after one `dvc repro`. A stage is looked at only when DVC found it
changed at the start, or a stage it depends on ran: the rest start no process at all.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mlrig.dvc.commands import run_dvc_logged
from mlrig.dvc.dag import downstream, stage_graph
from mlrig.errors import EXIT_FAILED, MlrigError
from mlrig.executors.base import StageRequest
from mlrig.executors.scheduler import schedule
from mlrig.executors.warm import SOCKET_VARIABLE, warm_server
from mlrig.progress import STAGE_VARIABLE, USAGE_VARIABLE, usage_path
from mlrig.settings import Settings
from mlrig.tracking.recorded import TRAIN_STAGE, train_stage_recorded

LOG_TAIL_LINES = 25
#: what `dvc repro` prints when it runs a stage's command (not when it skips or restores it)
RUNNING_STAGE = "Running stage '"


@dataclass
class LocalExecutor:
    """`--executor local`: each stage by `dvc repro --single-item` in this checkout, its step
    command handed to the warm server (`mlrig.executors.warm`)."""

    settings: Settings
    needs_dvc_remote: ClassVar[bool] = False
    socket_path: str | None = None

    def plan(self) -> dict[str, set[str]]:
        return stage_graph(self.settings.root)

    def prepare(
        self, servers: ExitStack, environment: dict[str, str], log_path: Path, stages_may_run: bool
    ) -> None:
        """Start the warm server now when a stage may run: it imports the steps' libraries
        while MLflow is asked what to run (`environment`: they size their pools at import)."""
        if stages_may_run:
            self.start_warm_server(servers, environment, log_path)

    def start_warm_server(
        self, servers: ExitStack, environment: dict[str, str], log_path: Path
    ) -> str:
        if self.socket_path is None:
            self.socket_path = servers.enter_context(
                warm_server(self.settings.root, environment, warm_log(log_path))
            )
        return self.socket_path

    def run_stages(self, request: StageRequest, servers: ExitStack) -> dict[str, float]:
        # started here when only the MLflow store asked for a run
        socket_path = self.start_warm_server(servers, request.environment, request.log_path)
        run = LocalRun(
            settings=self.settings,
            graph=request.graph,
            environment=request.environment | {SOCKET_VARIABLE: socket_path},
            log_path=request.log_path,
            candidates=request.changed | request.forced,
            forced=request.forced,
        )
        return schedule(request.graph, run, request.jobs, request.on_stage, request.on_progress)


def warm_log(log_path: Path) -> Path:
    """The warm server's log, beside the stages' logs of the pipeline run."""
    return log_path.with_suffix("") / "warm-server.log"


@dataclass
class LocalRun:
    """One pipeline run in this checkout: which stages DVC must look at, and the logs."""

    settings: Settings
    graph: dict[str, set[str]]
    environment: dict[str, str]
    log_path: Path  # the pipeline run's log: each stage's output is added when it ends
    candidates: set[str]  # changed at the start, or downstream of a stage that ran since
    forced: set[str]  # run even if unchanged (their runs are not in this MLflow store)
    lock: threading.Lock = field(default_factory=threading.Lock)
    children: dict[str, set[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.children = downstream(self.graph)

    def stage_changed(self, stage: str) -> bool:
        with self.lock:
            return stage in self.candidates

    def stage_log(self, stage: str) -> Path:
        """The stage's log in the run's log folder, written while it runs."""
        return self.log_path.with_suffix("") / f"{stage.replace('@', '-')}.log"

    def run_stage(self, stage: str) -> float | None:
        """`dvc repro --single-item` of one stage.

        A train stage that DVC restored from its run-cache may name a run of another MLflow
        store: it is run again, so this store gets the run.

        Returns:
            Its wall time in seconds, or None when DVC found it unchanged or restored it.

        Raises:
            MlrigError: the stage failed; the message ends with its log's last lines.
        """
        seconds = self.repro(stage, force=stage in self.forced)
        if stage.startswith(f"{TRAIN_STAGE}@") and not train_stage_recorded(self.settings, stage):
            seconds = self.repro(stage, force=True)
        with self.lock:
            self.candidates |= self.children[stage]
        return seconds

    def repro(self, stage: str, *, force: bool) -> float | None:
        stage_log = self.stage_log(stage)
        stage_log.parent.mkdir(parents=True, exist_ok=True)
        flags = ["--single-item", *(["--force"] if force else [])]
        arguments = ["--wait-for-lock", "repro", *flags, stage]
        # the step's process is named after its stage and writes its usage beside its log
        environment = self.environment | {
            STAGE_VARIABLE: stage,
            USAGE_VARIABLE: str(usage_path(self.log_path, stage)),
        }
        started = time.monotonic()
        code = run_dvc_logged(arguments, self.settings.root, environment, stage_log)
        seconds = round(time.monotonic() - started, 2)
        output = stage_log.read_text(errors="replace")
        with self.lock, self.log_path.open("a") as pipeline_log:
            pipeline_log.write(output)
        if code != 0:
            tail = output.splitlines()[-LOG_TAIL_LINES:]
            raise MlrigError(
                f"The pipeline failed in stage {stage!r} (dvc exited with {code}); nothing "
                f"downstream of it ran. Full log: {stage_log}\n"
                + "\n".join(f"  | {line}" for line in tail),
                exit_code=EXIT_FAILED,
            )
        return seconds if RUNNING_STAGE in output else None
