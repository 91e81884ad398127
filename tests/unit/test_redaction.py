"""A password in a URL is never shown: redact() and the credentials moved out of the URI."""

from __future__ import annotations

import pytest

from mlrig.errors import ConfigError, redact
from mlrig.settings import move_uri_credentials


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "MLflow at http://alice:s3cret@127.0.0.1:9 refused: API request to "
            "http://alice:s3cret@127.0.0.1:9/api/2.0 failed",
            "MLflow at http://***@127.0.0.1:9 refused: API request to "
            "http://***@127.0.0.1:9/api/2.0 failed",
        ),
        (
            "clone https://token@gitlab.example/group/x.git",
            "clone https://***@gitlab.example/group/x.git",
        ),
        # no user info: left as it is
        ("s3://bucket/model@v1", "s3://bucket/model@v1"),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
        (
            "see http://host:5000/#/runs and ask ops@example.org",
            "see http://host:5000/#/runs and ask ops@example.org",
        ),
    ],
)
def test_redact_hides_the_user_info_of_urls(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_an_error_never_carries_a_password() -> None:
    assert "s3cret" not in str(ConfigError("MLflow at http://alice:s3cret@mlflow:5000 is down"))


def test_credentials_move_out_of_the_tracking_uri() -> None:
    environment = {"MLFLOW_TRACKING_URI": "https://al%40ice:s3c%3Aret@mlflow.example:5000/x"}

    move_uri_credentials(environment)

    assert environment == {
        "MLFLOW_TRACKING_URI": "https://mlflow.example:5000/x",
        "MLFLOW_TRACKING_USERNAME": "al@ice",
        "MLFLOW_TRACKING_PASSWORD": "s3c:ret",
    }


def test_credentials_already_set_win_over_the_uri() -> None:
    environment = {
        "MLFLOW_TRACKING_URI": "http://alice:old@mlflow:5000",
        "MLFLOW_TRACKING_PASSWORD": "new",
    }

    move_uri_credentials(environment)

    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert environment["MLFLOW_TRACKING_PASSWORD"] == "new"
