"""The `mlrig` command as a user meets it before and around a pipeline run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from rich.cells import cell_len

from mlrig.experiments.results import Champion, Margin, TrainOutput
from mlrig.tracking.step_run import TAG_EXPERIMENT, TAG_STEP
from mlrig.tracking.train_runs import TAG_MODEL_MD5
from tests.support.project import REPO_ROOT, clean_environment, copy_repository, run_mlrig


@pytest.fixture
def empty_project(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(
        "train:\n  experiments:\n    base:\n      family: baseline\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["compare"], ["report"], ["tune"], ["clearml"], ["clearml", "import"],
     ["clearml", "prune"], ["stage"], ["images"], ["images", "build"]],
)  # fmt: skip
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    result = run_mlrig(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_outside_a_project_names_what_is_missing(tmp_path: Path) -> None:
    result = run_mlrig("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "No dvc.yaml found" in result.stderr
    assert "Traceback" not in result.stderr


def test_compare_before_any_run_says_to_run_first(empty_project: Path) -> None:
    schema = empty_project / "steps" / "train" / "params.py"  # the train step's section
    schema.parent.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "steps" / "train" / "params.py", schema)

    result = run_mlrig("compare", cwd=empty_project)
    assert result.returncode == 2
    assert "mlrig run" in result.stderr and "'base'" in result.stderr


LONG_NAMES = [
    "linear_with_strong_regularisation",
    "gradient_boosting_with_deep_trees_and_a_slow_learning_rate_of_0_01_x",  # wider than 60
    "knn",
]


def write_results(project: Path, names: list[str]) -> None:
    """The outputs a pipeline run leaves for `mlrig compare`: run.json and metrics.json each."""
    schema = project / "steps" / "train" / "params.py"
    schema.parent.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "steps" / "train" / "params.py", schema)
    experiments = "".join(f"    {name}:\n      family: knn\n" for name in names)
    (project / "params.yaml").write_text(f"train:\n  experiments:\n{experiments}")
    # the runs that logged the models, in the project's own store, where compare finds them
    client = MlflowClient(f"sqlite:///{project / '.mlrig/mlflow.db'}")
    experiment_id = client.create_experiment("mlrig")
    for number, name in enumerate(names):
        output = TrainOutput(
            experiment=name,
            family="knn",
            params={"n_neighbors": 15, "weights": "distance"},
            task="classification",
            dataset="d",
            train_md5="0" * 32,
            model_md5=f"{number}" * 32,
        )
        tags = {TAG_STEP: "train", TAG_EXPERIMENT: name, TAG_MODEL_MD5: output.model_md5}
        run = client.create_run(experiment_id, tags=tags)
        client.log_metric(run.info.run_id, "fit_seconds", 0.05)
        (project / "outputs/train" / name).mkdir(parents=True)
        (project / "outputs/train" / name / "run.json").write_text(output.model_dump_json())
        metrics = {"accuracy": 0.9 + number / 100, "f1": 0.8 + number / 100, "log_loss": 0.25}
        (project / "outputs/evaluate" / name).mkdir(parents=True)
        (project / "outputs/evaluate" / name / "metrics.json").write_text(json.dumps(metrics))
    champion = KEPT.model_copy(
        update={"experiment": names[1], "is_champion": True, "registered": True}
    )
    (project / "outputs/register").mkdir(parents=True)
    (project / "outputs/register/champion.json").write_text(champion.model_dump_json())


def test_compare_shows_whole_names_on_a_narrow_terminal(empty_project: Path) -> None:
    write_results(empty_project, LONG_NAMES)

    result = run_mlrig("compare", cwd=empty_project, COLUMNS="60")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 60
    assert "…" not in result.stdout
    # each table leads with the experiment column; a name wider than the terminal is folded
    # onto more lines, never cut
    first_cells = "".join(
        line.split("│")[1].replace(" ", "") for line in lines if line.startswith("│")
    )
    names = [LONG_NAMES[0], f"{LONG_NAMES[1]} 🏆", LONG_NAMES[2]]
    tables = result.stdout.count("┃ experiment")
    assert tables > 1
    assert first_cells == "".join(name.replace(" ", "") for name in names) * tables
    assert LONG_NAMES[0] in result.stdout  # a name that fits stays on one line
    for value in ("0.9000", "0.8100", "0.9200", "0.2500", "n_neighbors=15"):
        assert value in result.stdout


def test_clearml_import_without_a_server_names_the_settings(empty_project: Path) -> None:
    result = run_mlrig("clearml", "import", cwd=empty_project)
    assert result.returncode == 2
    assert "CLEARML_API_HOST" in result.stderr and "CLEARML_API_SECRET_KEY" in result.stderr


def test_clearml_import_to_an_unreachable_server_fails_fast(empty_project: Path) -> None:
    sessions = empty_project / ".mlrig/clearml/offline"
    sessions.mkdir(parents=True)
    result = run_mlrig(
        "clearml",
        "import",
        cwd=empty_project,
        CLEARML_API_HOST="http://127.0.0.1:9",
        CLEARML_API_ACCESS_KEY="key",
        CLEARML_API_SECRET_KEY="not-printed-secret",
    )
    assert result.returncode == 2
    assert "http://127.0.0.1:9 (CLEARML_API_HOST)" in result.stderr
    assert "not-printed-secret" not in result.stderr + result.stdout
    assert not (sessions / "imported.json").exists()


def test_clearml_list_on_a_fresh_project_is_empty(empty_project: Path) -> None:
    result = run_mlrig("clearml", "list", cwd=empty_project)
    assert result.returncode == 0
    assert "0 offline sessions" in result.stdout


def test_containers_without_an_mlflow_server_say_what_to_start(tmp_path: Path) -> None:
    copy_repository(tmp_path)
    result = run_mlrig("run", "--executor", "containers", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MLflow server" in result.stderr and "mlrig stack up" in result.stderr
    assert "Traceback" not in result.stderr
    store = tmp_path / ".mlrig" / "mlflow.db"
    if store.exists():  # the checks may create the store, but no run may be started
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{store}")
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        assert not client.search_runs(experiments)
    assert not (tmp_path / "outputs").exists()


def test_a_stage_without_its_settings_names_each_one(empty_project: Path) -> None:
    result = run_mlrig("stage", "train@knn", cwd=empty_project, MLRIG_DVC_REMOTE_URL="s3://bucket")
    assert result.returncode == 2
    for name in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in result.stderr
    assert "MLRIG_DVC_REMOTE_URL" not in result.stderr.split("\n", 1)[1]
    assert "Traceback" not in result.stderr


SETTINGS = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "MLRIG_DVC_REMOTE_URL": "s3://bucket/dvc",
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
}


def test_a_stage_needs_its_name_outside_a_clearml_step_pod(empty_project: Path) -> None:
    result = run_mlrig("stage", cwd=empty_project, **SETTINGS)
    assert result.returncode == 2
    assert "Name the stage to run, e.g. mlrig stage train@knn" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_clearml_step_pod_that_cannot_reach_its_remote_says_so(tmp_path: Path) -> None:
    """As a pod the glue starts: an empty workspace, the step's stage and input key set."""
    result = run_mlrig(
        "stage",
        cwd=tmp_path,
        **SETTINGS,
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        MLRIG_STAGE="ingest",
        MLRIG_INPUT_KEY="0" * 64,
        CLEARML_TASK_ID="task-1",
        CLEARML_OFFLINE_MODE="1",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "task task-1's status is not reported" in result.stdout
    assert "s3://bucket/dvc/mlrig/steps/" in result.stderr and "AWS_ENDPOINT_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing written


def test_a_clearml_step_pod_whose_server_is_down_stops_before_its_stage(tmp_path: Path) -> None:
    result = run_mlrig(
        "stage",
        cwd=tmp_path,
        **SETTINGS,
        MLRIG_STAGE="ingest",
        MLRIG_INPUT_KEY="0" * 64,
        CLEARML_TASK_ID="task-1",
        CLEARML_API_HOST="http://127.0.0.1:9",
        CLEARML_API_ACCESS_KEY="key",
        CLEARML_API_SECRET_KEY="secret",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Cannot reach the ClearML API at http://127.0.0.1:9 (CLEARML_API_HOST)" in result.stderr
    assert "the stage did not run" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_no_git_checkout_is_named(tmp_path: Path) -> None:
    copy_repository(tmp_path)
    shutil.rmtree(tmp_path / ".git")
    result = run_mlrig("run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a git repository" in result.stderr and "git init" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_the_run_summary_counts_in_the_singular_for_one() -> None:
    from mlrig.cli.run import run_summary_lines
    from mlrig.run import RunSummary

    summary = RunSummary(
        pipeline_run_id="20261203-120000-abcdef",
        stages_run=["report"],
        stage_seconds={"report": 1.5},
        up_to_date=False,
        runs_recorded=1,
        runs_in_experiment=1,
        champion=None,
        report="reports/report.html",
        mlflow_ui="open http://127.0.0.1:5000",
        log=None,
    )
    text = "\n".join(run_summary_lines(summary))
    assert "Pipeline run 20261203-120000-abcdef: 1 stage ran." in text
    assert "1 experiment run recorded by this pipeline run, 1 run in the experiment" in text
    many = summary.model_copy(update={"stages_run": ["a", "b"], "runs_recorded": 0})
    text = "\n".join(run_summary_lines(many))
    assert "2 stages ran." in text and "0 experiment runs recorded" in text


def test_the_run_summary_says_the_task_and_why_and_the_checks_left_to_stages() -> None:
    from mlrig.cli.run import run_summary_lines
    from mlrig.run import RunSummary

    summary = RunSummary(
        pipeline_run_id="20261203-120000-abcdef",
        stages_run=["ingest"],
        stage_seconds={"ingest": 1.0},
        up_to_date=False,
        runs_recorded=0,
        runs_in_experiment=0,
        champion=None,
        report="reports/report.html",
        mlflow_ui="open http://127.0.0.1:5000",
        log=None,
        task="regression",
        task_reason="target 'visits' holds 13 distinct whole numbers, more than "
        "ingest.max_class_levels = 10 (ingest.task: classification makes them classes)",
        deferred_checks=["validate reads outputs/featurize, made by stage featurize, ..."],
    )

    lines = run_summary_lines(summary)

    assert lines[2] == (
        "Task:      regression: target 'visits' holds 13 distinct whole numbers, more than "
        "ingest.max_class_levels = 10 (ingest.task: classification makes them classes)"
    )
    assert lines[3] == ("Checked:   validate reads outputs/featurize, made by stage featurize, ...")


def test_the_run_summary_gives_each_stage_its_cpu_time_and_peak_rss() -> None:
    from mlrig.cli.run import run_summary_lines
    from mlrig.progress import StageUsage
    from mlrig.run import RunSummary

    summary = RunSummary(
        pipeline_run_id="20261203-120000-abcdef",
        stages_run=["ingest", "train@knn"],
        stage_seconds={"ingest": 12.0, "train@knn": 3.5},
        stage_usage={"ingest": StageUsage(cpu_seconds=10.25, peak_rss_mb=1180.4)},
        up_to_date=False,
        runs_recorded=1,
        runs_in_experiment=1,
        champion=None,
        report="reports/report.html",
        mlflow_ui="open http://127.0.0.1:5000",
        log=None,
    )

    lines = run_summary_lines(summary)

    assert lines[1] == "Stages:    ingest 12.0s, 10.2s CPU, peak 1180 MB"
    assert lines[2] == "           train@knn 3.5s"  # a stage that wrote no usage: its time
    assert '"peak_rss_mb":1180.4' in summary.model_dump_json()


def summary_with(champion: Champion) -> str:
    from mlrig.cli.run import run_summary_lines
    from mlrig.run import RunSummary

    summary = RunSummary(
        pipeline_run_id="20261203-120000-abcdef",
        stages_run=["register"],
        stage_seconds={"register": 3.0},
        up_to_date=False,
        runs_recorded=0,
        runs_in_experiment=6,
        champion=champion,
        report="reports/report.html",
        mlflow_ui="open http://127.0.0.1:5000",
        log=None,
    )
    return "\n".join(run_summary_lines(summary))


def margin(versus: str, value: float, versus_value: float, low: float, high: float) -> Margin:
    return Margin(
        versus=versus,
        metric="f1",
        value=value,
        versus_value=versus_value,
        difference=value - versus_value,
        low=low,
        high=high,
        confidence=0.95,
        resamples=1000,
        rows=143,
        seed=42,
    )


KEPT = Champion(
    experiment="linear_c0_1",
    metric="f1",
    value=0.9776,
    registered_model="mlrig-breast_cancer",
    registered=False,
    is_champion=False,
    version="3",
    previous_version=None,
    reason="f1 0.9776 does not beat champion version 3 (0.9774 on the same 143 test rows) beyond "
    "noise: difference +0.0002, 95% interval -0.0105 to +0.0110 includes zero, so the "
    "difference may be chance",
    versus_champion=margin("champion version 3", 0.9776, 0.9774, -0.0105, 0.0110),
    versus_runner_up=margin("gradient_boosting", 0.9776, 0.9772, -0.0121, 0.0135),
)


def test_the_run_summary_says_why_the_champion_stayed_and_by_how_much() -> None:
    text = summary_with(KEPT)

    assert (
        "Champion:  mlrig-breast_cancer v3 stays @champion; this run's best, linear_c0_1 "
        f"(f1=0.9776): {KEPT.reason}"
    ) in text
    assert (
        "Runner-up: gradient_boosting (f1=0.9772); linear_c0_1 minus it: difference +0.0004, "
        "95% interval -0.0121 to +0.0135"
    ) in text


def test_the_run_summary_names_a_new_champion_and_its_margin() -> None:
    reason = (
        "f1 0.9900 beats champion version 3 (0.9774 on the same 143 test rows): difference "
        "+0.0126, 95% interval +0.0040 to +0.0200, clear of zero and beyond "
        "compare.min_improvement = 0"
    )
    promoted = KEPT.model_copy(
        update={
            "value": 0.99,
            "registered": True,
            "is_champion": True,
            "version": "4",
            "previous_version": "3",
            "reason": reason,
            "versus_runner_up": None,
        }
    )

    text = summary_with(promoted)

    assert f"Champion:  linear_c0_1 (f1=0.9900), mlrig-breast_cancer v4 @champion; {reason}" in text
    assert "Runner-up" not in text  # a single experiment has none


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ingest.target=nope", "builtin:breast_cancer has its target in column 'target'"),
        ("trian.seed=1", "trian: Extra inputs are not permitted; did you mean train?"),
    ],
)  # fmt: skip
def test_a_wrong_override_is_refused_and_not_saved(
    tmp_path: Path, override: str, expected: str
) -> None:
    copy_repository(tmp_path)
    params_before = (tmp_path / "params.yaml").read_bytes()
    result = run_mlrig("run", "-S", override, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "params.yaml").read_bytes() == params_before
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("command", "environment"), [(["report"], {}), (["stage", "train@knn"], SETTINGS)]
)
def test_a_command_that_runs_dvc_is_refused_while_a_pipeline_runs(
    empty_project: Path, command: list[str], environment: dict[str, str]
) -> None:
    """While `mlrig run` holds the checkout, DVC's own lock error would advise deleting
    .dvc/tmp/rwlock under the running stages: the command is refused before dvc starts."""
    from mlrig.run import exclusive_run
    from mlrig.settings import Settings

    with exclusive_run(Settings(project_dir=empty_project)):
        result = run_mlrig(*command, cwd=empty_project, **environment)
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert f"mlrig {command[0]} did not start: another mlrig command (mlrig run, pid " in message
    assert f"is running dvc in {empty_project}" in message
    assert f"Wait for it to finish, then run mlrig {command[0]} again" in message
    assert "Traceback" not in result.stderr
    assert not (empty_project / "reports").exists() and not (empty_project / "outputs").exists()
    assert not (empty_project / ".mlrig/logs").exists()  # dvc never started


