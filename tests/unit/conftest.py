"""Fixtures of the unit tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.project import REPO_ROOT, TRACKING_VARIABLES


@pytest.fixture
def offline_clearml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ClearML offline, its home, cache and temporary files in tmp_path; the cache folder."""
    from clearml import Task

    # ClearML writes its own variables into os.environ (CLEARML_PROC_MASTER_ID, ...): a later
    # test's child process would take itself for a subprocess of this task and log nothing
    environment = dict(os.environ)
    for name in TRACKING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "clearml-cache"
    for folder in (tmp_path / "home", cache, tmp_path / "tmp"):
        folder.mkdir()
    # offline sessions write ~/.clearml/.session.json whatever CLEARML_CACHE_DIR says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(cache))
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(REPO_ROOT / "src/mlrig/clearml-offline.conf"))
    # ClearML reads CLEARML_OFFLINE_MODE once, when first imported (maybe by another test). It
    # stays offline after the test: going online again connects every session to a server.
    Task.set_offline(offline_mode=True)
    yield cache
    os.environ.clear()
    os.environ.update(environment)
