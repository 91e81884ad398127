"""Lineage facts every run carries: git commit, DVC-style data hashes, pipeline run id."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records for that file in dvc.lock and its cache."""
    digest = hashlib.md5()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit(root: Path) -> str:
    """The checked-out commit, `-dirty` if tracked files but dvc.lock changed; else `unknown`."""
    try:
        commit = git_output(root, "rev-parse", "HEAD")
        dirty = git_dirty(root)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def code_commit(root: Path, inputs: list[str]) -> tuple[str, str | None]:
    """The newest commit that changed one of the pipeline's `inputs` (git pathspecs: its code,
    params and data, `mlrig.dvc.code_deps.pipeline_inputs`; a commit of docs, tests or the
    lock a run wrote changes none of them), `-dirty` when one of them has uncommitted changes,
    and its date in UTC; (`unknown`, None) outside a git checkout."""
    try:
        commit, _, timestamp = git_output(
            root, "log", "-1", "--format=%H %ct", "--", *inputs
        ).partition(" ")
        dirty = git_dirty(root, inputs)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    if not commit:
        return "unknown", None
    date = datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{commit}-dirty" if dirty else commit), date


#: every tracked file but dvc.lock, which the run itself rewrites: it does not make code dirty
ALL_BUT_THE_LOCK = (".", ":!dvc.lock")


def git_dirty(root: Path, pathspecs: Sequence[str] = ALL_BUT_THE_LOCK) -> bool:
    """True when tracked files under `pathspecs` have uncommitted changes."""
    return bool(git_output(root, "status", "--porcelain", "--untracked-files=no", "--", *pathspecs))


def git_output(root: Path, *arguments: str) -> str:
    """What a git command prints, stripped.

    Raises:
        OSError: git is not installed.
        subprocess.CalledProcessError: git failed (`root` is no checkout).
    """
    return subprocess.run(
        ["git", *arguments],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        # no index refresh: it takes .git/index.lock, which a `git add` beside it needs
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    ).stdout.strip()
