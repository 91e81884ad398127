"""The whole pipeline, stage by stage in the step images, against the real local stack.

Data moves between containers only through the S3 remote, results only through the MLflow
server. The result must match a local run of the same commit and params.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlrig.dvc.dag import stage_graph
from mlrig.executors.step_containers import RUN_LABEL
from mlrig.images.build import ImageBuild
from mlrig.images.engine import Engine
from mlrig.progress import HEARTBEAT_VARIABLE, read_heartbeat
from tests.support.executors import assert_runs_its_plan
from tests.support.project import FEW_EXPERIMENTS, REPO_ROOT, clean_environment, copy_repository
from tests.support.stack import Stack, start_stack

pytestmark = [pytest.mark.containers, pytest.mark.integration]

#: how often a stage of the shared run says what it is doing, in seconds
HEARTBEAT = 0.5


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
        # stages say what they do every HEARTBEAT s (10 s by default): some stages take longer
        env=stack.env
        | {"PATH": path_without_uv(stack.env["PATH"]), HEARTBEAT_VARIABLE: str(HEARTBEAT)},
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


def containers_left(engine: Engine, root: Path) -> list[str]:
    """The containers (running or not) of the pipeline runs of the project at `root`."""
    listing = subprocess.run(
        engine.command(
            "ps", "--all", "--filter", f"label={RUN_LABEL}",
            "--format", f'{{{{.Names}}}} {{{{index .Labels "{RUN_LABEL}"}}}}',
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    runs = {path.name for path in (root / ".mlrig/containers").glob("*")}
    return [line.split()[0] for line in listing.splitlines() if line.split()[-1] in runs]


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
    stack: Stack, container_run: dict, step_images: tuple[Engine, list[ImageBuild]]
) -> None:
    assert set(container_run["stages_run"]) == set(stage_graph(stack.root))
    logs = list((stack.root / ".mlrig/containers" / container_run["pipeline_run_id"]).glob("*.log"))
    assert {log.stem for log in logs} >= {"ingest", "train-knn", "report"}
    # one step container per image content served the run (steps that lock the same packages
    # share one: split ingest's, register train's), and none outlives it
    servers = {log.name for log in logs if log.name.endswith(".server.log")}
    steps = {stage.split("@")[0] for stage in container_run["stages_run"]}
    assert servers == {f"{step}.server.log" for step in steps - {"split", "register"}}
    assert containers_left(step_images[0], stack.root) == []
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


def test_reproduce_reruns_the_champion_in_the_images_it_ran_in(
    stack: Stack, container_run: dict, step_images: tuple[Engine, list[ImageBuild]]
) -> None:
    champion = json.loads((stack.root / "outputs/register/champion.json").read_text())
    uri = f"models:/{champion['registered_model']}@champion"

    in_images = stack.mlrig("reproduce", uri, "--json", **stack.client_env())

    assert in_images.returncode == 0, in_images.stdout + in_images.stderr
    result = json.loads(in_images.stdout)
    image = next(link for link in result["links"] if link["name"] == "image")
    # the rerun's own train run names the image: only a stage in a step container sets it
    assert image["recorded"].startswith("localhost/mlrig/train:")
    assert (image["state"], result["notice"]) == ("ok", None), image
    assert "logged through an MLflow server" in result["rerun_tracking"]
    assert result["reproduced"] is True, result
    leftover = step_images[0].command("ps", "--all", "--format", "{{.Names}}")
    names = subprocess.run(leftover, capture_output=True, text=True).stdout.split()
    assert not [name for name in names if name.startswith("mlrig-reproduce-")]

    here = stack.mlrig("reproduce", uri, "--local", "--json", **stack.client_env())

    assert here.returncode == 0, here.stdout + here.stderr
    local = json.loads(here.stdout)
    image = next(link for link in local["links"] if link["name"] == "image")
    assert image["state"] == "not checked" and local["reproduced"] is True
    assert f"The recorded image {image['recorded']} is not used (--local" in here.stderr


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
    stack: Stack, container_run: dict, step_images: tuple[Engine, list[ImageBuild]]
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
    assert containers_left(step_images[0], stack.root) == []  # the failed run's are gone too


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


#: what the train stages of a held copy wait on: they run until the test stops the pipeline
HOLD = "while [ -e hold ]; do sleep 0.1; done; "


@pytest.fixture
def held_copy(stack: Stack, container_run: dict, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the project on the same stack, whose train stages wait while a file `hold`
    is in their workspace; and the environment to run mlrig there."""
    root = tmp_path / "held"
    copy_repository(root, FEW_EXPERIMENTS)
    pipeline = (root / "dvc.yaml").read_text()
    held = pipeline.replace("cmd: python -m steps.train", f"cmd: {HOLD}python -m steps.train")
    assert held != pipeline
    (root / "dvc.yaml").write_text(held)
    subprocess.run(["git", "commit", "-qam", "hold train"], cwd=root, check=True)
    shutil.copy2(stack.root / ".dvc/config.local", root / ".dvc/config.local")
    (root / "hold").touch()  # an untracked file: every stage's workspace gets a copy
    return root, clean_environment(root) | stack.client_env()


