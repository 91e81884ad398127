"""`mlrig run`: check the input, apply overrides, run `dvc repro` under one MLflow parent run.

Everything a user can get wrong (params, the data source, the data itself) is checked before
any stage runs, so bad input changes nothing: no new runs, no registry change, no outputs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlrig import stopping
from mlrig.code_deps import require_code_deps
from mlrig.dag import StageRequest, stage_graph, step_of, topological_order
from mlrig.doctor import require_services
from mlrig.dvc import remote_arguments, run_dvc
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError, Stopped, redact
from mlrig.executors import StageExecutor, stage_executor
from mlrig.integrity import repair_outputs
from mlrig.params import (
    STEPS_DIR,
    Params,
    apply_overrides,
    dump_params,
    read_params_file,
    validate_params,
)
from mlrig.recorded import (
    REGISTER_STAGE,
    CheckedStore,
    champion_missing,
    remember_store,
    stored_champion,
    unchanged_store,
    unrecorded_train_stages,
)
from mlrig.results import Champion
from mlrig.settings import Settings
from mlrig.stopping import StopRequested
from mlrig.tracking import (
    TAG_GIT_COMMIT,
    TAG_HOST,
    TAG_PID,
    TAG_PIPELINE_RUN,
    TAG_STEP,
    setup_mlflow,
)

PARAMS_FILE = "params.yaml"
REPORT_DIR = "reports"
PIPELINE_STEP = "pipeline"  # the TAG_STEP of a pipeline's parent run


class RunSummary(BaseModel):
    """What a pipeline run did, for the closing message and `--json`."""

    pipeline_run_id: str | None
    stages_run: list[str]
    stage_seconds: dict[str, float]
    up_to_date: bool
    runs_recorded: int
    runs_in_experiment: int
    champion: Champion | None  # only when the configured MLflow store holds it
    report: str
    mlflow_ui: str
    log: str | None
    repaired: list[str] = []  # outputs whose content did not match dvc.lock, and what was done


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


def dvc_lock_holders(root: Path) -> list[int]:
    """The live processes holding this checkout's DVC locks (.dvc/tmp/lock, .dvc/tmp/rwlock)."""
    import psutil

    tmp = root / ".dvc" / "tmp"
    holders: set[int] = set()
    lock_path = tmp / "lock"
    if lock_path.exists():
        with lock_path.open("a+") as lock:  # DVC's zc.lockfile: flock, and the holder's pid
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                lock.seek(0)
                holders.update(int(word) for word in lock.read().split() if word.isdigit())
    try:
        rwlock = json.loads((tmp / "rwlock").read_text())
    except (OSError, ValueError):
        rwlock = {}
    infos = [*rwlock.get("write", {}).values()]
    infos += [info for readers in rwlock.get("read", {}).values() for info in readers]
    holders.update(info["pid"] for info in infos if isinstance(info.get("pid"), int))
    return sorted(pid for pid in holders if pid != os.getpid() and psutil.pid_exists(pid))


def require_dvc_unlocked(root: Path) -> None:
    """Refuse to start while another process (an orphan of a killed run) holds DVC's lock.

    Raises:
        MlrigError: one line naming the processes and how to stop them.
    """
    import psutil

    holders = dvc_lock_holders(root)
    if not holders:
        return
    described = []
    for pid in holders:
        try:
            command = " ".join(" ".join(psutil.Process(pid).cmdline()).split())  # one line
        except psutil.Error:
            command = "?"
        described.append(f"pid {pid} ({command[:80]})")
    raise MlrigError(
        f"DVC's lock in {root} is held by {', '.join(described)}, left by an earlier run or "
        f"another dvc command; nothing was changed: wait for it to end or stop it "
        f"(kill {' '.join(map(str, holders))}), then run again.",
        exit_code=EXIT_FAILED,
    )


def stopped_message(stop: StopRequested) -> str:
    """The one message of a run stopped by a signal: what finished, and how to resume."""
    finished = ", ".join(stop.finished) or "none"
    stopped = f" Stopped: {', '.join(stop.stopped)}." if stop.stopped else ""
    return (
        f"Stopped by {signal.Signals(stop.signum).name}. Finished: {finished}.{stopped} The next "
        "`mlrig run` resumes from there: DVC keeps what finished and runs the rest."
    )


def prepare_params(root: Path, overrides: list[str]) -> tuple[Params, str | None]:
    """Validate params.yaml with the overrides applied.

    Returns:
        The params, and the new params.yaml text when the overrides change it (else None).
    """
    path = root / PARAMS_FILE
    document = apply_overrides(read_params_file(path), overrides)
    origin = f"{PARAMS_FILE} with -S overrides" if overrides else PARAMS_FILE
    params = validate_params(document, origin, root)
    text = dump_params(document)
    return params, (text if overrides and text != path.read_text() else None)


