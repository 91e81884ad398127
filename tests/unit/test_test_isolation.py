"""A test worker runs many test files in one process: what one test sets as MLflow's store must
not decide which store a later one reads (issue 19: the serving test compared the container
with a register step test's model of the same name and version, and 1 of 143 labels differed;
the serving checks are in tests/chart/test_kube_play.py now)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.project import REPO_ROOT

#: as the register step's tests do (the real setup_mlflow on a throwaway project), then as the
#: serving test did: name another store by the variable, and read the registry
TWO_FILES_IN_ONE_WORKER = {
    "steps/register/tests/test_register.py": """
from mlrig.tracking.step_run import setup_mlflow


def test_a_step_test_opens_its_own_store(project_settings):
    setup_mlflow(project_settings)
""",
    "tests/chart/test_kube_play.py": """
import mlflow
from mlflow import MlflowClient


def test_the_next_file_reads_the_store_it_names(tmp_path, monkeypatch):
    stack = f"sqlite:///{tmp_path / 'stack.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack)
    assert mlflow.get_tracking_uri() == stack
    assert mlflow.get_registry_uri() == stack
    assert MlflowClient().tracking_uri == stack
""",
}


def test_a_store_one_test_sets_is_not_the_next_files(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "conftest.py", tmp_path / "conftest.py")
    for path, body in TWO_FILES_IN_ONE_WORKER.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *TWO_FILES_IN_ONE_WORKER],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
