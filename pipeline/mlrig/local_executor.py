"""`mlrig run` here: the stages that need it, `jobs` at a time, in this checkout.

`dvc repro` runs one stage after another. Here each stage is its own `dvc repro --single-item`,
started once the stages it depends on are done. DVC releases its repository lock while a stage's
command runs and takes it again to record the result (`--wait-for-lock`), so independent stages
(the `train` and `evaluate` stages of each experiment) run side by side, and dvc.lock, the cache
and the run-cache end as after one `dvc repro`. A stage is looked at only when DVC found it
changed at the start, or a stage it depends on ran: the rest start no process at all.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlrig.dag import downstream
from mlrig.errors import EXIT_FAILED, MlrigError, run_logged
from mlrig.recorded import TRAIN_STAGE, train_stage_recorded
from mlrig.settings import Settings

LOG_TAIL_LINES = 25
#: what `dvc repro` prints when it runs a stage's command (not when it skips or restores it)
RUNNING_STAGE = "Running stage '"


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
        stage_log = self.log_path.with_suffix("") / f"{stage.replace('@', '-')}.log"
        stage_log.parent.mkdir(parents=True, exist_ok=True)
        flags = ["--single-item", *(["--force"] if force else [])]
        arguments = ["--wait-for-lock", "repro", *flags, stage]
        started = time.monotonic()
        code = run_logged(
            [sys.executable, "-m", "dvc", *arguments],
            stage_log,
            cwd=self.settings.root,
            env=self.environment,
        )
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
