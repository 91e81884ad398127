"""Which cached pipeline results the configured MLflow store does not hold.

DVC caches a stage by its inputs, not by the MLflow store its run went to. After a run against
one store (the local SQLite one), a run against another (the stack's server) finds every stage
up to date, and that store would get no runs and no champion. These checks name the stages whose
recorded runs or champion the configured store lacks, so the pipeline runs them again there.

Asking MLflow costs about 3 s (importing it and opening its store), more than the rest of a run
that has nothing to do. A SQLite store is a file: when neither it nor dvc.lock changed since the
last run checked it, the answers cannot have changed either, and that run's are used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from mlrig.experiments.results import RUN_FILE, Champion, TrainOutput, read_champion
from mlrig.settings import Settings
from mlrig.tracking.train_runs import find_train_run

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRAIN_STAGE = "train"
REGISTER_STAGE = "register"
TRAIN_DIR = Path("outputs/train")
REGISTER_DIR = Path("outputs/register")
CHAMPION_ALIAS = "champion"
SQLITE_PREFIX = "sqlite:///"
CHECKED_STORE_FILE = "checked-store.json"


def store_client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(settings.tracking_uri)


def champion_in_store(client: MlflowClient, champion: Champion) -> bool:
    """True when the store's registry has the champion's model with the `champion` alias."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version_by_alias(champion.registered_model, CHAMPION_ALIAS)
    except MlflowException:
        return False
    return True


def train_stage_recorded(settings: Settings, stage: str) -> bool:
    """False when the configured store has no run that logged the stage's model (or the
    output is from an older mlrig that wrote another run.json)."""
    experiment = stage.removeprefix(f"{TRAIN_STAGE}@")
    run_file = settings.root / TRAIN_DIR / experiment / RUN_FILE
    if not run_file.is_file():
        return True  # no outputs: DVC runs (or restores) the stage anyway
    try:
        output = TrainOutput.model_validate_json(run_file.read_text())
    except ValidationError:
        return False
    return find_train_run(settings, output) is not None


def unrecorded_train_stages(settings: Settings, stages: list[str]) -> list[str]:
    """The train stages (`train@<experiment>`, one per entry of dvc.yaml's foreach) among
    `stages` whose model no run of the configured store logged."""
    train_stages = [stage for stage in stages if stage.startswith(f"{TRAIN_STAGE}@")]
    return [stage for stage in train_stages if not train_stage_recorded(settings, stage)]


def champion_missing(settings: Settings) -> bool:
    """True when register's output names a champion the configured store's registry lacks."""
    champion = read_champion(settings.root / REGISTER_DIR)
    return champion is not None and not champion_in_store(store_client(settings), champion)


def stored_champion(settings: Settings) -> Champion | None:
    """Register's decision, only when the configured store holds that champion."""
    champion = read_champion(settings.root / REGISTER_DIR)
    if champion is None or not champion_in_store(store_client(settings), champion):
        return None
    return champion


class CheckedStore(BaseModel):
    """What the last run found in a SQLite MLflow store, and the state it found it in."""

    fingerprint: str
    runs_in_experiment: int
    champion: Champion | None


def store_fingerprint(settings: Settings) -> str | None:
    """The state of a SQLite tracking store and of dvc.lock (which names the runs it must hold).

    None for a tracking server, whose state cannot be seen from here.
    """
    if not settings.tracking_uri.startswith(SQLITE_PREFIX):
        return None
    database = settings.root / settings.tracking_uri.removeprefix(SQLITE_PREFIX)
    digest = hashlib.sha256(f"{settings.tracking_uri}\0{settings.mlflow_experiment}".encode())
    for path in (database, database.with_name(f"{database.name}-wal")):
        if path.exists():
            state = path.stat()
            digest.update(f"\0{state.st_ino}\0{state.st_size}\0{state.st_mtime_ns}".encode())
    lock = settings.root / "dvc.lock"
    digest.update(b"\0" + (lock.read_bytes() if lock.exists() else b""))
    return digest.hexdigest()


def unchanged_store(settings: Settings) -> CheckedStore | None:
    """The last run's findings when the SQLite store and dvc.lock are as it left them."""
    fingerprint = store_fingerprint(settings)
    record = settings.state_dir / CHECKED_STORE_FILE
    if fingerprint is None or not record.is_file():
        return None
    try:
        checked = CheckedStore.model_validate_json(record.read_text())
    except ValidationError:
        return None
    return checked if checked.fingerprint == fingerprint else None


def remember_store(settings: Settings, runs_in_experiment: int, champion: Champion | None) -> None:
    """Record what this run found, once it is done with the store (a SQLite store only)."""
    record = settings.state_dir / CHECKED_STORE_FILE
    fingerprint = store_fingerprint(settings)
    if fingerprint is None:
        record.unlink(missing_ok=True)
        return
    checked = CheckedStore(
        fingerprint=fingerprint, runs_in_experiment=runs_in_experiment, champion=champion
    )
    record.write_text(checked.model_dump_json(indent=2))