def preflight(params: Params, root: Path) -> None:
    """Run each step's checks in memory, in the pipeline's order, so that bad data or params
    fail before any stage runs.

    A step takes part with a `preflight.py` in its folder, whose `preflight(params, root,
    checked)` raises on what it refuses and returns what the steps after it may check
    (`checked` maps each step before it to what it returned). The library knows no step: it
    imports these by name, as it finds them.

    Raises:
        DataError, ParamsError: what a step's check refused.
    """
    import importlib

    steps = dict.fromkeys(step_of(stage) for stage in topological_order(stage_graph(root)))
    checked: dict[str, Any] = {}
    for step in steps:
        if (root / STEPS_DIR / step / "preflight.py").is_file():
            module = importlib.import_module(f"{STEPS_DIR}.{step}.preflight")
            checked[step] = module.preflight(params, root, checked)


def require_checkout(root: Path) -> None:
    """Refuse a folder DVC cannot work in: not a git checkout, or no .dvc folder.

    Raises:
        ConfigError: naming what is missing and how to get it.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import SCMError

    try:
        with Repo(str(root)):
            pass
    except SCMError:
        raise ConfigError(
            f"{root} is not a git repository, and DVC versions the pipeline with git. Work in "
            "a clone of the project, or make this folder one: git init && git add -A && "
            "git commit -m init"
        ) from None
    except NotDvcRepoError:
        raise ConfigError(
            f"{root} has a dvc.yaml but no .dvc folder. Work in a clone of the project, or "
            "run: dvc init"
        ) from None


def changed_stages(root: Path, target: str | None = None) -> list[str]:
    """Stages `dvc repro [target]` would run (empty when they are up to date).

    Args:
        target: a stage: only it and the stages it depends on are checked.
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        if target is None:
            return list(repo.status())
        return list(repo.status(targets=[target], with_deps=True))


def new_pipeline_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


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


def unrecorded_stages(settings: Settings, params: Params) -> list[str]:
    """Stages to run again because the configured MLflow store lacks their runs or champion."""
    train_stages = unrecorded_train_stages(settings, list(params.train.experiments))
    if not train_stages and champion_missing(settings):
        return [REGISTER_STAGE]
    return train_stages


def push_outputs(settings: Settings, log_path: Path) -> None:
    """`dvc push` outputs and run-cache to the configured remote.

    Raises:
        MlrigError: the remote failed; the outputs stay in the local cache for a later push.
    """
    remote = settings.dvc_remote or "the default remote"
    arguments = ["push", "--run-cache", *remote_arguments(settings)]
    try:
        run_dvc(arguments, settings.root, dict(os.environ), log_path, lambda stage: None)
    except MlrigError as error:
        raise MlrigError(
            f"The pipeline ran, but pushing to DVC remote {remote} failed; the outputs are safe "
            f"in the local cache. When the remote is back: dvc push --run-cache"
            f"{' --remote ' + settings.dvc_remote if settings.dvc_remote else ''}\n{error}",
            exit_code=EXIT_FAILED,
        ) from None


def count_runs(settings: Settings, pipeline_run_id: str | None) -> tuple[int, int]:
    """Experiment runs recorded by this pipeline run, and all runs in the MLflow experiment."""
    from mlflow import MlflowClient

    experiment_id = setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    total = len(client.search_runs([experiment_id], max_results=50000))
    if not pipeline_run_id:
        return 0, total
    query = f"tags.`{TAG_PIPELINE_RUN}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = 'train'"
    return len(client.search_runs([experiment_id], query, max_results=50000)), total


def mlflow_ui_command(settings: Settings) -> str:
    """The command that opens the MLflow UI on the runs."""
    if not settings.uses_local_mlflow:
        return f"open {redact(settings.tracking_uri)}"
    store = settings.tracking_uri.replace(str(settings.root) + "/", "")
    # the mlflow of this environment, as it can be typed: no uv, no activated venv needed
    mlflow = Path(sys.executable).parent / "mlflow"
    if mlflow.is_relative_to(settings.root):
        mlflow = mlflow.relative_to(settings.root)
    command = [str(mlflow), "ui", "--backend-store-uri", store, "--port", "5000"]
    return f"cd {shlex.quote(str(settings.root))} && {shlex.join(command)}"


