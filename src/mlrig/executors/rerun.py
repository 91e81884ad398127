"""Stages run again in given step images, one after another: what `mlrig reproduce` does with a
model whose stages ran in step images.

Each stage runs the way the containers executor runs one (`StepContainers`): in its step
image's container, handed to the step server, `mlrig-stage <stage> --force` in a fresh
workspace of the checkout's files. The DVC remote is a throwaway folder beside the workspaces
(`/workspaces/remote` in the containers): a stage pushes its outputs there and the next pulls
them from it. Files the stages read that none of them makes (the training split) are placed in
each workspace beforehand, untracked by its dvc.lock, so nothing pulls them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.dvc.dag import step_of
from mlrig.dvc.lockfile import LOCK_SCHEMA, HeldLock, lock_entry
from mlrig.errors import MlrigError, run_logged
from mlrig.executors.containers import copy_project_files
from mlrig.executors.step_containers import (
    CONTAINER_WORKSPACES,
    StepContainers,
    hand_over,
    remove_workspace,
)
from mlrig.images.engine import Engine

#: the throwaway DVC remote, a folder of the workspaces' folder
REMOTE_FOLDER = "remote"
LOG_TAIL_CHARACTERS = 4000


@dataclass(frozen=True)
class Rerun:
    """What stages run again in step images need.

    Attributes:
        engine: the container engine.
        images: each step's image (`train` -> its reference).
        source: the checkout whose files each workspace gets, and where the outputs come back.
        given: files placed in each workspace (path relative to the project -> the file).
        environment: the settings each stage gets (MLflow, experiment, commit); their values
            travel in the engine's environment, their names on its command line.
        run_dir: a folder of this rerun (workspaces, logs), removed afterwards.
    """

    engine: Engine
    images: dict[str, str]
    source: Path
    given: dict[str, Path]
    environment: dict[str, str]
    run_dir: Path


def rerun_in_images(rerun: Rerun, stages: Sequence[str]) -> str | None:
    """Run `stages` (forced) in order, each in its step's image; copy each one's outputs back
    into `rerun.source`.

    Returns:
        None when every stage ran, else what failed with the tail of its log.
    """
    containers = StepContainers(
        engine=rerun.engine,
        run_id=f"reproduce-{os.getpid()}",
        run_dir=rerun.run_dir,
        images=rerun.images,
        server_environment={},
    )
    done = HeldLock(rerun.run_dir / "dvc.lock", {"schema": LOCK_SCHEMA, "stages": {}})
    try:
        (containers.workspaces / REMOTE_FOLDER).mkdir(parents=True)
        hand_over(containers.workspaces, rerun.engine)
        for stage in stages:
            failure = run_one(rerun, containers, done, stage)
            if failure is not None:
                return failure
        return None
    except MlrigError as error:  # a step container that never served
        return str(error)
    finally:
        containers.close()
        remove_workspace(rerun.run_dir, rerun.engine)


def run_one(rerun: Rerun, containers: StepContainers, done: HeldLock, stage: str) -> str | None:
    """One stage in its step's container; its dvc.lock entry joins `done`."""
    workspace = containers.workspaces / stage.replace("@", "-")
    copy_project_files(rerun.source, workspace)
    for relative, file in rerun.given.items():
        (workspace / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, workspace / relative)
    # the entries of the stages rerun before it: what it pulls from the throwaway remote
    done.write_part(workspace / "dvc.lock", done.data["stages"])
    hand_over(workspace, rerun.engine)
    container = containers.ready(step_of(stage), stage)
    environment = rerun.environment | {
        "MLRIG_DVC_REMOTE_URL": f"{CONTAINER_WORKSPACES}/{REMOTE_FOLDER}",
        "MLRIG_IMAGE": rerun.images[step_of(stage)],
    }
    command = containers.stage_command(container, stage, workspace, sorted(environment), force=True)
    log_path = rerun.run_dir / f"{stage.replace('@', '-')}.log"
    code = run_logged(command, log_path, env=os.environ | environment)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARACTERS:]
        return f"{stage} failed in {rerun.images[step_of(stage)]} (exit code {code}):\n{tail}"
    entry = lock_entry(workspace, stage)
    done.data["stages"][stage] = entry
    copy_outputs(entry, workspace, rerun.source)
    return None


def copy_outputs(entry: dict[str, Any], workspace: Path, destination: Path) -> None:
    """The stage's outputs (its dvc.lock entry's `outs`) from the workspace to `destination`."""
    for out in entry.get("outs", []):
        source, target = workspace / out["path"], destination / out["path"]
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
