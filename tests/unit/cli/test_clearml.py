"""`mlrig clearml pipeline` and `mlrig run --executor clearml`: the dry run, and the refusal
to submit without a ClearML server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlrig.dvc.dag import stage_graph
from mlrig.errors import EXIT_BAD_INPUT
from mlrig.executors.clearml.compile import PipelineDescription
from mlrig.images.build import step_image_references, step_names
from mlrig.images.engine import engine_if_any
from mlrig.settings import Settings
from tests.support.project import REPO_ROOT, run_mlrig

pytestmark = pytest.mark.clearml


def mlrig(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """`mlrig ...` in the repository, with no ClearML server or queue settings of the caller's."""
    return run_mlrig(*arguments, cwd=REPO_ROOT, **environment)


@pytest.mark.parametrize(
    "arguments",
    [("run", "--executor", "clearml", "--queue", "q"), ("clearml", "pipeline", "--queue", "q")],
)
def test_submit_without_a_server_names_what_to_set(arguments: tuple[str, ...]) -> None:
    result = mlrig(*arguments)

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    for name in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert "--dry-run" in result.stderr


def test_dry_run_json_prints_the_repository_pipeline_in_its_images() -> None:
    result = mlrig("clearml", "pipeline", "--dry-run", "--json", "--queue", "cpu")

    assert result.returncode == 0, result.stderr
    description = PipelineDescription.model_validate_json(result.stdout)
    assert description.graph() == stage_graph(REPO_ROOT)
    assert {step.queue for step in description.steps} == {"cpu"}
    # the images the containers executor runs each step in (content tags of the sources now)
    settings = Settings(project_dir=REPO_ROOT)
    images = step_image_references(settings, engine_if_any(settings))
    assert {step.name: step.image for step in description.steps} == {
        step.name: images[step.step] for step in description.steps
    }
    assert all(step.image.startswith(f"localhost/mlrig/{step.step}:") for step in description.steps)


def test_clearml_executor_refuses_param_overrides_it_could_not_ship() -> None:
    result = mlrig("run", "--executor", "clearml", "-S", "split.seed=7")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "commit" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("option", [("--queue", "q"), ("--wait",), ("--images", "x.json")])
def test_submission_options_are_refused_without_the_clearml_executor(
    option: tuple[str, ...],
) -> None:
    result = mlrig("run", *option)

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "--executor clearml" in result.stderr and "Traceback" not in result.stderr


PUSHED_TRAIN = "registry.example/mlrig/train@sha256:" + "a" * 64


def test_dry_run_runs_the_pushed_steps_by_digest(tmp_path: Path) -> None:
    """The build jobs' digest files: those steps by digest, the others by their local tag."""
    digests = tmp_path / "images-train.json"
    digests.write_text(json.dumps({"train": PUSHED_TRAIN}))
    result = mlrig("clearml", "pipeline", "--dry-run", "--json", "--images", str(digests))

    assert result.returncode == 0, result.stderr
    description = PipelineDescription.model_validate_json(result.stdout)
    images = {step.step: step.image for step in description.steps}
    assert images.pop("train") == PUSHED_TRAIN
    assert all(image.startswith("localhost/mlrig/") for image in images.values())


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"train": "localhost/mlrig/train:abc"}', "not by digest"),
        ('{"trian": "' + PUSHED_TRAIN + '"}', "trian"),
        ("[1, 2]", "not a digest file"),
    ],
)
def test_a_wrong_digest_file_is_refused_naming_the_problem(
    tmp_path: Path, content: str, named: str
) -> None:
    digests = tmp_path / "images.json"
    digests.write_text(content)
    result = mlrig("clearml", "pipeline", "--dry-run", "--images", str(digests))

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr


def test_dry_run_table_lists_every_stage_with_its_queue() -> None:
    result = mlrig("clearml", "pipeline", "--dry-run", MLRIG_CLEARML_STEP_QUEUES='{"train": "gpu"}')

    assert result.returncode == 0, result.stderr
    cells = [line.split("│") for line in result.stdout.splitlines() if "│" in line]
    rows = {row[1].strip(): row for row in cells if row[1].strip()}  # not a wrapped cell's line
    assert set(rows) == set(stage_graph(REPO_ROOT))
    queues = {name: row[4].strip() for name, row in rows.items()}
    assert queues == {name: "gpu" if name.startswith("train@") else "default" for name in rows}


def path_without_an_engine(tmp_path: Path) -> str:
    """A PATH holding the venv's tools and git, and neither podman nor docker."""
    tools = tmp_path / "bin"
    tools.mkdir()
    git = shutil.which("git")
    assert git is not None
    (tools / "git").symlink_to(git)
    return f"{Path(sys.executable).parent}{os.pathsep}{tools}"


