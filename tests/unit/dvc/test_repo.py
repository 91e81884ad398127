"""The checkout DVC works in (mlrig.dvc.repo), in a throwaway DVC project: the repository opened
from its root, what changed, a stage's outputs checked out from another cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlrig.dvc.repo import (
    changed_stages,
    check_out_stages,
    copy_cache_objects,
    is_stage_changed,
    local_cache_dir,
    open_repo,
)
from tests.support.dvc_project import dvc, make_dvc_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_dvc_project(tmp_path / "project")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mlrig started in another folder than the project's (its parent here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stages_are_named_as_dvc_yaml_names_them_wherever_mlrig_started(
    project: Path, elsewhere: Path
) -> None:
    with open_repo(project) as repo:
        assert Path.cwd() == project
        names = {stage.addressing for stage in repo.index.stages}
    assert names == {"raw.csv.dvc", "make", "use"}
    assert Path.cwd() == elsewhere  # the working directory is given back
    assert changed_stages(project) == ["make", "use"]  # not project/dvc.yaml:make


def test_one_stage_changed_is_told_apart_from_its_upstream(project: Path, elsewhere: Path) -> None:
    assert is_stage_changed(project, "make") and is_stage_changed(project, "use")
    dvc(project, "repro", "-q")
    assert changed_stages(project) == []
    assert not is_stage_changed(project, "use")

    (project / "data.txt").write_text("second version\n")  # a dep of make only
    assert is_stage_changed(project, "make")
    assert not is_stage_changed(project, "use")  # its own deps did not change
    assert changed_stages(project, "use") == ["make"]  # what `dvc repro use` would run


def test_a_stage_is_checked_out_from_another_cache(project: Path, tmp_path: Path) -> None:
    """As the containers executor takes a stage's outputs from its container's workspace."""
    dvc(project, "repro", "-q", "make")
    other_cache = tmp_path / "workspace-cache"
    shutil.copytree(project / ".dvc" / "cache", other_cache)
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "out")

    copy_cache_objects(other_cache, local_cache_dir(project))
    assert check_out_stages(project, ["make"]) == []

    assert (project / "out" / "a.txt").read_text() == "a,b\n1,2\n"
    assert (project / "out" / "b.txt").read_text() == "first version\n"
    assert "make" not in changed_stages(project)
    objects = [path for path in (project / ".dvc" / "cache").rglob("*") if path.is_file()]
    assert len(objects) >= 3  # the folder's listing and its two files, now in this cache


def test_a_stage_whose_objects_the_other_cache_lacks_is_not_checked_out(
    project: Path, tmp_path: Path
) -> None:
    dvc(project, "repro", "-q", "make")
    other_cache = tmp_path / "workspace-cache"
    shutil.copytree(project / ".dvc" / "cache", other_cache)
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "out")
    b_object = next(
        path
        for path in other_cache.rglob("*")
        if path.is_file() and path.read_bytes() == b"first version\n"
    )
    os.chmod(b_object, 0o644)
    b_object.unlink()

    copy_cache_objects(tmp_path / "no-such-cache", local_cache_dir(project))  # nothing to copy
    copy_cache_objects(other_cache, local_cache_dir(project))
    assert check_out_stages(project, ["make"]) == ["make"]  # the caller pulls instead
    assert not (project / "used.txt").exists()  # a stage not asked for is not checked out
