"""Which cached pipeline results the configured MLflow store does not hold.

DVC caches a stage by its inputs, not by the MLflow store its run went to. After a run against
one store (the local SQLite one), a run against another (the stack's server) finds every stage
up to date, and that store would get no runs and no champion. These checks name the stages whose
recorded runs or champion the configured store lacks, so the pipeline runs them again there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.results import RUN_FILE, Champion, TrainRecord, read_champion
from mlrig.settings import Settings
from mlrig.tracking import require_mlflow_run

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRAIN_STAGE = "train"
REGISTER_STAGE = "register"
TRAIN_DIR = Path("outputs/train")
REGISTER_DIR = Path("outputs/register")
CHAMPION_ALIAS = "champion"


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
    """False when the stage's outputs name an MLflow run the configured store does not have."""
    experiment = stage.removeprefix(f"{TRAIN_STAGE}@")
    run_file = settings.root / TRAIN_DIR / experiment / RUN_FILE
    if not run_file.is_file():
        return True  # no outputs: DVC runs (or restores) the stage anyway
    record = TrainRecord.model_validate_json(run_file.read_text())
    return require_mlflow_run(settings, record.mlflow_run_id)


def unrecorded_train_stages(settings: Settings, experiments: list[str]) -> list[str]:
    """Train stages whose outputs name an MLflow run the configured store does not have."""
    stages = [f"{TRAIN_STAGE}@{name}" for name in experiments]
    return [stage for stage in stages if not train_stage_recorded(settings, stage)]


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
