"""The checkout DVC works in: is it one, what changed, and who holds DVC's locks.

DVC takes one command at a time on a checkout; an orphan of a killed run can still hold its
lock, and a new run must say so in one line rather than die in DVC's `LockError`.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError


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
    from dvc.repo import Repo
    from dvc.scm import SCMError

    try:
        with Repo(str(root)):
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
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        if target is None:
            return list(repo.status())
        return list(repo.status(targets=[target], with_deps=True))
