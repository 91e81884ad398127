"""Lineage facts every run carries: git commit, DVC-style data hashes, pipeline run id."""

from __future__ import annotations

import hashlib
import os
import subprocess
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
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # dvc.lock is rewritten by the run itself; it does not make the code dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            # no index refresh: it takes .git/index.lock, which a `git add` beside it needs
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
