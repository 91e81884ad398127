"""What each use of a ClearML server needs configured (mlrig.tracking.clearml_server): one
message naming every missing setting, what it is for, and what to do meanwhile."""

from __future__ import annotations

import pytest

from mlrig.errors import ConfigError
from mlrig.settings import Settings
from mlrig.tracking.clearml_server import (
    DOCTOR,
    IMPORT,
    SERVER_SETTINGS,
    SUBMISSION,
    TRIALS,
    ServerUse,
    missing_for,
    require_server,
)

SERVER = {
    "CLEARML_API_HOST": "http://clearml.example:8008",
    "CLEARML_API_ACCESS_KEY": "access",
    "CLEARML_API_SECRET_KEY": "secret-4f1c9a7e",
}


def settings_with(**values: str) -> Settings:
    """Settings of these values alone, whatever the environment holds."""
    names = [*SERVER, "CLEARML_OFFLINE_MODE"]
    return Settings(**{name: values.get(name) for name in names})  # type: ignore[arg-type]


@pytest.mark.parametrize("use", [SUBMISSION, TRIALS, IMPORT, DOCTOR])
def test_each_missing_setting_is_named_with_what_it_is_for(use: ServerUse) -> None:
    settings = settings_with(CLEARML_API_HOST=SERVER["CLEARML_API_HOST"])

    message = missing_for(settings, use)

    assert message is not None and message.startswith(f"{use.action} needs a ClearML server")
    for name in ("CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        assert f"  {name}: {SERVER_SETTINGS[name]}" in message
    assert "CLEARML_API_HOST:" not in message and message.endswith(use.meanwhile)
    with pytest.raises(ConfigError):
        require_server(settings, use)


@pytest.mark.parametrize(
    ("use", "meanwhile"),
    [
        (SUBMISSION, "mlrig clearml pipeline --dry-run"),
        (TRIALS, "mlrig tune without --executor"),
        (IMPORT, "offline sessions stay where they are"),
    ],
)
def test_each_use_says_what_to_do_without_a_server(use: ServerUse, meanwhile: str) -> None:
    message = missing_for(settings_with(), use)
    assert message is not None and meanwhile in message
    for name in SERVER:
        assert name in message


def test_offline_mode_is_refused_where_a_server_is_needed_and_the_import_ignores_it() -> None:
    offline = settings_with(**SERVER, CLEARML_OFFLINE_MODE="1")

    for use in (SUBMISSION, TRIALS):
        message = missing_for(offline, use)
        assert message is not None and "CLEARML_OFFLINE_MODE is on. Unset it." in message
    message = missing_for(settings_with(CLEARML_OFFLINE_MODE="1"), SUBMISSION)
    assert message is not None and "Set them and unset CLEARML_OFFLINE_MODE." in message
    assert missing_for(offline, IMPORT) is None  # the import goes online itself
    assert missing_for(settings_with(**SERVER), SUBMISSION) is None


def test_no_secret_is_in_a_message() -> None:
    for use in (SUBMISSION, IMPORT):
        message = missing_for(settings_with(**SERVER, CLEARML_OFFLINE_MODE="true"), use) or ""
        assert SERVER["CLEARML_API_SECRET_KEY"] not in message