def start_held_run(root: Path, environment: dict[str, str]) -> subprocess.Popen:
    """`mlrig run --executor containers` in a held copy, once both train stages are running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mlrig", "run", "--executor", "containers"],
        cwd=root,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def train_stages_running() -> bool:
        logs = list((root / ".mlrig/containers").glob("*/train-*.log"))
        return len(logs) == 2 and all("Running stage" in log.read_text() for log in logs)

    wait_for(train_stages_running, "both train stages to run", process)
    return process


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + 600
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"mlrig ended before {what}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def test_sigterm_stops_the_running_stages_and_their_containers(
    held_copy: tuple[Path, dict[str, str]], step_images: tuple[Engine, list[ImageBuild]]
) -> None:
    root, environment = held_copy
    process = start_held_run(root, environment)
    assert len(containers_left(step_images[0], root)) >= 2  # train's, and those started next

    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)
    stderr = process.stderr.read()

    assert code == 143, stderr
    assert "Stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert "Stopped: train@knn, train@linear_c0_1." in stderr
    assert containers_left(step_images[0], root) == []


def test_a_killed_run_leaves_no_container_behind(
    held_copy: tuple[Path, dict[str, str]], step_images: tuple[Engine, list[ImageBuild]]
) -> None:
    """mlrig itself is killed (no handler runs): its watchdog stops the containers."""
    root, environment = held_copy
    process = start_held_run(root, environment)

    process.kill()
    process.wait(timeout=60)

    wait_for(lambda: containers_left(step_images[0], root) == [], "the containers to be gone")


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


def test_the_summary_gives_each_stage_its_steps_own_usage(container_run: dict) -> None:
    """The step's CPU time and peak RSS, counted in its container for its forked process,
    come back to the host's summary."""
    usage = container_run["stage_usage"]
    assert set(usage) == set(container_run["stages_run"])
    for stage, cost in usage.items():
        assert cost["cpu_seconds"] > 0, stage
        # a fork of a server that imported pandas, scikit-learn, MLflow, ClearML and DVC
        assert cost["peak_rss_mb"] > 100, stage


def test_a_stage_says_what_it_does_in_its_log_under_its_own_name(
    stack: Stack, container_run: dict
) -> None:
    """The heartbeat lines the run shows on the console (not with --json) come back in each
    stage's log while it runs, named after the stage; its step's say what the step does."""
    run_dir = stack.root / ".mlrig/containers" / container_run["pipeline_run_id"]
    beats = {}
    for stage in container_run["stages_run"]:
        lines = (run_dir / f"{stage.replace('@', '-')}.log").read_text().splitlines()
        found = [beat for line in lines if (beat := read_heartbeat(line))]
        assert all(beat.stage == stage for beat in found), found
        beats[stage] = found
    assert any(beats.values())
    assert not any(beat.phase == "running " + stage for stage in beats for beat in beats[stage])
