"""The committed dvc.lock is the one a fresh clone's first `mlrig run` writes: it records the
code, params and data as committed, so that run leaves no modified, staged dvc.lock behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.project import clean_environment, copy_repository


def test_the_committed_lock_matches_the_committed_inputs(tmp_path: Path) -> None:
    copy_repository(tmp_path)
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=tmp_path,
        env=clean_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr
    # a fresh clone has no outputs (they are in the DVC remote): only its inputs must match
    changed_inputs = {
        f"{stage}: {path}": state
        for stage, changes in json.loads(status.stdout).items()
        for change in changes
        if isinstance(change, dict)
        for kind in ("changed deps", "changed params")
        for path, state in change.get(kind, {}).items()
        if state != "deleted"
    }
    assert changed_inputs == {}, f"dvc.lock is stale: {changed_inputs}; commit a fresh run's"
