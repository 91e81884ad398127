"""The seam between a pipeline run and its executor (Kedro's `AbstractRunner`, ZenML's flavors).

`mlrig.run` does what every run needs once, whatever the executor: the checkout's lock, the
params and the preflight, the MLflow parent run, the push. An executor says which stages it
would run (`plan`), checks what it needs before any stage starts (`prepare`) and runs what a
`StageRequest` asks (`run_stages`); the scheduler hands each stage to a `StageRunner`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # the CLI imports this module for --executor's choices: it stays light
    from contextlib import ExitStack

    from mlrig.progress import Heartbeat

from pathlib import Path

#: called with a running stage, its seconds so far and the newest heartbeat of its step
OnProgress = Callable[[str, float, "Heartbeat"], None]


def no_progress(stage: str, seconds: float, beat: Heartbeat) -> None:
    """Show nothing of a running stage."""


@dataclass(frozen=True)
class StageRequest:
    """What a pipeline run asks of its executor, once its checks passed and its parent run is
    open: the stages to look at, and the environment to run them in."""

    run_id: str  # the pipeline run's id
    graph: dict[str, set[str]]  # each stage with the stages it depends on
    changed: set[str]  # DVC found these changed at the start
    forced: set[str]  # run even if unchanged: all with --force, else those this store lacks
    environment: dict[str, str]  # the run ids, the commit and the thread limits included
    jobs: int  # how many stages run at once
    log_path: Path  # the pipeline run's log
    on_stage: Callable[[str], None]  # called with each stage as it starts
    on_progress: OnProgress = no_progress  # about every 10 s, with each stage running that long


class StageRunner(Protocol):
    """What an executor does with one stage."""

    def stage_changed(self, stage: str) -> bool:
        """False when the stage needs no run at all (nothing it depends on changed)."""
        ...

    def run_stage(self, stage: str) -> float | None:
        """Run the stage; its wall time in seconds, or None when it was restored, not run.

        Raises:
            MlrigError: the stage failed; nothing downstream of it is started.
        """
        ...

    def stage_log(self, stage: str) -> Path:
        """Where the stage's output goes while it runs (its heartbeat lines included)."""
        ...


@runtime_checkable
class Executor(Protocol):
    """What every executor says: the stages it would run, each with those it depends on."""

    def plan(self) -> dict[str, set[str]]:
        """dvc.yaml's DAG as this executor runs it (foreach stages expanded)."""
        ...


@runtime_checkable
class StageExecutor(Executor, Protocol):
    """An executor whose stages `mlrig.run` starts: what a run asks of it."""

    needs_dvc_remote: ClassVar[bool]  # its stages move data through the DVC remote

    def prepare(
        self, servers: ExitStack, environment: dict[str, str], log_path: Path, stages_may_run: bool
    ) -> None:
        """Check what it needs before any stage starts; start what takes time (into `servers`).

        Raises:
            MlrigError: it cannot run here (a missing image, engine or server), before anything ran.
        """
        ...

    def run_stages(self, request: StageRequest, servers: ExitStack) -> dict[str, float]:
        """Run the stages that need it, in dependency order.

        Returns:
            The stages that ran, each with its wall time in seconds.

        Raises:
            MlrigError: a stage failed; nothing downstream of it was started.
        """
        ...