def test_dry_run_needs_no_container_engine_and_names_the_unbuilt_images(tmp_path: Path) -> None:
    result = mlrig(
        "clearml", "pipeline", "--dry-run", "--json", PATH=path_without_an_engine(tmp_path)
    )

    assert result.returncode == 0, result.stderr
    description = PipelineDescription.model_validate_json(result.stdout)
    images = step_image_references(Settings(project_dir=REPO_ROOT), None)
    assert {step.step: step.image for step in description.steps} == {
        step.step: images[step.step] for step in description.steps
    }
    assert "no container engine" in result.stderr
    for step in {step.step for step in description.steps}:
        assert step in result.stderr
    assert "Traceback" not in result.stderr


def test_a_submission_of_pushed_images_only_needs_no_engine_and_builds_nothing(
    tmp_path: Path,
) -> None:
    digests = tmp_path / "images.json"
    pushed = {
        step: f"registry.example/mlrig/{step}@sha256:{'b' * 64}" for step in step_names(REPO_ROOT)
    }
    digests.write_text(json.dumps(pushed))
    result = mlrig(
        "clearml", "pipeline", "--dry-run", "--json", "--images", str(digests),
        PATH=path_without_an_engine(tmp_path),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    description = PipelineDescription.model_validate_json(result.stdout)
    assert {step.step: step.image for step in description.steps} == {
        step.step: pushed[step.step] for step in description.steps
    }
    assert "Not built" not in result.stderr


def test_a_base_image_names_the_step_images_without_an_engine(tmp_path: Path) -> None:
    """The content tags hold the base as declared (never a local image id): no engine needed."""
    base = f"registry.example/debian@sha256:{'e' * 64}"
    path = path_without_an_engine(tmp_path)
    results = [
        mlrig("clearml", "pipeline", "--dry-run", "--json", PATH=path,
              **({"MLRIG_BASE_IMAGE": base} if base_image else {}))
        for base_image in (True, True, False)
    ]  # fmt: skip

    for result in results:
        assert result.returncode == 0, result.stderr
    on_base, again, default = (
        {step.name: step.image for step in PipelineDescription.model_validate_json(r.stdout).steps}
        for r in results
    )
    assert on_base == again
    assert all(on_base[name] != default[name] for name in on_base)


QUEUE_RESOURCES = json.dumps(
    {"default": {"cpu": "2", "memory": "4Gi"}, "gpu": {"gpu": 1, "cpu": "8", "memory": "16Gi"}}
)


@pytest.fixture(scope="module")
def resources_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the repository whose knn training needs a GPU, and every step's digest file."""
    from tests.support.project import FEW_EXPERIMENTS, copy_repository

    root = tmp_path_factory.mktemp("resources") / "project"
    copy_repository(root, FEW_EXPERIMENTS)
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(
        params + "resources:\n  train: {memory: 2Gi}\n  train@knn: {gpu: 1, memory: 8Gi}\n"
    )
    digests = root.parent / "images.json"
    digests.write_text(
        json.dumps({step: f"registry.example/mlrig/{step}@sha256:{'d' * 64}" for step in
                    step_names(root)})
    )  # fmt: skip
    return root, digests


def test_dry_run_shows_each_stages_queue_and_resources(
    resources_project: tuple[Path, Path],
) -> None:
    root, digests = resources_project
    result = run_mlrig(
        "clearml", "pipeline", "--dry-run", "--images", str(digests), "--digests-only",
        cwd=root, MLRIG_CLEARML_QUEUE_RESOURCES=QUEUE_RESOURCES,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    cells = [line.split("│") for line in result.stdout.splitlines() if "│" in line]
    rows = {row[1].strip(): row for row in cells if row[1].strip()}
    assert set(rows) == set(stage_graph(root))
    placed = {name: (row[4].strip(), row[5].strip()) for name, row in rows.items()}
    assert placed["train@knn"] == ("gpu", "gpu 1, memory 8Gi")
    assert placed["train@linear_c0_1"] == ("default", "memory 2Gi")
    assert placed["split"] == ("default", "-")
    assert "controller runs on queue services and asks for no resources" in result.stdout


def test_dry_run_refuses_a_stage_no_queue_can_hold(resources_project: tuple[Path, Path]) -> None:
    root, digests = resources_project
    small = json.dumps({"default": {"cpu": "2", "memory": "4Gi"}})
    result = run_mlrig(
        "clearml", "pipeline", "--dry-run", "--images", str(digests),
        cwd=root, MLRIG_CLEARML_QUEUE_RESOURCES=small,
    )  # fmt: skip

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "No ClearML queue can hold stage(s)" in result.stderr
    assert "train@knn needs gpu 1, memory 8Gi: default provides cpu 2, memory 4Gi" in result.stderr
    assert "train@linear_c0_1 needs memory 2Gi" not in result.stderr  # that one fits
    assert "Traceback" not in result.stderr


def test_digests_only_refuses_a_step_no_build_job_pushed(tmp_path: Path) -> None:
    digests = tmp_path / "images-train.json"
    digests.write_text(json.dumps({"train": PUSHED_TRAIN}))
    result = mlrig("clearml", "pipeline", "--dry-run", "--images", str(digests), "--digests-only")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "--digests-only: no digest file names the image of step(s)" in result.stderr
    for step in set(step_names(REPO_ROOT)) - {"train"}:
        assert step in result.stderr
    assert "Traceback" not in result.stderr
