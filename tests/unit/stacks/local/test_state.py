"""A stack made before SeaweedFS (moto's days) is taken over: ports kept, new ones chosen once."""

from __future__ import annotations

import json
from pathlib import Path

from mlrig.settings import Settings
from mlrig.stacks.local.config import StackPaths, StackSecrets, load_model
from mlrig.stacks.local.manager import load_or_create_state


def test_a_stack_of_moto_days_keeps_its_ports_and_gets_seaweedfs_ones(
    project_settings: Settings,
) -> None:
    paths = StackPaths(project_settings)
    paths.root.mkdir(parents=True)
    old = {"s3_kind": "moto", "postgres_port": 41001, "s3_port": 41002, "mlflow_port": 41003}
    paths.state_file.write_text(json.dumps(old))

    state = load_or_create_state(paths)

    assert (state.postgres_port, state.s3_port, state.mlflow_port) == (41001, 41002, 41003)
    assert state.seaweedfs is not None and state.seaweedfs.s3 == 41002
    ports = [*state.seaweedfs.model_dump().values(), state.seaweedfs.admin + 10000]
    assert len(set(ports)) == len(ports)
    assert load_or_create_state(paths) == state  # chosen once, kept in stack.json


def test_secrets_of_moto_days_gain_the_mlflow_servers_s3_identity(tmp_path: Path) -> None:
    old = {
        "postgres_superuser_password": "a",
        "mlflow_db_password": "b",
        "mlflow_admin_password": "c",
        "s3_access_key": "FSIAKEY",
        "s3_secret_key": "secret",
    }
    (tmp_path / "secrets.json").write_text(json.dumps(old))
    loaded = load_model(tmp_path / "secrets.json", StackSecrets)
    assert loaded is not None and loaded.s3_access_key == "FSIAKEY"
    assert loaded.s3_mlflow_access_key not in (loaded.s3_access_key, "")
    assert loaded.s3_mlflow_secret_key != loaded.s3_secret_key
