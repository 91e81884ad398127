"""Offline ClearML sessions: list them, and upload them to a server once one is configured."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from pydantic import BaseModel

from mlrig.errors import ConfigError
from mlrig.settings import Settings
from mlrig.text import counted
from mlrig.tracking.clearml_server import IMPORT, check_server, require_server

IMPORTED_FILE = "imported.json"
#: the metric ClearML files a task's single values under (Logger.report_single_value)
SINGLE_VALUES_METRIC = "Summary"


class Session(BaseModel):
    """One offline task session (a zip written when the task closed)."""

    offline_id: str
    path: str
    imported_as: str | None


def imported_index(sessions_dir: Path) -> dict[str, str]:
    """Offline id -> server task id, for the sessions already uploaded."""
    path = sessions_dir / IMPORTED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def list_sessions(settings: Settings) -> list[Session]:
    """Every offline session in the project, oldest first."""
    sessions_dir = settings.clearml_sessions_dir
    if not sessions_dir.is_dir():
        return []
    imported = imported_index(sessions_dir)
    zips = sorted(sessions_dir.glob("offline-*.zip"), key=lambda path: path.stat().st_mtime)
    return [
        Session(offline_id=path.stem, path=str(path), imported_as=imported.get(path.stem))
        for path in zips
    ]


class Pruned(BaseModel):
    """What prune_sessions dropped."""

    dropped: list[Session]
    kept: int

    @property
    def not_imported(self) -> list[Session]:
        """Dropped sessions no server has: their records are gone."""
        return [session for session in self.dropped if not session.imported_as]

    def message(self) -> str | None:
        """One paragraph saying what was dropped and how to keep sessions; None if nothing."""
        if not self.dropped:
            return None
        lost = len(self.not_imported)
        imported = (
            f", {lost} of them never imported to a ClearML server"
            if lost
            else ", each already imported to a ClearML server"
        )
        return (
            f"Dropped the {counted(len(self.dropped), 'oldest offline ClearML session')}"
            f"{imported}; kept the newest {self.kept} (MLRIG_CLEARML_KEEP_SESSIONS; 0 keeps "
            "every one). To keep every session on a server, run mlrig clearml import "
            "(CLEARML_API_HOST and its keys set) before they reach the limit; mlrig clearml "
            "prune --keep N drops more by hand."
        )


def prune_sessions(settings: Settings, keep: int | None = None) -> Pruned:
    """Delete the offline sessions older than the newest `keep` (an imported one's server id
    stays in imported.json, so its link and values keep working).

    Args:
        keep: how many to keep (default MLRIG_CLEARML_KEEP_SESSIONS); 0 keeps every one.
    """
    keep = settings.clearml_keep_sessions if keep is None else keep
    sessions = list_sessions(settings)
    dropped = sessions[:-keep] if keep and len(sessions) > keep else []
    for session in dropped:
        Path(session.path).unlink(missing_ok=True)
    return Pruned(dropped=dropped, kept=min(keep, len(sessions)) if keep else len(sessions))


def import_sessions(settings: Settings) -> list[Session]:
    """Upload every session not yet imported; returns them with their new server task ids.

    Raises:
        ConfigError: no server configured, or the server refused the upload.
    """
    require_server(settings, IMPORT)
    check_server(settings)
    from clearml import Task

    from mlrig.tracking.step_run import configure_clearml

    configure_clearml(settings)
    Task.set_offline(offline_mode=False)
    sessions_dir = settings.clearml_sessions_dir
    imported = imported_index(sessions_dir)
    done = []
    for session in list_sessions(settings):
        if session.imported_as:
            continue
        try:
            task_id = Task.import_offline_session(session.path)
        except Exception as error:  # the SDK raises many types for network and auth errors
            raise ConfigError(
                f"ClearML at {settings.clearml_api_host} refused session {session.offline_id}: "
                f"{error}. Check CLEARML_API_HOST and the credentials; "
                f"{counted(len(done), 'session was', 'sessions were')} imported before this one."
            ) from None
        imported[session.offline_id] = str(task_id)
        (sessions_dir / IMPORTED_FILE).write_text(json.dumps(imported, indent=2) + "\n")
        done.append(session.model_copy(update={"imported_as": str(task_id)}))
    return done


def offline_single_values(sessions_dir: Path, task_id: str) -> dict[str, float] | None:
    """The single values an offline session recorded; None when no session of the task is here."""
    path = sessions_dir / f"{task_id}.zip"
    if not path.is_file():
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        lines = (
            archive.read("metrics.jsonl").decode().splitlines() if "metrics.jsonl" in names else []
        )
    events = [event for line in lines if line.strip() for event in json.loads(line)]
    return {
        event["variant"]: float(event["value"])
        for event in events
        if event.get("metric") == SINGLE_VALUES_METRIC
    }


def recorded_single_values(settings: Settings, task_id: str) -> dict[str, float] | None:
    """The single values ClearML holds for a task: from the server when one is configured (an
    offline session that was imported, under its new id), else from the offline session here.

    Returns None when they cannot be read here (a session recorded in another container, or a
    server that does not answer): the report says so rather than fail.
    """
    sessions_dir = settings.clearml_sessions_dir
    server_id = imported_index(sessions_dir).get(task_id, task_id)
    if settings.clearml_is_offline or server_id.startswith("offline-"):
        return offline_single_values(sessions_dir, task_id)
    from clearml import Task

    from mlrig.tracking.step_run import configure_clearml

    configure_clearml(settings)
    try:
        values = Task.get_task(task_id=server_id).get_reported_single_values()
    except Exception:  # the SDK raises many types for network and auth errors
        return None
    return {name: float(value) for name, value in values.items()}


def task_link(settings: Settings, task_id: str) -> str | None:
    """The task's page in the ClearML web UI, when a server's web host is configured."""
    server_id = imported_index(settings.clearml_sessions_dir).get(task_id, task_id)
    if not settings.clearml_web_host or server_id.startswith("offline-"):
        return None
    return f"{settings.clearml_web_host.rstrip('/')}/projects/*/experiments/{server_id}"
