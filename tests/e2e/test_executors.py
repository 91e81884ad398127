"""The executor seam: every executor of `mlrig run --executor` plans the same DAG, dvc.yaml's,
and runs it under the same checks. Local runs here; ClearML's plan is compiled offline (no
server); the containers executor is checked on the stack (tests/containers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig.dvc.dag import stage_graph
from mlrig.errors import EXIT_BAD_INPUT
from mlrig.executors.registry import EXECUTORS
from mlrig.settings import Settings
from tests.support.executors import assert_runs_its_plan
from tests.support.project import FEW_EXPERIMENTS, copy_repository, run_mlrig

pytestmark = pytest.mark.e2e

#: the executors whose plan needs a running stack (checked in tests/containers)
ON_THE_STACK = {"containers"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("executors")
    copy_repository(root, FEW_EXPERIMENTS)
    return root


@pytest.mark.parametrize("name", sorted(set(EXECUTORS) - ON_THE_STACK))
def test_each_executor_plans_dvc_yamls_dag(project: Path, name: str) -> None:
    plan = EXECUTORS[name].load(Settings(project_dir=project)).plan()

    assert plan == stage_graph(project)
    assert {"ingest", "train@knn", "train@linear_c0_1", "report"} <= set(plan)


def test_every_executor_is_a_choice_of_mlrig_run(project: Path) -> None:
    result = run_mlrig("run", "--executor", "nowhere", cwd=project)

    assert result.returncode == EXIT_BAD_INPUT
    for name in EXECUTORS:
        assert f"'{name}'" in result.stderr


def test_the_local_executor_runs_its_plan(project: Path) -> None:
    plan = EXECUTORS["local"].load(Settings(project_dir=project)).plan()

    result = run_mlrig("run", "--no-push", "--json", cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_runs_its_plan(plan, stage_graph(project), json.loads(result.stdout)["stages_run"])


def test_a_clearml_submission_is_refused_by_the_same_checks_as_a_run(project: Path) -> None:
    """Bad data stops `mlrig run --executor clearml` before anything is uploaded or enqueued,
    as it stops a local run: the same params check and preflight."""
    params = project / "params.yaml"
    committed = params.read_text()
    params.write_text(committed.replace("builtin:breast_cancer", "data/missing.csv"))
    try:
        results = [
            run_mlrig(*arguments, cwd=project, CLEARML_API_HOST="http://127.0.0.1:9",
                      CLEARML_API_ACCESS_KEY="k", CLEARML_API_SECRET_KEY="s")
            for arguments in (("run",), ("run", "--executor", "clearml"))
        ]  # fmt: skip
    finally:
        params.write_text(committed)

    for result in results:
        assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
        assert "data/missing.csv" in result.stderr and "Traceback" not in result.stderr
    assert results[0].stderr.splitlines()[-1] == results[1].stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("tracking", "named"),
    [
        ({}, "MLFLOW_TRACKING_URI is not set (runs go to a store on this machine)"),
        ({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, "is sqlite:///mlflow.db, a store on"),
        (
            {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
            "MLflow at http://127.0.0.1:9 refused",
        ),
    ],
)
def test_a_clearml_submission_needs_the_mlflow_server_its_pods_log_to(
    project: Path, tracking: dict[str, str], named: str
) -> None:
    """The submission opens the steps' parent run there: a store on this machine, or a server
    that does not answer, is refused after the params check, before anything is uploaded."""
    result = run_mlrig(
        "run", "--executor", "clearml", cwd=project, CLEARML_API_HOST="http://127.0.0.1:9",
        CLEARML_API_ACCESS_KEY="k", CLEARML_API_SECRET_KEY="s", **tracking,
    )  # fmt: skip

    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not (project / ".mlrig" / "clearml" / "submit").exists()
