"""A stage's inputs pulled into a fresh workspace (mlrig.dvc.outputs), in a throwaway DVC project
whose stages ran and pushed to a local remote: exactly the outputs the stage reads come back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlrig.dvc.outputs import pull_stage_inputs
from mlrig.dvc.stages import stage_inputs
from mlrig.errors import ConfigError


def writes(*files: str) -> str:
    """A stage command writing each file (`folder/name`) with its own name as content."""
    lines = "; ".join(
        f"p = pathlib.Path({name!r}); p.parent.mkdir(parents=True, exist_ok=True); "
        f"p.write_text({name!r})"
        for name in files
    )
    return f'python -c "import pathlib; {lines}"'


STAGES = {
    "tables": {"cmd": writes("tables/a.txt", "tables/b.txt"), "outs": ["tables"]},
    "model": {
        "cmd": writes("models/one/m.txt"),
        "deps": ["tables"],
        "outs": ["models/one"],
    },
    "score": {
        "cmd": writes("score.txt"),
        "deps": ["tables/a.txt", "models"],
        "outs": ["score.txt"],
    },
    "other": {"cmd": writes("other.txt"), "outs": ["other.txt"]},
}


def dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return tmp_path / "remote"


@pytest.fixture
def workspace(tmp_path: Path, remote: Path) -> Path:
    """The project's files, no data, as a stage container gets them; the stages ran and pushed."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}))
    dvc(root, "repro", "-q")
    dvc(root, "remote", "add", "-d", "shared", str(remote))
    dvc(root, "push", "-q")
    fresh = tmp_path / "workspace"
    fresh.mkdir()
    for name in ("dvc.yaml", "dvc.lock", ".dvc/config"):
        (fresh / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, fresh / name)
    dvc(fresh, "config", "--local", "core.no_scm", "true")
    return fresh


def test_a_stage_gets_the_outputs_it_reads_and_no_other(workspace: Path) -> None:
    assert stage_inputs(workspace, "score") == ["models/one", "tables"]

    assert pull_stage_inputs(workspace, "score", "shared") == []

    assert (workspace / "tables/b.txt").read_text() == "tables/b.txt"
    assert (workspace / "models/one/m.txt").read_text() == "models/one/m.txt"
    assert not (workspace / "other.txt").exists() and not (workspace / "score.txt").exists()
    assert pull_stage_inputs(workspace, "tables", "shared") == []


def test_what_the_remote_lacks_is_named_not_checked_out(workspace: Path, remote: Path) -> None:
    files = [path for path in remote.rglob("*") if path.is_file()]
    tables_file = next(path for path in files if path.read_bytes() == b"tables/a.txt")
    tables_file.unlink()  # one file of the tables folder is lost; the models are all there

    assert pull_stage_inputs(workspace, "score", "shared") == ["tables"]
    assert not (workspace / "tables/a.txt").exists()
    assert (workspace / "models/one/m.txt").is_file()


def test_an_unknown_stage_is_named_with_the_stages_there_are(workspace: Path) -> None:
    with pytest.raises(ConfigError, match=r"no stage 'scores'\. Its stages: model, other, score"):
        pull_stage_inputs(workspace, "scores", "shared")