def start_parent_run(settings: Settings, pipeline_run_id: str, params: Params) -> str:
    """Open the pipeline's parent MLflow run; returns its id (the run stays open)."""
    from mlflow import MlflowClient

    from mlrig.lineage import git_commit

    experiment_id = setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    close_abandoned_runs(client, experiment_id)
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {pipeline_run_id}",
        tags={
            TAG_PIPELINE_RUN: pipeline_run_id,
            TAG_GIT_COMMIT: git_commit(settings.root),
            TAG_STEP: PIPELINE_STEP,
            TAG_HOST: socket.gethostname(),
            TAG_PID: str(os.getpid()),
        },
    )
    flat: dict[str, Any] = {
        f"ingest.{key}": value for key, value in params.ingest.model_dump().items()
    } | {
        "split.test_size": params.split.test_size,
        "experiments": ",".join(params.train.experiments),
    }
    for key, value in flat.items():
        client.log_param(run.info.run_id, key, str(value))
    return run.info.run_id


def close_abandoned_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the parent runs left RUNNING by an `mlrig run` of this host that is gone.

    Returns:
        Their run ids.
    """
    import psutil

    query = (
        f"tags.`{TAG_STEP}` = '{PIPELINE_STEP}' and attributes.status = 'RUNNING' "
        f"and tags.`{TAG_HOST}` = '{socket.gethostname()}'"
    )
    abandoned = [
        run.info.run_id
        for run in client.search_runs([experiment_id], query, max_results=1000)
        if not run.data.tags.get(TAG_PID, "").isdigit()
        or not psutil.pid_exists(int(run.data.tags[TAG_PID]))
    ]
    for run_id in abandoned:
        client.set_terminated(run_id, "KILLED")
    return abandoned


def finish_parent_run(settings: Settings, run_id: str, status: str) -> None:
    """Close the pipeline's parent run: FINISHED, FAILED, or KILLED (stopped by a signal).

    Raises:
        MlrigError: the server did not take it after the stages succeeded (after a failure,
            the stage's own error is the one to report, so this one is dropped).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(settings.tracking_uri).set_terminated(run_id, status)
    except MlflowException as error:
        if status == "FINISHED":
            raise MlrigError(
                f"Every stage ran, but MLflow at {settings.tracking_uri} did not take the end "
                f"of pipeline run {run_id}: {str(error).splitlines()[0]}. The outputs and the "
                "experiment runs are in place; check the server (mlrig doctor).",
                exit_code=EXIT_FAILED,
            ) from None


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


def checked_params(root: Path, overrides: list[str]) -> tuple[Params, str | None]:
    """The params with the overrides, checked with every step's preflight: what a run checks
    before any stage starts (see `prepare_params`)."""
    params, new_params_text = prepare_params(root, overrides)
    preflight(params, root)
    return params, new_params_text


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
) -> RunSummary:
    """Run the whole pipeline once.

    Args:
        settings: where to track and store.
        overrides: `key.path=value` params overrides, saved to params.yaml once they pass checks.
        force: re-run every stage even when DVC finds it unchanged.
        push: `dvc push` outputs and run-cache to the DVC remote afterwards.
        executor: the name of an executor that runs stages (`mlrig.executors.EXECUTORS`).
        jobs: how many independent stages run at once.
        on_stage: called with each stage name as DVC starts it (for progress).
        on_phase: called with what is happening between stages (for progress).

    Returns:
        What ran, what was recorded, and where the results are.
    """
    stages_executor = stage_executor(executor, settings)
    with held_checkout(settings):
        return run_unlocked(
            settings,
            overrides,
            RunOptions(force=force, push=push, jobs=jobs, on_stage=on_stage, on_phase=on_phase),
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
        if known != []:  # params and data as in dvc.lock passed these checks before
            preflight(params, root)
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
        unrecorded = [] if checked else unrecorded_stages(settings, params)
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
            )
            stage_seconds = run_under_parent_run(
                settings, parent_run_id, executor, request, servers
            )
        if options.push:
            options.on_phase("pushing to the DVC remote")
            push_outputs(settings, settings.state_dir / "logs" / "push.log")
        options.on_phase("counting runs")
        return run_summary(settings, pipeline_run_id, stage_seconds, checked, repaired, log_path)


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
    status = "FAILED"
    try:
        seconds = executor.run_stages(request, servers)
        status = "FINISHED"
        return seconds
    except StopRequested:
        status = "KILLED"
        raise
    finally:
        finish_parent_run(settings, parent_run_id, status)


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
    return RunSummary(
        pipeline_run_id=pipeline_run_id,
        stages_run=list(stage_seconds),
        stage_seconds=stage_seconds,
        up_to_date=not stage_seconds,
        runs_recorded=recorded,
        runs_in_experiment=total,
        champion=champion,
        report=str(settings.root / REPORT_DIR / "report.html"),
        mlflow_ui=mlflow_ui_command(settings),
        log=str(log_path) if pipeline_run_id else None,
        repaired=repaired,
    )
