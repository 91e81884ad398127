"""Outputs whose content no longer matches the hash dvc.lock records for them.

DVC trusts its cache: a cache file is made read-only when written and never hashed again, and a
workspace file is hashed again only when its size, mtime or inode change. A corrupted cache
object is then checked out, and a corrupted output reported up to date. Before a run, every file
of every output in dvc.lock is hashed again here, from the cache and from the workspace, with
DVC's own hash function. A bad cache object is rewritten from an intact workspace copy, or else
removed together with the workspace copy; a removed output is pulled from the DVC remote when
it holds it, and otherwise its stage runs again, since DVC then finds the output missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mlrig.dvc.repo import open_repo
from mlrig.settings import Settings

LOCK_FILE = "dvc.lock"

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc_data.hashfile.db import HashFileDB


@dataclass(frozen=True)
class Corrupted:
    """One file of an output whose copy in the cache or the workspace fails its hash."""

    stage: str
    output: str  # the output as dvc.yaml names it, e.g. outputs/train/knn
    output_oid: str  # the output's hash in dvc.lock (a directory's ends in .dir)
    path: str  # the file, relative to the project
    where: Literal["cache", "workspace"]
    oid: str  # the hash dvc.lock records (a directory's listing ends in .dir)
    hash_name: str
    cache_path: str

    def describe(self) -> str:
        copy = "the DVC cache's copy of " if self.where == "cache" else ""
        return f"{copy}{self.path} (stage {self.stage}) does not match its hash in dvc.lock"


Outcome = Literal["recached", "checked out", "pulled", "rerun"]


@dataclass(frozen=True)
class Repair:
    """What was done about one corrupted file, for the run's summary."""

    corrupted: Corrupted
    outcome: Outcome

    def describe(self) -> str:
        done = {
            "recached": "the cache was rewritten from the intact workspace copy",
            "checked out": "restored from the intact copy in the DVC cache",
            "pulled": "restored from the DVC remote",
            "rerun": "removed, so the stage runs again",
        }[self.outcome]
        return f"{self.corrupted.describe()}: {done}"


def content_hash(path: str, hash_name: str) -> str | None:
    """The DVC hash of a local file's bytes (no state database), or None when it is absent."""
    from dvc_data.hashfile.hash import file_md5

    try:
        return file_md5(path, name=hash_name)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class LockedOutput:
    """One cached output as dvc.lock records it."""

    stage: str
    path: str
    oid: str
    hash_name: str  # md5, or md5-dos2unix for an output DVC 2 recorded


def locked_outputs(root: Path) -> list[LockedOutput]:
    """Every output of dvc.lock with a hash (read as YAML: DVC's own loader takes seconds)."""
    import yaml

    lock_path = root / LOCK_FILE
    if not lock_path.is_file():
        return []
    with lock_path.open() as stream:
        lock = yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    return [
        LockedOutput(
            stage=stage,
            path=out["path"],
            oid=out["md5"],
            hash_name=out.get("hash", "md5-dos2unix"),
        )
        for stage, entry in (lock.get("stages") or {}).items()
        for out in entry.get("outs") or []
        if out.get("md5")
    ]


def output_files(root: Path, out: LockedOutput, odb: HashFileDB) -> Iterator[tuple[str, str]]:
    """Each file of an output as (path relative to root, expected hash).

    A directory output whose .dir listing in the cache is corrupted yields the listing alone
    (as the output's path), so the whole output counts as corrupted; one whose listing is not
    in the cache yields nothing (DVC pulls or re-runs it like any missing output).
    """
    if not out.oid.endswith(".dir"):
        yield out.path, out.oid
        return
    listing = odb.oid_to_path(out.oid)
    try:
        entries = json.loads(Path(listing).read_bytes())
    except FileNotFoundError:
        return
    except ValueError:
        entries = None
    if entries is None or content_hash(listing, "md5") != out.oid.removesuffix(".dir"):
        yield out.path, out.oid
        return
    for entry in entries:
        yield f"{out.path}/{entry['relpath']}", entry[out.hash_name.split("-")[0]]


def find_corrupted(repo: Repo) -> list[Corrupted]:
    """Every file of the cached outputs whose cache or workspace bytes fail their hash."""
    return hash_check(repo)[0]


def hash_check(repo: Repo) -> tuple[list[Corrupted], int]:
    """The corrupted files of the cached outputs, and how many files were hashed again."""
    root = Path(repo.root_dir)
    found = []
    files = 0
    for out in locked_outputs(root):
        odb = repo.cache.legacy if out.hash_name == "md5-dos2unix" else repo.cache.local
        for path, oid in output_files(root, out, odb):
            files += 1
            listing = oid.endswith(".dir")
            cache_path = odb.oid_to_path(oid)
            places: list[tuple[Literal["cache", "workspace"], str]] = [("cache", cache_path)]
            if not listing:
                places.append(("workspace", str(root / path)))
            for where, place in places:
                actual = content_hash(place, "md5" if listing else out.hash_name)
                if actual is not None and actual != oid.removesuffix(".dir"):
                    found.append(
                        Corrupted(
                            stage=out.stage,
                            output=out.path,
                            output_oid=out.oid,
                            path=path,
                            where=where,
                            oid=oid,
                            hash_name=out.hash_name,
                            cache_path=cache_path,
                        )
                    )
    return found, files


