"""The whole pipeline, stage by stage in the step images, against the real local stack.

Data moves between containers only through the S3 remote, results only through the MLflow
server. The result must match a local run of the same commit and params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrig.dvc.dag import stage_graph
from mlrig.images.build import ImageBuild
from mlrig.images.engine import Engine
from tests.support.executors import assert_runs_its_plan
from tests.support.project import FEW_EXPERIMENTS, REPO_ROOT, clean_environment, copy_repository
from tests.support.stack import Stack, start_stack

pytestmark = [pytest.mark.containers, pytest.mark.integration]


@pytest.fixture(scope="module")
def stack(step_images: tuple[Engine, list[ImageBuild]]) -> Iterator[Stack]:
    yield from start_stack()


def path_without_uv(path: str) -> str:
    """PATH with every folder that holds a uv binary left out (the venv's bin folder too)."""
    folders = path.split(os.pathsep)
    return os.pathsep.join(folder for folder in folders if not (Path(folder) / "uv").exists())


@pytest.fixture(scope="module")
def container_run(stack: Stack) -> dict:
    # as a user calls it: the venv's own `mlrig` script, the venv not activated, no uv on PATH
    venv_mlrig = Path(sys.executable).parent / "mlrig"
    result = subprocess.run(
        [str(venv_mlrig), "run", "--stack", "local", "--executor", "containers", "--json"],
        cwd=stack.root,
        env=stack.env | {"PATH": path_without_uv(stack.env["PATH"])},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def local_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same commit and params run locally (dvc repro here, the embedded MLflow store)."""
    root = tmp_path_factory.mktemp("local-run")
    copy_repository(root, FEW_EXPERIMENTS)
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run", "--no-push"],
        cwd=root,
        env=clean_environment(root),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "outputs"


#: the containers executor's plan, as `mlrig run --stack local --executor containers` makes it
PLAN_SCRIPT = """
import json, os
from mlrig.executors.registry import EXECUTORS
from mlrig.settings import load_settings
from mlrig.stacks.local.manager import load_stack_environment
os.environ.update(load_stack_environment(load_settings()))
plan = EXECUTORS["containers"].load(load_settings()).plan()
print(json.dumps({stage: sorted(parents) for stage, parents in plan.items()}))
"""


def test_the_containers_executor_runs_its_plan(stack: Stack, container_run: dict) -> None:
    """The executor contract (tests/e2e/test_executors.py) for the containers executor."""
    result = subprocess.run(
        [sys.executable, "-c", PLAN_SCRIPT],
        cwd=stack.root,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    plan = {stage: set(parents) for stage, parents in json.loads(result.stdout).items()}

    assert_runs_its_plan(plan, stage_graph(stack.root), container_run["stages_run"])


def test_every_stage_ran_in_a_container_and_the_checkout_is_clean(
    stack: Stack, container_run: dict
) -> None:
    assert set(container_run["stages_run"]) == set(stage_graph(stack.root))
    logs = list((stack.root / ".mlrig/containers" / container_run["pipeline_run_id"]).glob("*.log"))
    assert {log.stem for log in logs} >= {"ingest", "train-knn", "report"}
    assert "up to date" in stack.dvc("status").stdout
    cloud = stack.dvc("status", "--cloud", "--remote", "stack", **stack.client_env())
    assert "in sync" in cloud.stdout, cloud.stdout + cloud.stderr
    assert (stack.root / "reports/report.html").is_file()
    assert container_run["runs_recorded"] == len(
        [stage for stage in container_run["stages_run"] if stage.startswith("train@")]
    )


def test_runs_on_the_server_name_their_image_and_commit(
    stack: Stack, container_run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    env = stack.client_env()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, env[name])
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("mlrig")
    assert experiment is not None
    query = f"tags.`mlrig.pipeline_run_id` = '{container_run['pipeline_run_id']}'"
    runs = client.search_runs([experiment.experiment_id], query)
    train_runs = [run for run in runs if run.data.tags.get("mlrig.step") == "train"]
    assert train_runs
    for run in train_runs:
        assert run.data.tags["mlrig.image"].startswith("localhost/mlrig/train:")
        assert run.data.tags["mlrig.git_commit"] != "unknown"
        assert run.data.metrics


def test_the_result_matches_a_local_run(
    stack: Stack, container_run: dict, local_outputs: Path
) -> None:
    in_containers = stack.root / "outputs"
    experiments = sorted(path.name for path in (local_outputs / "evaluate").iterdir())
    assert experiments
    for name in experiments:
        local = json.loads((local_outputs / "evaluate" / name / "metrics.json").read_text())
        contained = json.loads((in_containers / "evaluate" / name / "metrics.json").read_text())
        assert contained == pytest.approx(local, rel=1e-9), name
    local_champion = json.loads((local_outputs / "register/champion.json").read_text())
    champion = json.loads((in_containers / "register/champion.json").read_text())
    assert champion["experiment"] == local_champion["experiment"]
    assert champion["value"] == pytest.approx(local_champion["value"])


def test_a_second_run_starts_no_container(stack: Stack, container_run: dict) -> None:
    before = set((stack.root / ".mlrig/containers").iterdir())
    result = stack.mlrig("run", "--stack", "local", "--executor", "containers", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["up_to_date"]
    assert set((stack.root / ".mlrig/containers").iterdir()) == before


def test_a_failing_container_stops_the_pipeline_naming_the_stage(
    stack: Stack, container_run: dict
) -> None:
    champion = (stack.root / "outputs/register/champion.json").read_bytes()
    # valid params that fail only when the model runs: more neighbours than training rows
    result = stack.mlrig(
        "run", "--stack", "local", "--executor", "containers",
        "-S", "train.experiments.knn.params.n_neighbors=100000",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr.split("Full log:")[0]
    assert "@knn' failed in its container" in result.stderr
    assert "exit code" in result.stderr and "n_neighbors" in result.stderr
    assert (stack.root / "outputs/register/champion.json").read_bytes() == champion
    assert "register" not in result.stdout


def test_a_stage_in_the_run_cache_is_restored_not_run(stack: Stack, container_run: dict) -> None:
    from ruamel.yaml import YAML

    def run_with_neighbours(count: int) -> dict:
        result = stack.mlrig(
            "run", "--stack", "local", "--executor", "containers", "--json",
            "-S", f"train.experiments.knn.params.n_neighbors={count}",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    params = YAML(typ="safe").load(REPO_ROOT / "params.yaml")
    first = params["train"]["experiments"]["knn"]["params"]["n_neighbors"]
    other = run_with_neighbours(first + 2)
    assert "train@knn" in other["stages_run"]
    # back to the first run's value: DVC finds train@knn changed, but its outputs for these
    # inputs are in the remote run-cache, so its container restores them and runs nothing
    back = run_with_neighbours(first)
    assert not {"train@knn", "evaluate@knn"} & set(back["stages_run"]), back
    assert back["runs_recorded"] == 0
    log = stack.root / ".mlrig/containers" / back["pipeline_run_id"] / "train-knn.log"
    assert "is cached - skipping run" in log.read_text()
    assert "up to date" in stack.dvc("status").stdout


def test_a_scaffolded_step_runs_in_its_own_image(stack: Stack, container_run: dict) -> None:
    """`make step` and `make images`, nothing else: the new stage runs in its container.

    Last in the module: it adds a step to the stack's checkout.
    """
    scaffolded = stack.run_module("mlrig.scaffold", "featurize")
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    built = stack.mlrig("images", "build")
    assert built.returncode == 0, built.stdout + built.stderr

    result = stack.mlrig("run", "--stack", "local", "--executor", "containers", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["stages_run"] == ["featurize"]
    log = stack.root / ".mlrig/containers" / summary["pipeline_run_id"] / "featurize.log"
    assert "featurize: copied" in log.read_text()
    copied = stack.root / "outputs/featurize/table.parquet"
    assert copied.read_bytes() == (stack.root / "outputs/ingest/table.parquet").read_bytes()
