"""A new step is one command: `make step NAME=...`, then the pipeline takes it with no other edit.

In a scratch copy of the repository the scaffold adds `featurize` (its folder, its params
section, its stage, its dependency group and its image in the build matrix); `mlrig run` runs
it, checks its params section, re-runs it alone when its params change, and the ClearML
pipeline compiles it as a step in its own image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlrig.errors import EXIT_BAD_INPUT
from tests.support.project import FEW_EXPERIMENTS, clean_environment, copy_repository, run_mlrig

pytestmark = pytest.mark.e2e

STEP = "featurize"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy with the step scaffolded, as `make step NAME=featurize` leaves it."""
    root = tmp_path_factory.mktemp("new-step")
    copy_repository(root, FEW_EXPERIMENTS)
    scaffolded = subprocess.run(
        [sys.executable, "-m", "mlrig.scaffold", STEP],
        cwd=root,
        env=clean_environment(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict:
    result = run_mlrig("run", "--no-push", "--json", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_the_pipeline_runs_the_new_step(project: Path, first_run: dict) -> None:
    assert STEP in first_run["stages_run"]
    copied = project / "outputs" / STEP / "table.parquet"
    assert copied.read_bytes() == (project / "outputs/ingest/table.parquet").read_bytes()
    assert first_run["champion"] is not None  # the rest of the pipeline ran as before


def test_a_change_of_its_params_re_runs_it_alone(project: Path, first_run: dict) -> None:
    result = run_mlrig("run", "--no-push", "--json", "-S", f"{STEP}.file_name=copy.parquet",
                       cwd=project)  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["stages_run"] == [STEP]
    assert (project / "outputs" / STEP / "copy.parquet").is_file()


def test_its_params_section_is_checked_before_anything_runs(project: Path, first_run: dict) -> None:
    params = (project / "params.yaml").read_bytes()

    result = run_mlrig("run", "--no-push", "-S", f"{STEP}.file_nme=x", cwd=project)

    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert f"{STEP}.file_nme" in result.stderr
    assert f"did you mean {STEP}.file_name?" in result.stderr
    assert "Traceback" not in result.stderr
    assert (project / "params.yaml").read_bytes() == params


def test_the_clearml_pipeline_runs_it_in_its_own_image(project: Path) -> None:
    # no container engine needed: the references are computed from the sources
    result = run_mlrig("clearml", "pipeline", "--dry-run", "--json", cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    steps = {step["name"]: step for step in json.loads(result.stdout)["steps"]}
    assert steps[STEP]["step"] == STEP
    assert f"/{STEP}:" in steps[STEP]["image"]
    assert steps[STEP]["parents"] == ["ingest"]
