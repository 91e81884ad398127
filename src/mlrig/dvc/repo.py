"""The checkout DVC works in: the one place mlrig opens DVC's repository (`open_repo`), and what
is asked of it: is it a checkout, what changed, a stage's outputs checked out, who holds its locks.

DVC takes one command at a time on a checkout; an orphan of a killed run can still hold its
lock, and a new run must say so in one line rather than die in DVC's `LockError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError

if TYPE_CHECKING:  # DVC loads inside functions, so `mlrig --help` stays fast
    from dvc.repo import Repo


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Repo]:
    """DVC's repository at `root`, opened from `root`: the working directory is `root` meanwhile.

    DVC names stages relative to the working directory, so from the root they are named as
    dvc.yaml names them (`train@knn`), wherever mlrig was started. The working directory is
    the process's: threads that open a repository hold one lock.

    Raises:
        dvc.exceptions.NotDvcRepoError, dvc.scm.SCMError: `root` is no DVC checkout
            (`require_checkout` says so in one line).
    """
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        yield repo


def dvc_lock_holders(root: Path) -> list[int]:
    """The live processes holding this checkout's DVC locks (.dvc/tmp/lock, .dvc/tmp/rwlock)."""
    import psutil

    tmp = root / ".dvc" / "tmp"
    holders: set[int] = set()
    lock_path = tmp / "lock"
    if lock_path.exists():
        with lock_path.open("a+") as lock:  # DVC's zc.lockfile: flock, and the holder's pid
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                lock.seek(0)
                holders.update(int(word) for word in lock.read().split() if word.isdigit())
    try:
        rwlock = json.loads((tmp / "rwlock").read_text())
    except (OSError, ValueError):
        rwlock = {}
    infos = [*rwlock.get("write", {}).values()]
    infos += [info for readers in rwlock.get("read", {}).values() for info in readers]
    holders.update(info["pid"] for info in infos if isinstance(info.get("pid"), int))
    return sorted(pid for pid in holders if pid != os.getpid() and psutil.pid_exists(pid))


def require_dvc_unlocked(root: Path) -> None:
    """Refuse to start while another process (an orphan of a killed run) holds DVC's lock.

    Raises:
        MlrigError: one line naming the processes and how to stop them.
    """
    import psutil

    holders = dvc_lock_holders(root)
    if not holders:
        return
    described = []
    for pid in holders:
        try:
            command = " ".join(" ".join(psutil.Process(pid).cmdline()).split())  # one line
        except psutil.Error:
            command = "?"
        described.append(f"pid {pid} ({command[:80]})")
    raise MlrigError(
        f"DVC's lock in {root} is held by {', '.join(described)}, left by an earlier run or "
        f"another dvc command; nothing was changed: wait for it to end or stop it "
        f"(kill {' '.join(map(str, holders))}), then run again.",
        exit_code=EXIT_FAILED,
    )


def require_checkout(root: Path) -> None:
    """Refuse a folder DVC cannot work in: not a git checkout, or no .dvc folder.

    Raises:
        ConfigError: naming what is missing and how to get it.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.scm import SCMError

    try:
        with open_repo(root):
            pass
    except SCMError:
        raise ConfigError(
            f"{root} is not a git repository, and DVC versions the pipeline with git. Work in "
            "a clone of the project, or make this folder one: git init && git add -A && "
            "git commit -m init"
        ) from None
    except NotDvcRepoError:
        raise ConfigError(
            f"{root} has a dvc.yaml but no .dvc folder. Work in a clone of the project, or "
            "run: dvc init"
        ) from None


def changed_stages(root: Path, target: str | None = None) -> list[str]:
    """Stages `dvc repro [target]` would run (empty when they are up to date).

    Args:
        target: a stage: only it and the stages it depends on are checked.
    """
    with open_repo(root) as repo:
        if target is None:
            return list(repo.status())
        return list(repo.status(targets=[target], with_deps=True))


def is_stage_changed(root: Path, stage: str) -> bool:
    """Whether DVC finds this one stage changed (its deps, params, command or outputs), the
    stages before it not looked at."""
    with open_repo(root) as repo:
        return bool(repo.status(targets=[stage]))


def local_cache_dir(root: Path) -> Path:
    """The folder of the project's DVC cache (above files/md5 and runs)."""
    with open_repo(root) as repo:
        return Path(repo.cache.local_cache_dir)


def copy_cache_objects(cache: Path, destination: Path) -> None:
    """Copy the objects of a DVC cache (a stage workspace's) that the cache `destination`
    lacks (`local_cache_dir`)."""
    for source in cache.rglob("*") if cache.is_dir() else []:
        target = destination / source.relative_to(cache)
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def check_out_stages(root: Path, stages: Iterable[str]) -> list[str]:
    """Check out the outputs of `stages` from the project's cache, reading dvc.yaml and
    dvc.lock once for all of them (`dvc checkout` reads both again for every target).

    Returns:
        The stages whose outputs could not all be checked out (an object not in the cache):
        pull those instead.
    """
    from dvc.exceptions import DvcException

    wanted = set(stages)
    failed: set[str] = set()
    with open_repo(root) as repo, repo.lock:
        for out in repo.index.outs:
            stage = out.stage.addressing
            if stage not in wanted or not out.use_cache:
                continue
            try:
                out.checkout()
            except (DvcException, OSError):  # OSError: a file's object is missing
                failed.add(stage)
    return sorted(failed)
