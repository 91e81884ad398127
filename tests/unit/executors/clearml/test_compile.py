"""dvc.yaml compiled into a ClearML pipeline (mlrig.executors.clearml.compile), checked without a
server.

Each test builds a throwaway DVC project in tmp_path (or reads the repository's own dvc.yaml),
and ClearML runs in offline mode with HOME, its cache and TMPDIR in tmp_path: a controller's
task is an offline session there, written when it is drafted.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from dvc.repo import Repo

from mlrig.dvc.dag import stage_graph
from mlrig.errors import ConfigError
from mlrig.executors.clearml.compile import (
    DESCRIPTION_CONFIGURATION,
    PIPELINE_ID_PREFIX,
    PipelineDescription,
    compile_pipeline,
)
from mlrig.executors.clearml.pod import step_of_pod
from mlrig.executors.clearml.submission import SUBMISSION_CONFIGURATION, Submission
from mlrig.executors.clearml.submit import (
    build_controller,
    step_task_arguments,
    step_task_definition,
)
from mlrig.settings import Settings
from mlrig.tracking.clearml_sessions import recorded_single_values, task_link
from tests.support.clearml import glue_pod
from tests.support.project import REPO_ROOT

pytestmark = pytest.mark.clearml

#: fan-out (prepare -> left, right), fan-in (left + right -> train@*), foreach (train), and a
#: fan-in of the foreach (report)
SHAPES_DVC_YAML = {
    "stages": {
        "prepare": {
            "cmd": "mkdir -p out && cp data.txt out/prepared.txt",
            "deps": ["data.txt"],
            "params": ["prepare.size"],
            "outs": ["out/prepared.txt"],
        },
        "left": {
            "cmd": "cp out/prepared.txt out/left.txt",
            "deps": ["out/prepared.txt"],
            "outs": ["out/left.txt"],
        },
        "right": {
            "cmd": "cp out/prepared.txt out/right.txt",
            "deps": ["out/prepared.txt"],
            "outs": ["out/right.txt"],
        },
        "train": {
            "foreach": ["alpha", "beta"],
            "do": {
                "cmd": "cat out/left.txt out/right.txt > out/model-${item}.txt",
                "deps": ["out/left.txt", "out/right.txt"],
                "params": ["train.seed"],
                "outs": ["out/model-${item}.txt"],
            },
        },
        "report": {
            "cmd": "cat out/model-alpha.txt out/model-beta.txt > out/report.txt",
            "deps": ["out/model-alpha.txt", "out/model-beta.txt"],
            "metrics": [{"out/report.txt": {"cache": False}}],
        },
    }
}
SHAPES_GRAPH = {
    "prepare": set(),
    "left": {"prepare"},
    "right": {"prepare"},
    "train@alpha": {"left", "right"},
    "train@beta": {"left", "right"},
    "report": {"train@alpha", "train@beta"},
}
SHAPES_STEPS = ("prepare", "left", "right", "train", "report")
FAKE_SECRET = "fake-secret-4f1c9a7e"


@pytest.fixture
def controllers(offline_clearml: Path) -> Iterator[list[Any]]:
    """The controllers a test builds; their tasks are closed after it, drafted or not."""
    from clearml import Task

    built: list[Any] = []
    yield built
    for controller in built:
        if Task.current_task() is controller.task:  # else the next controller reuses it
            controller.task.close()


def make_project(root: Path, dvc_yaml: dict[str, Any], params: dict[str, Any]) -> Path:
    """A git + DVC project with this dvc.yaml and params.yaml, and a data file."""
    root.mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data.txt").write_text("first version of the data\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    Repo.init(str(root)).close()
    return root


def reproduce(root: Path) -> None:
    """`dvc repro` of every stage, in this process (DVC is imported already)."""
    with contextlib.chdir(root), Repo(str(root)) as repo:
        repo.reproduce()


@pytest.fixture
def shapes_project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path / "shapes", SHAPES_DVC_YAML, {"prepare": {"size": 3}, "train": {"seed": 7}}
    )


def shape_images(tag: str = "v1") -> dict[str, str]:
    return {step: f"registry.example/mlrig/{step}:{tag}" for step in SHAPES_STEPS}


def compile_shapes(root: Path, images: dict[str, str] | None = None) -> PipelineDescription:
    return compile_pipeline(
        root,
        images or shape_images(),
        default_queue="steps",
        step_queues={"train": "gpu", "report": "reports"},
    )


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_compiled_steps_follow_dvc_dag_in_dependency_order(shapes_project: Path) -> None:
    description = compile_shapes(shapes_project)

    steps = {step.name: step for step in description.steps}
    assert description.graph() == SHAPES_GRAPH == stage_graph(shapes_project)
    order = [step.name for step in description.steps]
    assert all(
        order.index(parent) < order.index(name) for name in order for parent in steps[name].parents
    )
    assert steps["train@alpha"].command == "mlrig-stage train@alpha"
    assert steps["train@beta"].outs == ["out/model-beta.txt"]
    assert steps["report"].outs == ["out/report.txt"]
    assert steps["train@alpha"].params == {"train.seed": 7}
    assert steps["prepare"].params == {"prepare.size": 3}
    assert steps["left"].params == {}
    assert steps["train@beta"].image == "registry.example/mlrig/train:v1"
    assert steps["left"].image == "registry.example/mlrig/left:v1"
    queues = {name: step.queue for name, step in steps.items()}
    assert queues == {
        "prepare": "steps",
        "left": "steps",
        "right": "steps",
        "train@alpha": "gpu",
        "train@beta": "gpu",
        "report": "reports",
    }


def test_dep_hashes_come_from_the_workspace_else_dvc_lock(shapes_project: Path) -> None:
    never_run = {step.name: step for step in compile_shapes(shapes_project).steps}
    assert never_run["prepare"].deps == {"data.txt": f"md5:{file_md5(shapes_project / 'data.txt')}"}
    assert never_run["left"].deps == {"out/prepared.txt": None}  # not run, not locked

    reproduce(shapes_project)
    (shapes_project / "out" / "prepared.txt").unlink()  # as in a fresh clone: not pulled
    (shapes_project / "out" / "left.txt").write_text("edited in the workspace\n")
    steps = {step.name: step for step in compile_shapes(shapes_project).steps}

    lock = yaml.safe_load((shapes_project / "dvc.lock").read_text())["stages"]
    locked_prepared = lock["left"]["deps"][0]
    assert locked_prepared["path"] == "out/prepared.txt"
    assert steps["left"].deps == {"out/prepared.txt": f"md5:{locked_prepared['md5']}"}
    edited = f"md5:{file_md5(shapes_project / 'out' / 'left.txt')}"
    assert steps["train@alpha"].deps["out/left.txt"] == edited
    assert steps["train@alpha"].deps["out/right.txt"] == f"md5:{lock['right']['outs'][0]['md5']}"


def test_input_keys_do_not_depend_on_the_outputs_this_checkout_holds(
    shapes_project: Path,
) -> None:
    """Upstream outputs are made again before a stage runs: the upstream key stands for them."""

    def keys() -> dict[str, str]:
        return {step.name: step.input_key for step in compile_shapes(shapes_project).steps}

    never_run = keys()
    reproduce(shapes_project)  # every output here, and dvc.lock
    assert keys() == never_run
    (shapes_project / "out" / "left.txt").write_text("a stale copy\n")
    assert keys() == never_run
    steps = {step.name: step for step in compile_shapes(shapes_project).steps}
    assert steps["train@alpha"].upstream_deps == ["out/left.txt", "out/right.txt"]
    assert steps["train@alpha"].clearml_parameters()["deps/out/left.txt"] == "upstream"
    assert steps["prepare"].upstream_deps == []


def test_the_repository_pipeline_has_every_foreach_stage_expanded() -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    experiments = params["train"]["experiments"]
    images = {step: f"localhost/mlrig/{step}:test" for step in (
        "ingest", "validate", "split", "train", "evaluate", "register", "report")}  # fmt: skip

    description = compile_pipeline(REPO_ROOT, images, default_queue="default")

    steps = {step.name: step for step in description.steps}
    assert description.graph() == stage_graph(REPO_ROOT)
    for experiment in experiments:
        train = steps[f"train@{experiment}"]
        assert train.params[f"train.experiments.{experiment}"] == experiments[experiment]
        assert train.image == "localhost/mlrig/train:test"
        assert steps[f"evaluate@{experiment}"].parents == ["split", f"train@{experiment}"]
    assert set(steps["register"].parents) == {"split"} | {
        f"{stage}@{experiment}" for stage in ("train", "evaluate") for experiment in experiments
    }


def test_a_step_without_an_image_is_refused(shapes_project: Path) -> None:
    images = shape_images()
    del images["train"]
    with pytest.raises(ConfigError, match="train"):
        compile_shapes(shapes_project, images)


@pytest.mark.parametrize(
    ("dvc_yaml", "problem"),
    [
        ({"stages": {"a": {"cmd": "true", "params": ["missing.key"]}}}, "missing.key"),
        ({"stages": {"a": {"cmd": "true", "deps": ["x"], "unknown": 1}}}, "unknown"),
    ],
)
def test_a_pipeline_dvc_cannot_read_is_a_clear_error(
    tmp_path: Path, dvc_yaml: dict[str, Any], problem: str
) -> None:
    root = make_project(tmp_path / "broken", dvc_yaml, {"present": 1})

    with pytest.raises(ConfigError, match=problem):
        compile_pipeline(root, {"a": "image:1"}, default_queue="q")


def test_controller_dag_equals_dvc_dag_and_verifies(
    shapes_project: Path, controllers: list[Any]
) -> None:
    description = compile_shapes(shapes_project)
    controller = build_controller(description)
    controllers.append(controller)

    assert controller._verify() is True  # the check start() makes: parents known, no cycle
    nodes = controller.get_pipeline_dag()
    assert {name: set(node.parents) for name, node in nodes.items()} == stage_graph(shapes_project)
    for step in description.steps:
        node = nodes[step.name]
        assert node.queue == step.queue
        assert node.parameters == step.clearml_parameters()
        assert node.cache_executed_step is True
        assert node.base_task_id is None and node.task_factory_func is not None


def test_stages_the_remote_holds_are_left_out_of_the_controller(
    shapes_project: Path, controllers: list[Any]
) -> None:
    description = compile_shapes(shapes_project)
    done = {"prepare", "left"}
    steps = [step.model_copy(update={"recorded": step.name in done}) for step in description.steps]
    controller = build_controller(description.model_copy(update={"steps": steps}))
    controllers.append(controller)

    assert controller._verify() is True
    nodes = controller.get_pipeline_dag()
    assert {name: set(node.parents) for name, node in nodes.items()} == {
        "right": set(),  # its parent's result is on the remote: its pod reads that record
        "train@alpha": {"right"},
        "train@beta": {"right"},
        "report": {"train@alpha", "train@beta"},
    }
    # the pod of `right` reads the record of `prepare`, `train@*` those of `left` and `right`
    steps_by_name = {step.name: step for step in steps}
    task = description.step_task(steps_by_name["train@alpha"])
    assert task.parents == {name: steps_by_name[name].input_key for name in ("left", "right")}
    assert task.workspace == description.workspace


def offline_session(cache: Path, task_id: str) -> dict[str, Any]:
    """The task.json of an offline session, and every file of it as text under `files`."""
    archive_path = cache / "offline" / f"{task_id}.zip"
    assert archive_path.is_file(), f"no offline session for {task_id} in {archive_path.parent}"
    with zipfile.ZipFile(archive_path) as archive:
        files = {name: archive.read(name).decode(errors="replace") for name in archive.namelist()}
    return {**json.loads(files["task.json"]), "files": files}


def test_draft_stores_the_pipeline_with_its_version(
    shapes_project: Path, controllers: list[Any], offline_clearml: Path
) -> None:
    description = compile_shapes(shapes_project)
    controller = build_controller(description)
    controllers.append(controller)

    controller.create_draft()

    task = offline_session(offline_clearml, controller.id)
    stored = json.loads(task["configuration"]["Pipeline"]["value"])
    assert set(stored) == set(SHAPES_GRAPH)
    for step in description.steps:
        assert set(stored[step.name]["parents"]) == set(step.parents)
        assert stored[step.name]["queue"] == step.queue
        assert stored[step.name]["parameters"] == step.clearml_parameters()
        assert stored[step.name]["cache_executed_step"] is True
    assert task["hyperparams"]["properties"]["version"]["value"] == description.version
    assert task["name"].startswith(description.name)


def test_each_step_task_runs_its_stage_in_its_image_without_building_an_environment(
    shapes_project: Path, offline_clearml: Path
) -> None:
    from clearml import Task  # after offline mode is set: ClearML reads it when imported

    description = compile_shapes(shapes_project)

    for step in description.steps:
        definition = step_task_definition(description, step)
        script = definition["script"]
        assert definition["name"] == step.name
        assert script["binary"] == "/bin/bash"
        # clearml-agent runs `bash -c "<the words after -c, joined by spaces>"`, not shlex-parsed
        assert script["entry_point"] == f"-c mlrig-stage {step.name}"
        assert not script.get("repository") and not script.get("diff")
        assert script["requirements"] == {"pip": ""}  # ClearML's "install nothing"
        assert definition["container"]["image"] == step.image
        # the k8s glue makes `-e` container arguments the pod's environment (clearml-agent's
        # own code, as its get_task_container reads the arguments: shlex-split)
        pod = glue_pod({}, "task-1", step.image, shlex.split(definition["container"]["arguments"]))
        environment = {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}
        assert step_of_pod(environment) == (step.name, step.input_key)
        assert environment["CLEARML_TASK_ID"] == "task-1"
        # what the controller passes to Task.create when it launches the step, against a server
        inspect.signature(Task.create).bind(**step_task_arguments(description, step))


def test_no_secret_reaches_any_task_definition(
    shapes_project: Path,
    controllers: list[Any],
    offline_clearml: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "AWS_SECRET_ACCESS_KEY",
        "CLEARML_API_SECRET_KEY",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
    ):
        monkeypatch.setenv(name, FAKE_SECRET)
    description = compile_shapes(shapes_project)
    controller = build_controller(description)
    controllers.append(controller)
    controller.create_draft()

    written = [description.model_dump_json()]
    written += [json.dumps(step_task_definition(description, s)) for s in description.steps]
    written += offline_session(offline_clearml, controller.id)["files"].values()
    assert all(FAKE_SECRET not in text for text in written)
    assert any("mlrig-stage report" in text for text in written)  # the search sees the tasks


def step_cache_keys(
    description: PipelineDescription,
    controller: Any,
    parameters: Callable[[Any], dict[str, str]] = lambda step: step.clearml_parameters(),
    *,
    container_arguments: bool = True,
) -> dict[str, str]:
    """Each step's cache key as ClearML computes it: its task's script, container arguments and
    hyperparameters (`parameters`; without mlrig's container arguments if not asked for)."""
    from clearml.automation.job import ClearmlJob

    keys = {}
    for step in description.steps:
        definition = step_task_definition(description, step)
        container = definition["container"] | ({} if container_arguments else {"arguments": ""})
        # ClearML reads the container section off the step's task (only made against a server)
        task = SimpleNamespace(data=SimpleNamespace(container=container))
        keys[step.name] = ClearmlJob._create_task_hash(
            task,  # type: ignore[arg-type]
            section_overrides={"script": definition["script"]},
            params_override=parameters(step),
            configurations_override={},
        )
    return keys


def stage_only(step: Any) -> dict[str, str]:
    """Hyperparameters without the deps' hashes, the params and the image."""
    return {"mlrig/stage": step.name}


def changed_keys(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_cache_key_changes_with_data_params_and_image_only(
    shapes_project: Path, controllers: list[Any]
) -> None:
    first = compile_shapes(shapes_project)
    controller = build_controller(first)
    controllers.append(controller)
    keys = step_cache_keys(first, controller)
    assert all(keys.values()) and len(set(keys.values())) == len(keys)

    assert step_cache_keys(compile_shapes(shapes_project), controller) == keys
    # an edit no stage reads changes the workspace the pods fetch, not a step's key
    (shapes_project / "README.md").write_text("notes\n")
    edited = compile_shapes(shapes_project)
    assert edited.workspace != first.workspace
    assert step_cache_keys(edited, controller) == keys

    (shapes_project / "data.txt").write_text("second, longer version of the data\n")
    new_data = compile_shapes(shapes_project)
    assert changed_keys(keys, step_cache_keys(new_data, controller)) == set(SHAPES_GRAPH)
    # ClearML's own key, without the deps' hashes in the parameters and the input key in the
    # container arguments, would not have changed
    assert step_cache_keys(
        new_data, controller, stage_only, container_arguments=False
    ) == step_cache_keys(first, controller, stage_only, container_arguments=False)
    keys = step_cache_keys(new_data, controller)

    new_image = compile_shapes(shapes_project, shape_images() | {"train": "r.example/train:v2"})
    changed = changed_keys(keys, step_cache_keys(new_image, controller))
    assert changed == {"train@alpha", "train@beta", "report"}

    params = yaml.safe_load((shapes_project / "params.yaml").read_text())
    params["train"]["seed"] = 8
    (shapes_project / "params.yaml").write_text(yaml.safe_dump(params))
    new_seed = compile_shapes(shapes_project)
    assert changed_keys(keys, step_cache_keys(new_seed, controller)) == {
        "train@alpha",
        "train@beta",
        "report",
    }


def test_submitting_child_stores_the_description_and_submission_on_the_controller(
    shapes_project: Path, offline_clearml: Path, tmp_path: Path
) -> None:
    description = compile_shapes(shapes_project)
    description_path = tmp_path / "pipeline.json"
    description_path.write_text(description.model_dump_json())
    submission = Submission(
        pipeline_run_id="20260101-000000-abcdef",
        parent_run_id="f00dfeed" * 4,
        tracking_uri="http://mlflow.example:5000",
        controller_ends_parent_run=True,
    )
    submission_path = tmp_path / "submission.json"
    submission_path.write_text(submission.model_dump_json())

    child = subprocess.run(
        [sys.executable, "-m", "mlrig.entrypoints.controller", str(description_path), "services",
         str(submission_path)],
        cwd=shapes_project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # offline, start() gets through checking and storing the pipeline, then finds no queue
    assert child.returncode != 0
    assert 'Could not find queue named "services"' in child.stderr
    ids = [line.removeprefix(PIPELINE_ID_PREFIX) for line in child.stdout.splitlines()
           if line.startswith(PIPELINE_ID_PREFIX)]  # fmt: skip
    assert len(ids) == 1
    task = offline_session(offline_clearml, ids[0])
    configuration = task["configuration"]
    stored = configuration[DESCRIPTION_CONFIGURATION]["value"]
    assert PipelineDescription.model_validate_json(stored) == description
    stored_submission = configuration[SUBMISSION_CONFIGURATION]["value"]
    assert Submission.model_validate_json(stored_submission) == submission
    assert task["hyperparams"]["properties"]["mlflow_run_id"]["value"] == submission.parent_run_id
    steps = json.loads(configuration["Pipeline"]["value"])
    assert set(steps) == set(SHAPES_GRAPH)
    # the parent run is the controller's alone: in no step's parameters nor task
    written = [configuration["Pipeline"]["value"]]
    written += [json.dumps(step_task_definition(description, s)) for s in description.steps]
    assert all(submission.parent_run_id not in text for text in written)
    assert all(submission.pipeline_run_id not in text for text in written)


def test_the_single_values_a_task_recorded_are_read_back_for_the_report(
    offline_clearml: Path, tmp_path: Path
) -> None:
    from clearml import Task

    task = Task.init(
        project_name="mlrig",
        task_name="evaluate@x",
        reuse_last_task_id=False,
        auto_connect_frameworks=False,
        auto_connect_streams=False,
        auto_resource_monitoring=False,
    )
    task.get_logger().report_single_value("f1", 0.9312)
    task.get_logger().report_single_value("accuracy", 0.95)
    task.get_logger().report_scalar("loss", "train", 0.5, 1)  # a series, not a single value
    task_id = str(task.id)
    task.close()
    project = tmp_path / "project"
    sessions = project / ".mlrig" / "clearml" / "offline"
    sessions.mkdir(parents=True)
    shutil.copy2(offline_clearml / "offline" / f"{task_id}.zip", sessions)
    settings = Settings(project_dir=project, CLEARML_WEB_HOST="https://app.clearml.example")

    assert recorded_single_values(settings, task_id) == {"f1": 0.9312, "accuracy": 0.95}
    assert recorded_single_values(settings, "offline-elsewhere") is None  # not recorded here
    assert task_link(settings, task_id) is None  # an offline session has no page yet
    (sessions / "imported.json").write_text(json.dumps({task_id: "4f1c"}))
    assert task_link(settings, task_id) == "https://app.clearml.example/projects/*/experiments/4f1c"


def test_resources_choose_a_stages_queue_and_change_no_cache_key(
    shapes_project: Path, controllers: list[Any]
) -> None:
    """A stage's resources are no input of it: on whichever queue they put it, its input key
    and ClearML's cache key stay those of the stage without them."""
    capacities = {"steps": {"cpu": "2", "memory": "4Gi"}, "gpu": {"gpu": 1, "memory": "16Gi"}}

    def compiled(resources: dict[str, Any]) -> PipelineDescription:
        params = yaml.safe_load((shapes_project / "params.yaml").read_text())
        (shapes_project / "params.yaml").write_text(yaml.safe_dump(params | resources))
        return compile_pipeline(
            shapes_project, shape_images(), default_queue="steps", queue_resources=capacities
        )

    plain = compiled({})
    controller = build_controller(plain)
    controllers.append(controller)
    keys = step_cache_keys(plain, controller)
    assert {step.queue for step in plain.steps} == {"steps"}

    same_queue = compiled({"resources": {"train": {"memory": "3Gi"}}})
    other_queue = compiled({"resources": {"train@alpha": {"gpu": 1}, "train": {"memory": "6Gi"}}})
    queues = {step.name: step.queue for step in other_queue.steps}
    assert queues == {name: "steps" for name in SHAPES_GRAPH} | {
        "train@alpha": "gpu",
        "train@beta": "gpu",  # 6Gi: more than steps provides
    }
    assert {step.name: str(step.resources) for step in other_queue.steps if step.resources} == {
        "train@alpha": "gpu=1 cpu=None memory='6Gi'",
        "train@beta": "gpu=0 cpu=None memory='6Gi'",
    }
    for description in (same_queue, other_queue):
        assert step_cache_keys(description, controller) == keys
        assert [step.input_key for step in description.steps] == [
            step.input_key for step in plain.steps
        ]
    # the controller enqueues each step on its queue
    queued = build_controller(other_queue)
    controllers.append(queued)
    assert queued.get_pipeline_dag()["train@alpha"].queue == "gpu"