def scan(root: Path) -> tuple[list[Corrupted], int]:
    """`hash_check` of the project at `root`, for `mlrig doctor`."""
    with open_repo(root) as repo:
        return hash_check(repo)


def remove(path: Path | str) -> None:
    """Delete a file (read-only in the cache) or a folder; nothing when it is absent."""
    if os.path.isdir(path):
        shutil.rmtree(path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o644)  # DVC makes cache files read-only
        os.unlink(path)


def restore(repo: Repo, outputs: dict[str, str], remote: str | None, *, pull: bool) -> set[str]:
    """Check out (or pull, then check out) each output (path: hash); returns those that came back.

    A directory the remote holds only in part is forgotten there (see forget_partial_listing).
    """
    from dvc.exceptions import DvcException

    restored = set()
    for output, oid in sorted(outputs.items()):
        try:
            if pull:
                repo.pull(targets=[output], remote=remote)
            else:
                repo.checkout(targets=[output])
        except DvcException:
            # not in the cache, or not on the remote: its stage runs again
            if pull and oid.endswith(".dir"):
                forget_partial_listing(repo, oid, remote)
            continue
        restored.add(output)
    return restored


def forget_partial_listing(repo: Repo, oid: str, remote: str | None) -> None:
    """Remove a directory's listing from a remote that lacks some of its files.

    DVC's push takes a directory whose listing the remote holds as whole (and remembers it so
    in its remote index): the stage that runs again would be pushed without the lost files,
    for good. With the listing gone, the next push checks and uploads the directory file by
    file, then writes the listing again.
    """
    from dvc.exceptions import DvcException
    from dvc_data.hashfile.db import get_index

    try:
        odb = repo.cloud.get_remote_odb(remote, "pull")
        if odb.exists(oid):
            odb.fs.rm(odb.oid_to_path(oid))
        get_index(odb).clear()
    except (DvcException, OSError):
        pass  # no remote, or one not reached: the push that follows the run says so


def set_aside(repo: Repo, entry: Corrupted, corrupted: list[Corrupted]) -> Outcome:
    """Remove what is corrupted, keep what is intact; returns how the file is to come back."""
    from dvc_objects.fs import localfs

    workspace_file = Path(repo.root_dir) / entry.path
    bad_elsewhere = any(
        other.path == entry.path and other.where != entry.where for other in corrupted
    )
    if entry.where == "cache":
        remove(entry.cache_path)
        if not bad_elsewhere and workspace_file.is_file():
            # the workspace holds the right bytes: they go back into the cache
            odb = repo.cache.legacy if entry.hash_name == "md5-dos2unix" else repo.cache.local
            odb.add(str(workspace_file), localfs, entry.oid)
            return "recached"
    elif not bad_elsewhere and os.path.isfile(entry.cache_path):
        remove(workspace_file)
        return "checked out"
    remove(workspace_file)  # a corrupted .dir listing takes its whole output folder
    return "pulled"


def repair(root: Path, remote: str | None = None) -> list[Repair]:
    """Find the corrupted files of the outputs and put each right, or make its stage re-run.

    Args:
        root: the project folder.
        remote: the DVC remote to pull from (None: the default remote).

    Returns:
        What was done, one entry per corrupted file (empty when everything matched).
    """
    with open_repo(root) as repo:
        corrupted = find_corrupted(repo)
        if not corrupted:
            return []
        planned = {entry: set_aside(repo, entry, corrupted) for entry in corrupted}

        def outputs(outcome: Outcome) -> dict[str, str]:
            return {
                entry.output: entry.output_oid
                for entry, planned_as in planned.items()
                if planned_as == outcome
            }

        back = restore(repo, outputs("checked out"), remote, pull=False)
        back |= restore(repo, outputs("pulled"), remote, pull=True)
        still_bad = set()
        for entry in find_corrupted(repo):  # the remote's copy was no better
            still_bad.add(entry.path)
            remove(entry.cache_path if entry.where == "cache" else root / entry.path)
    return [
        Repair(
            corrupted=entry,
            outcome=outcome
            if outcome == "recached" or (entry.output in back and entry.path not in still_bad)
            else "rerun",
        )
        for entry, outcome in planned.items()
    ]


def repair_outputs(settings: Settings) -> list[str]:
    """`repair` of the project's outputs before a run, from MLRIG_DVC_REMOTE or the default.

    Returns:
        One line per corrupted file saying what was done (empty when all matched).
    """
    return [fixed.describe() for fixed in repair(settings.root, settings.dvc_remote)]