def offline_sessions(project: Path, count: int) -> Path:
    """`count` offline session zips, oldest first, the first one imported to a server."""
    import json
    import os

    folder = project / ".mlrig/clearml/offline"
    folder.mkdir(parents=True)
    for number in range(count):
        session = folder / f"offline-{number:03d}.zip"
        session.write_bytes(b"")
        os.utime(session, (1_700_000_000 + number, 1_700_000_000 + number))
    (folder / "imported.json").write_text(json.dumps({"offline-000": "task-on-server"}))
    return folder


def test_a_run_keeps_the_newest_offline_sessions_and_says_how_to_import(tmp_path: Path) -> None:
    """A project whose pipeline has no stage: the run is quick, the sessions are as many."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("{}  # no step, no section\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=tmp_path, check=True, env=clean_environment(tmp_path))
    folder = offline_sessions(tmp_path, 5)

    result = run_mlrig("run", "--no-push", cwd=tmp_path, MLRIG_CLEARML_KEEP_SESSIONS="3")

    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(path.name for path in folder.glob("*.zip")) == [
        "offline-002.zip",
        "offline-003.zip",
        "offline-004.zip",
    ]
    message = " ".join(result.stderr.split())
    assert "Dropped the 2 oldest offline ClearML sessions, 1 of them never imported" in message
    assert "kept the newest 3 (MLRIG_CLEARML_KEEP_SESSIONS" in message
    assert "run mlrig clearml import" in message
    again = run_mlrig("run", "--no-push", cwd=tmp_path, MLRIG_CLEARML_KEEP_SESSIONS="3")
    assert again.returncode == 0 and "Dropped" not in again.stderr


def test_clearml_prune_keeps_the_newest(empty_project: Path) -> None:
    folder = offline_sessions(empty_project, 4)

    result = run_mlrig("clearml", "prune", "--keep", "1", cwd=empty_project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [path.name for path in folder.glob("*.zip")] == ["offline-003.zip"]
    assert "Dropped the 3 oldest offline ClearML sessions, 2 of them never" in result.stdout
    # an imported session's server id stays: its link and values still resolve
    assert "task-on-server" in (folder / "imported.json").read_text()
    listed = run_mlrig("clearml", "list", cwd=empty_project)
    assert "1 offline session\n" in listed.stdout
    nothing = run_mlrig("clearml", "prune", cwd=empty_project)
    assert "Nothing to drop: 1 offline session." in nothing.stdout
