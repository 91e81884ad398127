"""What DVC knows of each stage (mlrig.dvc.stages), in a throwaway DVC project: the inputs a stage
workspace pulls, and the facts a compiled pipeline keys its steps on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlrig.dvc.stages import overlaps, read_pipeline, stage_inputs
from mlrig.errors import ConfigError
from tests.support.dvc_project import STAGES, dvc, make_dvc_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # mlrig started outside the project
    return make_dvc_project(tmp_path / "project")


def test_a_stage_pulls_the_outputs_and_tracked_files_it_reads(project: Path) -> None:
    assert stage_inputs(project, "make") == ["raw.csv"]  # dvc add-ed; data.txt is git's
    assert stage_inputs(project, "use") == ["out"]  # the output folder its file lies in


def test_an_unknown_stage_is_named_with_the_stages_there_are(project: Path) -> None:
    with pytest.raises(ConfigError) as error:
        stage_inputs(project, "train@knn")
    assert str(error.value) == (
        "dvc.yaml has no stage 'train@knn'. Its stages: make, raw.csv.dvc, use."
    )


def test_paths_overlap_when_one_lies_in_the_other() -> None:
    assert overlaps("out", "out/a.txt") and overlaps("out/a.txt", "out")
    assert overlaps("out", "out")
    assert not overlaps("out", "outputs/a.txt")


def test_each_stage_has_its_deps_hashes_params_and_outs(project: Path) -> None:
    graph, facts = read_pipeline(project)
    assert graph == {"raw.csv.dvc": set(), "make": {"raw.csv.dvc"}, "use": {"make"}}
    assert facts["make"].outs == ["out"] and facts["use"].outs == ["used.txt"]
    assert facts["use"].params == {"use.size": 3}
    assert facts["use"].deps == {"out/a.txt": None}  # not made yet, not in dvc.lock
    first = facts["make"].deps
    assert set(first) == {"raw.csv", "data.txt"}
    assert all(value and value.startswith("md5:") for value in first.values())

    dvc(project, "repro", "-q")
    (project / "data.txt").write_text("second version\n")
    _, facts = read_pipeline(project)
    assert facts["make"].deps["raw.csv"] == first["raw.csv"]
    assert facts["make"].deps["data.txt"] != first["data.txt"]  # the workspace's hash
    assert (facts["use"].deps["out/a.txt"] or "").startswith("md5:")


def test_a_param_the_params_file_lacks_is_named(project: Path) -> None:
    stages = STAGES | {"use": STAGES["use"] | {"params": ["use.size", "use.depth"]}}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    with pytest.raises(ConfigError, match=r"Stage 'use' reads param\(s\) use.depth that params"):
        read_pipeline(project)


def test_a_dvc_yaml_dvc_cannot_read_is_named(project: Path) -> None:
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {"cmd": 3}}}))
    with pytest.raises(ConfigError, match=r"DVC cannot read the pipeline in .*Fix dvc\.yaml"):
        read_pipeline(project)


def test_a_deps_hash_does_not_change_when_dvc_lock_records_it(project: Path) -> None:
    """DVC names the hash of a dep dvc.lock lacks `md5-dos2unix` and `md5` once the lock has it:
    a compiled step's key must not change with that (a ClearML submission after a pipeline ran
    found none of the records it had made)."""
    dvc(project, "repro", "-q")
    (project / "extra.txt").write_text("a new dep\n")
    make = STAGES["make"] | {"deps": [*STAGES["make"]["deps"], "extra.txt"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES | {"make": make}}))
    _, before = read_pipeline(project)
    dvc(project, "repro", "-q")
    _, after = read_pipeline(project)
    assert before["make"].deps == after["make"].deps
