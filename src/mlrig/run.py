"""`mlrig run`: check the input, apply overrides, run `dvc repro` under one MLflow parent run.

Everything a user can get wrong (params, the data source, the data itself) is checked before
any stage runs, so bad input changes nothing: no new runs, no registry change, no outputs.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mlrig import stopping
from mlrig.doctor import require_services
from mlrig.dvc.code_deps import require_code_deps
from mlrig.dvc.commands import push_outputs
from mlrig.dvc.dag import with_descendants
from mlrig.dvc.integrity import repair_outputs
from mlrig.dvc.repo import changed_stages, require_checkout, require_dvc_unlocked
from mlrig.errors import EXIT_FAILED, MlrigError, Stopped
from mlrig.executors.base import OnProgress, StageExecutor, StageRequest, no_progress
from mlrig.executors.registry import stage_executor
from mlrig.experiments.params import PARAMS_FILE
from mlrig.experiments.preflight import preflight, prepare_params
from mlrig.experiments.results import Champion
from mlrig.progress import StageUsage, read_usage, usage_path
from mlrig.settings import Settings
from mlrig.stopping import StopRequested
from mlrig.tracking.mlflow_ui import mlflow_ui_command
from mlrig.tracking.parent_run import (
    count_runs,
    new_pipeline_run_id,
    parent_run_ending,
    start_parent_run,
)
from mlrig.tracking.recorded import (
    REGISTER_STAGE,
    CheckedStore,
    champion_missing,
    remember_store,
    stored_champion,
    unchanged_store,
    unrecorded_train_stages,
)

REPORT_DIR = "reports"
#: the meta.json of the table the models are trained on: its task, and why
TRAINED_TABLE_DIR = Path("outputs/split")


class RunSummary(BaseModel):
    """What a pipeline run did, for the closing message and `--json`."""

    pipeline_run_id: str | None
    stages_run: list[str]
    stage_seconds: dict[str, float]
    #: each stage's CPU time and peak RSS, counted by the kernel for its own process (the warm
    #: server's fork, or the step's command), when its command wrote them
    stage_usage: dict[str, StageUsage] = {}
    up_to_date: bool
    runs_recorded: int
    runs_in_experiment: int
    champion: Champion | None  # only when the configured MLflow store holds it
    report: str
    mlflow_ui: str
    log: str | None
    repaired: list[str] = []  # outputs whose content did not match dvc.lock, and what was done
    #: the task the models were trained for, and why (inferred from the target, or ingest.task)
    task: str | None = None
    task_reason: str | None = None
    #: checks the preflight left to their stages (a team's step had not made their table yet)
    deferred_checks: list[str] = []


@contextmanager
def exclusive_run(settings: Settings, command: str = "mlrig run") -> Iterator[None]:
    """Hold the project's run lock: one mlrig command runs dvc on the checkout at a time.

    Args:
        command: what takes the lock, as the user typed it; a refusal names the holder's.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock_path = settings.state_dir / "run.lock"
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise MlrigError(busy_checkout(settings.root, holder, command), EXIT_FAILED) from None
        lock.truncate(0)
        lock.write(f"{command}, pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def busy_checkout(root: Path, holder: str, command: str) -> str:
    """Why `command` cannot run while `holder` holds the run lock of the checkout `root`."""
    if command == "mlrig run":
        return (
            f"Another pipeline run ({holder}) is running in {root}. Wait for it to finish, or "
            "use a separate clone to run pipelines side by side."
        )
    # DVC's own lock error would advise deleting .dvc/tmp/rwlock, under the running stages
    report = "; a pipeline run brings the report up to date itself" if "report" in command else ""
    return (
        f"{command} did not start: another mlrig command ({holder}) is running dvc in {root}, "
        "and DVC takes one command at a time on a checkout (do not delete .dvc/tmp/rwlock, "
        f"the running stages hold it). Wait for it to finish, then run {command} again{report}."
    )


def stopped_message(stop: StopRequested) -> str:
    """The one message of a run stopped by a signal: what finished, and how to resume."""
    finished = ", ".join(stop.finished) or "none"
    stopped = f" Stopped: {', '.join(stop.stopped)}." if stop.stopped else ""
    return (
        f"Stopped by {signal.Signals(stop.signum).name}. Finished: {finished}.{stopped} The next "
        "`mlrig run` resumes from there: DVC keeps what finished and runs the rest."
    )


#: the thread pools a step's libraries size to every CPU: OpenMP (scikit-learn's histogram
#: gradient boosting), OpenBLAS and MKL (numpy)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_limits(jobs: int) -> dict[str, str]:
    """Each of `jobs` stages running at once gets its share of this machine's CPUs.

    Unbounded, OpenMP gives every stage a thread per CPU, which spin while they wait: two
    gradient boosting fits side by side on 2 CPUs took 24 times the CPU of one thread each
    (bench/bench_threads.py). A variable the user set is left as it is.
    """
    share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    return {name: share for name in THREAD_VARIABLES if name not in os.environ}


def stage_environment(
    settings: Settings, parent_run_id: str | None, pipeline_run_id: str | None
) -> dict[str, str]:
    """The environment of `dvc repro`: this interpreter first on PATH, the run ids and the
    commit set (a step runs no git: beside a parallel stage's `git add dvc.lock` it would race
    it for .git/index.lock)."""
    from mlrig.lineage import git_commit

    environment = dict(os.environ)
    environment["MLRIG_GIT_COMMIT"] = settings.git_commit or git_commit(settings.root)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    if parent_run_id:
        environment["MLRIG_PARENT_RUN_ID"] = parent_run_id
    if pipeline_run_id:
        environment["MLRIG_PIPELINE_RUN_ID"] = pipeline_run_id
    environment["MLRIG_PROJECT_DIR"] = str(settings.root)
    return environment


def unrecorded_stages(settings: Settings, graph: dict[str, set[str]]) -> list[str]:
    """Stages of the planned graph to run again because the configured MLflow store lacks
    their runs or champion."""
    train_stages = unrecorded_train_stages(settings, list(graph))
    if train_stages:
        # they fit the same bytes again, so DVC alone would skip what follows them: the
        # evaluate, register and report records this store lacks too
        return sorted(with_descendants(graph, train_stages))
    return [REGISTER_STAGE] if champion_missing(settings) else []


@contextmanager
def held_checkout(settings: Settings, command: str = "mlrig run") -> Iterator[None]:
    """What every run of the pipeline holds, whatever its executor: a checkout DVC can work in,
    whose stages name the code they run, taken by this command alone, stopped cleanly by
    SIGINT/SIGTERM.

    Raises:
        ConfigError: not a git and DVC checkout, or a stage's code deps are incomplete.
        MlrigError: another command holds the checkout, or DVC's lock.
        Stopped: a signal stopped the run (its message says what finished).
    """
    require_checkout(settings.root)
    require_code_deps(settings.root)
    try:
        with stopping.stop_on_signals(), exclusive_run(settings, command):
            require_dvc_unlocked(settings.root)
            yield
    except StopRequested as stop:
        raise Stopped(stopped_message(stop), exit_code=stop.exit_code) from None


def run_pipeline(
    settings: Settings,
    overrides: list[str],
    *,
    force: bool = False,
    push: bool = True,
    executor: str = "local",
    jobs: int = 2,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_phase: Callable[[str], None] = lambda phase: None,
    on_progress: OnProgress = no_progress,
) -> RunSummary:
    """Run the whole pipeline once.

    Args:
        settings: where to track and store.
        overrides: `key.path=value` params overrides, saved to params.yaml once they pass checks.
        force: re-run every stage even when DVC finds it unchanged.
        push: `dvc push` outputs and run-cache to the DVC remote afterwards.
        executor: the name of an executor that runs stages (`mlrig.executors.registry.EXECUTORS`).
        jobs: how many independent stages run at once.
        on_stage: called with each stage name as DVC starts it (for progress).
        on_phase: called with what is happening between stages (for progress).
        on_progress: called about every 10 s with each stage running that long, its seconds
            so far and the newest heartbeat of its step (`mlrig.progress`).

    Returns:
        What ran, what was recorded, and where the results are.
    """
    stages_executor = stage_executor(executor, settings)
    with held_checkout(settings):
        return run_unlocked(
            settings,
            overrides,
            RunOptions(force, push, jobs, on_stage, on_phase, on_progress),
            stages_executor,
        )


@dataclass(frozen=True)
class RunOptions:
    """How `run_pipeline` was asked to run (see there)."""

    force: bool
    push: bool
    jobs: int
    on_stage: Callable[[str], None]
    on_phase: Callable[[str], None]
    on_progress: OnProgress = no_progress


def run_unlocked(
    settings: Settings, overrides: list[str], options: RunOptions, executor: StageExecutor
) -> RunSummary:
    """`run_pipeline` once the checkout is this run's (see there)."""
    root = settings.root
    with ExitStack() as servers:
        options.on_phase("checking params and data")
        params, new_params_text = prepare_params(root, overrides)
        options.on_phase("checking the outputs against dvc.lock")
        repaired = repair_outputs(settings)  # before DVC is asked what changed
        # what DVC finds changed is known now unless the params are about to change
        known = None if new_params_text is not None or options.force else changed_stages(root)
        deferred: list[str] = []
        if known != []:  # params and data as in dvc.lock passed these checks before
            deferred = preflight(params, root)
        run_id = new_pipeline_run_id()
        log_path = settings.state_dir / "logs" / f"{run_id}.log"
        checked = unchanged_store(settings) if known == [] else None
        need_remote = options.push or executor.needs_dvc_remote
        require_services(settings, mlflow=checked is None, dvc_remote=need_remote)
        # in the executor's servers too: their libraries size their pools at import
        limits = thread_limits(options.jobs)
        early = dict(os.environ) | limits | {"MLRIG_PROJECT_DIR": str(root)}
        executor.prepare(servers, early, log_path, stages_may_run=known != [])
        if new_params_text is not None:
            (root / PARAMS_FILE).write_text(new_params_text)
        options.on_phase("checking what changed")
        graph = executor.plan()
        changed = set(changed_stages(root) if known is None else known)
        unrecorded = [] if checked else unrecorded_stages(settings, graph)
        forced = set(graph) if options.force else set(unrecorded)
        pipeline_run_id, stage_seconds = None, {}
        if changed or forced:
            pipeline_run_id = run_id
            parent_run_id = start_parent_run(settings, run_id, params)
            request = StageRequest(
                run_id=run_id,
                graph=graph,
                changed=changed,
                forced=forced,
                environment=stage_environment(settings, parent_run_id, run_id) | limits,
                jobs=options.jobs,
                log_path=log_path,
                on_stage=options.on_stage,
                on_progress=options.on_progress,
            )
            stage_seconds = run_under_parent_run(
                settings, parent_run_id, executor, request, servers
            )
        if options.push:
            options.on_phase("pushing to the DVC remote")
            push_outputs(settings, settings.state_dir / "logs" / "push.log")
        options.on_phase("counting runs")
        summary = run_summary(settings, pipeline_run_id, stage_seconds, checked, repaired, log_path)
        return summary.model_copy(update={"deferred_checks": deferred})


def run_under_parent_run(
    settings: Settings,
    parent_run_id: str,
    executor: StageExecutor,
    request: StageRequest,
    servers: ExitStack,
) -> dict[str, float]:
    """The executor's run of the stages; the pipeline's MLflow parent run then ends FINISHED,
    FAILED or KILLED (a signal), as the stages did.

    Returns:
        The stages that ran, each with its wall time in seconds.
    """
    with parent_run_ending(settings, parent_run_id):
        return executor.run_stages(request, servers)


def run_summary(
    settings: Settings,
    pipeline_run_id: str | None,
    stage_seconds: dict[str, float],
    checked: CheckedStore | None,
    repaired: list[str],
    log_path: Path,
) -> RunSummary:
    """What a run did, with the runs its MLflow store holds and the champion."""
    if checked:
        recorded, total, champion = 0, checked.runs_in_experiment, checked.champion
    else:
        recorded, total = count_runs(settings, pipeline_run_id)
        champion = stored_champion(settings)
        remember_store(settings, total, champion)
    task, task_reason = trained_task(settings.root)
    return RunSummary(
        pipeline_run_id=pipeline_run_id,
        stages_run=list(stage_seconds),
        stage_seconds=stage_seconds,
        stage_usage=stages_usage(log_path, list(stage_seconds)),
        up_to_date=not stage_seconds,
        runs_recorded=recorded,
        runs_in_experiment=total,
        champion=champion,
        report=str(settings.root / REPORT_DIR / "report.html"),
        mlflow_ui=mlflow_ui_command(settings),
        log=str(log_path) if pipeline_run_id else None,
        repaired=repaired,
        task=task,
        task_reason=task_reason,
    )


def stages_usage(log_path: Path, stages: list[str]) -> dict[str, StageUsage]:
    """The usage each stage's command wrote beside its log (a stage that wrote none is left
    out: a container's or pod's step writes its own elsewhere)."""
    found = {stage: read_usage(usage_path(log_path, stage)) for stage in stages}
    return {stage: usage for stage, usage in found.items() if usage is not None}


def trained_task(root: Path) -> tuple[str | None, str | None]:
    """The task of the table the models were trained on, and why, from its meta.json."""
    from pydantic import ValidationError

    from mlrig.experiments.tables import META_FILE, read_meta

    if not (root / TRAINED_TABLE_DIR / META_FILE).is_file():
        return None, None
    try:
        meta = read_meta(root / TRAINED_TABLE_DIR)
    except ValidationError:  # a team's own meta.json of another shape: no task line
        return None, None
    return meta.task, meta.task_reason or None
