"""Which DVC data version holds a file of a given hash, and that version's files.

A model's lineage names the MD5 of the file it was trained on (the `mlrig.data.md5` tag), not the
dvc.lock that recorded it: a run writes dvc.lock after the commit it ran at, so the version is in
the workspace's dvc.lock or in the dvc.lock of a later commit. DVC's own file system
(`dvc.api.DVCFileSystem`) reads a path as any revision's dvc.lock records it, from the DVC cache
or, when the cache lacks it, from the DVC remote.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrig.errors import DataError

if TYPE_CHECKING:
    from dvc.api import DVCFileSystem

LOCK_FILE = "dvc.lock"
#: how many commits that changed dvc.lock are looked through, newest first
MAX_LOCK_REVISIONS = 200
#: the name the workspace's data version is shown under
WORKSPACE = "the workspace"


@dataclass(frozen=True)
class DataVersion:
    """A DVC-tracked file at the version a revision's dvc.lock records."""

    root: Path
    rev: str | None  # the commit whose dvc.lock records it; None: the workspace's dvc.lock
    path: str  # relative to the project, e.g. outputs/split/train.parquet
    md5: str

    @property
    def where(self) -> str:
        """`the workspace`, or `commit <short sha>`."""
        return WORKSPACE if self.rev is None else f"commit {self.rev[:12]}"


def lock_revisions(root: Path, limit: int = MAX_LOCK_REVISIONS) -> list[str]:
    """The commits that changed dvc.lock, newest first (none outside a git checkout)."""
    try:
        log = subprocess.run(
            ["git", "log", f"-n{limit}", "--format=%H", "--", LOCK_FILE],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return log.stdout.split()


def dvc_fs(root: Path, rev: str | None) -> DVCFileSystem:
    """DVC's file system of the project at a commit (None: the workspace)."""
    from dvc.api import DVCFileSystem

    return DVCFileSystem(str(root), rev=rev)


def recorded_md5(info: dict[str, Any]) -> str | None:
    """The MD5 a DVC file system entry's dvc.lock records (None: no DVC-tracked file)."""
    dvc_info = info.get("dvc_info") or {}
    md5 = dvc_info.get("md5") or info.get("md5")
    return str(md5) if md5 else None


def version_md5(root: Path, rev: str | None, path: str) -> str | None:
    """The MD5 a revision's dvc.lock records for `path` (None: it records none)."""
    from dvc.exceptions import DvcException

    try:
        return recorded_md5(dvc_fs(root, rev).info(path))
    except (DvcException, OSError, KeyError, ValueError):
        return None  # no such file in that revision, or its listing is nowhere to be read


def find_data_version(root: Path, path: str, md5: str) -> DataVersion | None:
    """The newest data version whose `path` has this MD5: the workspace's dvc.lock first, then
    that of each commit that changed dvc.lock, newest first; None when none has it."""
    for rev in [None, *lock_revisions(root)]:
        if version_md5(root, rev, path) == md5:
            return DataVersion(root=root, rev=rev, path=path, md5=md5)
    return None


def fetch_version_file(version: DataVersion, path: str, destination: Path) -> Path:
    """Copy a file of the version's revision (`path`, e.g. a sibling of `version.path`) to
    `destination`, from the DVC cache or remote.

    Raises:
        DataError: neither the cache nor the remote holds it.
    """
    from dvc.exceptions import DvcException

    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        dvc_fs(version.root, version.rev).get_file(path, str(destination))
    except (DvcException, OSError) as error:
        raise DataError(
            f"{path} as {LOCK_FILE} of {version.where} records it is neither in the DVC cache "
            f"nor on the DVC remote ({error}). Pull it (dvc pull) where it was made, or push it "
            "from there (dvc push)."
        ) from None
    return destination
