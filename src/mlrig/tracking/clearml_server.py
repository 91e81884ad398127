"""The ClearML server: what each use of it needs configured, and whether it answers.

Everything that talks to a server asks here first: a submission (`mlrig run --executor
clearml`, `mlrig clearml pipeline`), ClearML trials (`mlrig tune --executor clearml`), the
import of offline sessions, `mlrig doctor`, and a step's pod (`check_server`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlrig.errors import ConfigError
from mlrig.settings import Settings, unset_names

#: what a ClearML server needs to be reached, and what each setting is for
SERVER_SETTINGS = {
    "CLEARML_API_HOST": "the ClearML API server, e.g. https://api.clear.ml or http://clearml:8008",
    "CLEARML_API_ACCESS_KEY": "the access key of ClearML credentials (Settings > Workspace)",
    "CLEARML_API_SECRET_KEY": "the secret key of those credentials",
}


@dataclass(frozen=True)
class ServerUse:
    """Something that needs a ClearML server: what it is, and what the user can do meanwhile."""

    action: str
    meanwhile: str
    refuses_offline_mode: bool = True


SUBMISSION = ServerUse(
    "Submitting a pipeline to a ClearML queue",
    "Meanwhile, look at what would be submitted with: mlrig clearml pipeline --dry-run",
)
TRIALS = ServerUse(
    "Running trials on a ClearML queue",
    "Meanwhile, run the same search here: mlrig tune without --executor",
)
#: an import switches ClearML online itself: CLEARML_OFFLINE_MODE does not stop it
IMPORT = ServerUse(
    "Importing the offline sessions",
    "Then run `mlrig clearml import` again; the offline sessions stay where they are until then.",
    refuses_offline_mode=False,
)
#: `mlrig doctor` checks a server only when CLEARML_API_HOST is set, and says its own fix
DOCTOR = ServerUse("Logging the steps' tasks to ClearML", "", refuses_offline_mode=False)


def server_settings(settings: Settings) -> dict[str, object]:
    """The server settings by their variable names (secrets stay SecretStr)."""
    return {
        "CLEARML_API_HOST": settings.clearml_api_host,
        "CLEARML_API_ACCESS_KEY": settings.clearml_access_key,
        "CLEARML_API_SECRET_KEY": settings.clearml_secret_key,
    }


def missing_for(settings: Settings, use: ServerUse) -> str | None:
    """What `use` lacks of a ClearML server, as one message; None when nothing is missing.

    The message names every server setting that is not set with what it is for, says so when
    CLEARML_OFFLINE_MODE is on (if `use` cannot work offline), and ends with what the user can
    do meanwhile.
    """
    missing = unset_names(server_settings(settings))
    offline = use.refuses_offline_mode and settings.clearml_offline is True
    if not missing and not offline:
        return None
    lines = "\n".join(f"  {name}: {SERVER_SETTINGS[name]}" for name in missing)
    if missing:
        unset_offline = " and unset CLEARML_OFFLINE_MODE" if offline else ""
        problem = f"these are not set:\n{lines}\nSet them{unset_offline}."
    else:
        problem = "CLEARML_OFFLINE_MODE is on. Unset it."
    return f"{use.action} needs a ClearML server, and {problem} {use.meanwhile}".rstrip()


def require_server(settings: Settings, use: ServerUse) -> None:
    """Raises ConfigError (see `missing_for`) unless `use` has the server settings it needs."""
    if message := missing_for(settings, use):
        raise ConfigError(message)


def check_server(
    settings: Settings,
    timeout: float = 5.0,
    meanwhile: str = "the offline sessions stay where they are.",
) -> None:
    """Fail fast, naming the setting, when the ClearML API is unreachable or refuses the keys.

    ClearML's SDK retries a dead server for minutes; a ping and a login answer in seconds.

    Args:
        meanwhile: what happened to the user's work, the end of the message.

    Raises:
        ConfigError: the server does not answer, or refuses the credentials.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    host = (settings.clearml_api_host or "").rstrip("/")
    session = requests.Session()
    session.mount("http", HTTPAdapter(max_retries=Retry(total=2, backoff_factor=0.5)))
    keys = (settings.clearml_access_key, settings.clearml_secret_key)
    try:
        session.get(f"{host}/debug.ping", timeout=timeout)
        login = (
            session.get(
                f"{host}/auth.login",
                auth=(keys[0].get_secret_value(), keys[1].get_secret_value()),
                timeout=timeout,
            )
            if keys[0] and keys[1]
            else None  # a pod the glue gave a token (CLEARML_AUTH_TOKEN) instead of keys
        )
    except requests.RequestException as error:
        raise ConfigError(
            f"Cannot reach the ClearML API at {host} (CLEARML_API_HOST): "
            f"{type(error).__name__}. Check the address and that the server is up; {meanwhile}"
        ) from None
    if login is not None and login.status_code in (401, 403):
        raise ConfigError(
            f"ClearML at {host} refused the credentials (CLEARML_API_ACCESS_KEY / "
            "CLEARML_API_SECRET_KEY). Create a key pair in the ClearML web UI and set them."
        )
