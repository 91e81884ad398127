"""Outputs hashed again against dvc.lock (mlrig.dvc.integrity), in a throwaway DVC project: a bad
cache object is rewritten, pulled from the remote, or its stage made to run again."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlrig.dvc.integrity import repair, scan

STAGE = {
    "cmd": "python -c \"import pathlib; pathlib.Path('out').mkdir(exist_ok=True); "
    "pathlib.Path('out/a.txt').write_text('alpha' * 100)\"",
    "outs": ["out"],
}


def dvc(root: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC project whose one stage has run and pushed to a local remote."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": STAGE}}))
    dvc(root, "repro", "-q")
    dvc(root, "push", "-q")
    return root


def the_file(root: Path) -> tuple[Path, Path, str]:
    """The output file, its cache object, and the hash dvc.lock records for it."""
    md5 = hashlib.md5(("alpha" * 100).encode()).hexdigest()
    return root / "out/a.txt", root / ".dvc/cache/files/md5" / md5[:2] / md5[2:], md5


def rot(path: Path) -> None:
    """Bit rot: the same size, and a read-only cache file stays read-only."""
    mode = path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(b"rot" + path.read_bytes()[3:])
    path.chmod(mode)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_an_intact_project_has_nothing_to_repair(project: Path) -> None:
    assert scan(project) == ([], 1)  # the one file of the folder
    assert repair(project) == []


def test_a_rotten_cache_object_is_rewritten_from_the_intact_workspace_copy(
    project: Path,
) -> None:
    workspace, cache, md5 = the_file(project)
    rot(cache)
    assert "up to date" in dvc(project, "status")  # DVC trusts a read-only cache file

    (corrupted,), _ = scan(project)
    assert (corrupted.path, corrupted.where, corrupted.stage) == ("out/a.txt", "cache", "make")
    [fixed] = repair(project)

    assert fixed.describe() == (
        "the DVC cache's copy of out/a.txt (stage make) does not match its hash in dvc.lock: "
        "the cache was rewritten from the intact workspace copy"
    )
    assert md5_of(cache) == md5 and md5_of(workspace) == md5


def test_a_rotten_cache_object_checked_out_nowhere_is_pulled_from_the_remote(
    project: Path,
) -> None:
    workspace, cache, md5 = the_file(project)
    workspace.unlink()  # a fresh checkout: DVC would check the rotten object out
    rot(cache)

    [fixed] = repair(project)

    assert fixed.outcome == "pulled"
    assert md5_of(cache) == md5 and md5_of(workspace) == md5


def test_a_rotten_output_the_remote_lacks_makes_its_stage_run_again(
    project: Path, tmp_path: Path
) -> None:
    workspace, cache, md5 = the_file(project)
    rot(workspace)
    rot(cache)
    on_remote = tmp_path / "remote/files/md5" / md5[:2] / md5[2:]
    on_remote.unlink()  # the folder's listing stays on the remote

    outcomes = {(fixed.corrupted.where, fixed.outcome) for fixed in repair(project)}

    assert outcomes == {("cache", "rerun"), ("workspace", "rerun")}
    assert not workspace.exists() and not cache.exists()
    assert "make" in dvc(project, "status")
    dvc(project, "repro", "-q")
    assert md5_of(cache) == md5 and md5_of(workspace) == md5
    # DVC alone would take the folder as pushed, its listing being there, and leave the file out
    dvc(project, "push", "-q")
    assert md5_of(on_remote) == md5
