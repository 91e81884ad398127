"""Where the run summary and the report send a user to see the runs in MLflow."""

from __future__ import annotations

import pytest

from mlrig.settings import Settings
from mlrig.tracking.mlflow_ui import mlflow_server, mlflow_ui_command, project_mlflow_ui_command


def test_the_project_store_is_opened_with_mlflow_ui(project_settings: Settings) -> None:
    command = mlflow_ui_command(project_settings)

    assert command.startswith(f"cd {project_settings.root} && ")
    assert command.endswith("mlflow ui --backend-store-uri sqlite:///.mlrig/mlflow.db --port 5000")
    assert mlflow_server(project_settings) is None


def test_a_store_named_by_uri_as_a_stage_gets_it_is_opened_the_same_way(
    project_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline's stages get the project store as MLFLOW_TRACKING_URI: still no server."""
    store = f"sqlite:///{project_settings.root}/.mlrig/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    settings = Settings()

    assert mlflow_ui_command(settings) == mlflow_ui_command(project_settings)
    assert mlflow_server(settings) is None


def test_the_report_names_a_command_with_no_path_of_this_checkout(
    project_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """The report is a DVC output: the same in every clone, wherever its venv is."""
    assert project_mlflow_ui_command(project_settings) == "make ui"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project_settings.root}/.mlrig/mlflow.db")
    assert project_mlflow_ui_command(Settings()) == "make ui"  # as a stage gets the store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    other = project_mlflow_ui_command(Settings())
    assert other.endswith(f"ui --backend-store-uri sqlite:///{tmp_path}/other.db --port 5000")


def test_a_server_is_its_address_without_credentials(
    project_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:secret@mlflow.example:8443/")
    settings = Settings()

    assert mlflow_server(settings) == "https://***@mlflow.example:8443"
    assert mlflow_ui_command(settings) == "open https://***@mlflow.example:8443/"
    assert "secret" not in mlflow_ui_command(settings)
