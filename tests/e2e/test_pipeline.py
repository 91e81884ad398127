"""The whole pipeline, run as a user runs it, in a scratch copy of the repository.

The tests share one copy and run in file order: the first run, a no-op re-run, a one-experiment
change, bad inputs that must change nothing, then the champion served by MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlrig.stacks.local.processes import free_port
from tests.support.project import REPO_ROOT, clean_environment, copy_repository

pytestmark = pytest.mark.e2e

EXPERIMENTS = ["linear_c0_1", "linear_c10", "random_forest", "gradient_boosting", "knn", "baseline"]
MODEL_NAME = "mlrig-breast_cancer"


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mlrig", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"mlrig {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def dvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(f"sqlite:///{self.root / '.mlrig/mlflow.db'}")

    def runs(self) -> list:
        client = self.client()
        experiment = client.get_experiment_by_name("mlrig")
        return client.search_runs([experiment.experiment_id], max_results=1000)

    def versions(self, name: str = MODEL_NAME) -> list:
        return self.client().search_model_versions(f"name = '{name}'")


def clean_checkout() -> bool:
    """True when the repository has nothing uncommitted: a clone of it is this checkout."""
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    return status.returncode == 0 and not status.stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("clone")
    if clean_checkout():  # a real clone: the same commits, as a new user's
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(root)], check=True)
    else:  # the work in progress, committed in a scratch repository
        copy_repository(root)
    env = clean_environment(root)
    yield Project(root=root, env=env)


@pytest.fixture(scope="module")
def first_run(project: Project) -> subprocess.CompletedProcess[str]:
    return project.run("run", check=True)


def read_task_json(session_zip: Path) -> dict:
    with zipfile.ZipFile(session_zip) as archive:
        return json.loads(archive.read("task.json"))


def test_first_run_prints_where_everything_is(project: Project, first_run) -> None:
    out = first_run.stdout
    assert "17 stages ran" in out
    assert f"Report:    {project.root / 'reports/report.html'}" in out
    assert "6 experiment runs recorded by this pipeline run" in out
    assert f"{MODEL_NAME} v1 @champion" in out
    assert "mlflow ui --backend-store-uri sqlite:///.mlrig/mlflow.db" in out


def test_a_fresh_clones_first_run_leaves_dvc_lock_as_committed(project: Project, first_run) -> None:
    """Every output is what the committed inputs decide (canonical model files, run ids in
    MLflow, a report with no time of its own): the run writes the lock that was committed."""
    if not clean_checkout():
        pytest.skip("the checkout has uncommitted changes: its dvc.lock cannot match them yet")
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=project.root, capture_output=True, text=True)
    assert diff.stdout == "", diff.stdout[:3000]
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project.root, capture_output=True, text=True
    )
    assert status.stdout == "", status.stdout


def test_the_printed_mlflow_ui_command_opens_the_ui_without_uv(project: Project, first_run) -> None:
    """As printed, in a shell whose PATH has no uv and no venv (a machine without uv)."""
    command = first_run.stdout.split("MLflow UI: ", 1)[1].splitlines()[0]
    port = free_port()
    assert "--port 5000" in command
    shell = subprocess.Popen(
        ["bash", "-c", command.replace("--port 5000", f"--port {port}")],
        env=project.env | {"PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert shell.poll() is None, shell.stderr.read() if shell.stderr else ""
                assert time.monotonic() < deadline, f"{command} did not answer in 120 s"
                time.sleep(1)
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        try:
            shell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=30)


def test_runs_carry_params_metrics_models_and_lineage(project: Project, first_run) -> None:
    runs = project.runs()
    parents = [run for run in runs if run.data.tags["mlrig.step"] == "pipeline"]
    children = [run for run in runs if run.data.tags["mlrig.step"] == "train"]
    assert len(parents) == 1 and len(children) == len(EXPERIMENTS)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project.root, capture_output=True, text=True, check=True
    ).stdout.strip()
    from mlrig.lineage import file_md5

    train_md5 = file_md5(project.root / "outputs/split/train.parquet")
    for run in children:
        tags, data = run.data.tags, run.data
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["mlrig.git_commit"] == commit
        assert tags["mlrig.data.md5"] == train_md5
        assert tags["mlrig.pipeline_run_id"] == parent.data.tags["mlrig.pipeline_run_id"]
        assert tags["mlrig.clearml_task_id"].startswith("offline-")
        assert tags["mlrig.clearml_task_id.evaluate"].startswith("offline-")
        assert data.params["family"] and data.params["experiment"] in EXPERIMENTS
        assert {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"} <= set(data.metrics)
        assert 0.0 <= data.metrics["f1"] <= 1.0
    models = project.client().search_logged_models([children[0].info.experiment_id])
    assert {model.source_run_id for model in models} == {run.info.run_id for run in children}
    assert all(model.model_id for model in models)


def test_champion_alias_points_at_the_best_experiment(project: Project, first_run) -> None:
    champion = json.loads((project.root / "outputs/register/champion.json").read_text())
    best = max(
        EXPERIMENTS,
        key=lambda name: json.loads(
            (project.root / f"outputs/evaluate/{name}/metrics.json").read_text()
        )["f1"],
    )
    assert champion["experiment"] == best
    version = project.client().get_model_version_by_alias(MODEL_NAME, "champion")
    output = json.loads((project.root / f"outputs/train/{best}/run.json").read_text())
    assert version.tags["mlrig.model.md5"] == output["model_md5"]
    assert project.client().get_run(version.run_id).data.tags["mlrig.experiment"] == best
    assert len(project.versions()) == 1


def test_report_compares_every_experiment(project: Project, first_run) -> None:
    html = (project.root / "reports/report.html").read_text()
    markdown = (project.root / "reports/report.md").read_text()
    for name in EXPERIMENTS:
        assert name in html and name in markdown
    assert html.count("data:image/png;base64,") >= 3
    assert "<img" in html and 'src="http' not in html
    champion = json.loads((project.root / "outputs/register/champion.json").read_text())
    assert champion["reason"] in markdown
    for run in project.runs():  # a run's ids are MLflow's: the same inputs, the same report
        assert run.info.run_id not in html + markdown
    # the comparison in ClearML: the values each evaluate task's session holds equal MLflow's
    clearml = markdown.split("## ClearML", 1)[1].split("## Plots", 1)[0]
    rows = [line for line in clearml.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(EXPERIMENTS)
    assert all(row.endswith("| yes |") and "| offline session |" in row for row in rows), rows
    report_session = next(
        path
        for path in (project.root / ".mlrig/clearml/offline").glob("offline-*.zip")
        if read_task_json(path)["name"] == "report"
    )
    with zipfile.ZipFile(report_session) as archive:
        events = [
            e for line in archive.read("metrics.jsonl").splitlines() for e in json.loads(line)
        ]
    plots = {(event["metric"], event["type"]) for event in events}
    assert ("experiments", "plot") in plots  # the experiments table, as ClearML shows tables
    assert {"metrics", "margins", "roc"} <= {metric for metric, _ in plots}


def test_clearml_sessions_link_back_to_mlflow(project: Project, first_run) -> None:
    sessions = sorted((project.root / ".mlrig/clearml/offline").glob("offline-*.zip"))
    assert len(sessions) == 17  # ingest, validate, split, 6 train, 6 evaluate, register, report
    runs = {
        run.data.tags["mlrig.experiment"]: run
        for run in project.runs()
        if run.data.tags["mlrig.step"] == "train"
    }
    tasks = [read_task_json(session) for session in sessions]
    for step in ("train", "evaluate"):
        step_tasks = {task["name"]: task for task in tasks if f"step:{step}" in task["tags"]}
        assert sorted(step_tasks) == sorted(f"{step}@{name}" for name in EXPERIMENTS)
        for name, run in runs.items():
            task = step_tasks[f"{step}@{name}"]
            linked = task["hyperparams"]["properties"]["mlflow_run_id"]["value"]
            assert linked == run.info.run_id
            tag = "mlrig.clearml_task_id" + ("" if step == "train" else ".evaluate")
            assert run.data.tags[tag] == task["id"]
    parent = next(run for run in project.runs() if run.data.tags["mlrig.step"] == "pipeline")
    for name in ("ingest", "validate", "split", "register", "report"):
        task = next(task for task in tasks if task["name"] == name)
        linked = task["hyperparams"]["properties"]["mlflow_run_id"]["value"]
        assert linked == parent.info.run_id, name
    ingest = next(task for task in tasks if task["name"] == "ingest")
    assert ingest["hyperparams"]["params"]["source"]["value"] == "builtin:breast_cancer"
    listed = project.run("clearml", "list", "--json", check=True)
    assert len(json.loads(listed.stdout)) == 17


def test_dvc_sees_a_clean_tracked_pipeline(project: Project, first_run) -> None:
    assert "up to date" in project.dvc("status").stdout
    assert "in sync" in project.dvc("status", "--cloud").stdout
    metrics = json.loads(project.dvc("metrics", "show", "--json").stdout)
    assert "f1" in json.dumps(metrics)
    project.dvc("plots", "show", "-o", str(project.root / ".mlrig/dvc_plots"))
    assert (project.root / ".mlrig/dvc_plots/index.html").is_file()


def test_mlflow_cli_lists_the_runs(project: Project, first_run) -> None:
    experiment_id = project.runs()[0].info.experiment_id
    listed = subprocess.run(
        [sys.executable, "-m", "mlflow", "runs", "list", "--experiment-id", experiment_id],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=True,
        env=project.env | {"MLFLOW_TRACKING_URI": "sqlite:///.mlrig/mlflow.db"},
    )
    for name in EXPERIMENTS:
        assert f"train@{name}" in listed.stdout


def test_compare_prints_the_table(project: Project, first_run) -> None:
    rows = json.loads(project.run("compare", "--json", check=True).stdout)
    assert [row["experiment"] for row in rows] == EXPERIMENTS
    assert sum(row["champion"] for row in rows) == 1
    assert "random_forest" in project.run("compare", check=True).stdout


def test_second_run_reruns_nothing(project: Project, first_run) -> None:
    before = len(project.runs())
    second = project.run("run", "--json", check=True)
    summary = json.loads(second.stdout)
    assert summary["up_to_date"] is True and summary["stages_run"] == []
    assert len(project.runs()) == before


def test_a_changed_model_default_re_runs_the_stages(project: Project, first_run) -> None:
    """A step's code is a dep of every stage that runs it: a model default in train's
    params.py re-runs train's stages (its folder) and evaluate's (which imports train)."""
    params_py = project.root / "steps" / "train" / "params.py"
    original = params_py.read_text()
    edited = original.replace(
        "min_samples_leaf: int = Field(1, ge=1)", "min_samples_leaf: int = Field(5, ge=1)"
    )
    assert edited != original
    params_py.write_text(edited)
    try:
        status = json.loads(project.dvc("status", "--json").stdout)
    finally:
        params_py.write_text(original)
    changed = {
        (stage, dep)
        for stage, entries in status.items()
        for entry in entries
        if isinstance(entry, dict)
        for dep in entry.get("changed deps", {})
    }
    assert {(f"train@{name}", "steps/train") for name in EXPERIMENTS} <= changed
    assert {(f"evaluate@{name}", "steps/train/params.py") for name in EXPERIMENTS} <= changed
    assert "up to date" in project.dvc("status").stdout


def test_a_change_to_the_store_after_a_run_is_seen_by_the_next(project: Project, first_run) -> None:
    """An up-to-date run reuses the last check of the SQLite store only while it is unchanged."""
    assert (project.root / ".mlrig" / "checked-store.json").is_file()
    project.client().delete_registered_model_alias(MODEL_NAME, "champion")
    summary = json.loads(project.run("run", "--json", check=True).stdout)
    assert summary["stages_run"][0] == "register"
    assert not any(stage.startswith("train@") for stage in summary["stages_run"])
    restored = project.client().get_model_version_by_alias(MODEL_NAME, "champion")
    assert summary["champion"]["version"] == str(restored.version)


def test_changing_one_experiment_reruns_only_it(project: Project, first_run) -> None:
    params_before = (project.root / "params.yaml").read_text()
    changed = project.run(
        "run", "--json", "-S", "train.experiments.knn.params.n_neighbors=5", check=True
    )
    summary = json.loads(changed.stdout)
    assert sorted(summary["stages_run"]) == ["evaluate@knn", "register", "report", "train@knn"]
    assert summary["runs_recorded"] == 1
    params_after = (project.root / "params.yaml").read_text()
    assert "n_neighbors: 5" in params_after
    assert params_after.count("#") == params_before.count("#")  # comments kept


BAD_INPUTS = {
    "missing file": ("-S", "ingest.source=data/nope.csv", None, "does not exist"),
    "empty file": ("-S", "ingest.source=data/empty.csv", "", "is empty"),
    "missing target": ("-S", "ingest.source=data/no_target.csv", "a,b\n1,2\n3,4\n", "'target'"),
    # text with every value distinct is an ID: no feature, refused until ingest.columns drops it
    "an ID column": (
        "-S",
        "ingest.source=data/ids.csv",
        "customer,size,target\n" + "".join(f"C{i:04d},{i},{i % 2}\n" for i in range(40)),
        "text columns: customer (40 distinct values)",
    ),
    "one class": (
        "-S",
        "ingest.source=data/one_class.csv",
        "a,target\n" + "".join(f"{i},yes\n" for i in range(40)),
        "distinct value",
    ),
    "too many missing": (
        "-S",
        "ingest.source=data/holes.csv",
        "a,b,target\n" + "".join(f"{i},{'' if i % 2 else i},{i % 2}\n" for i in range(40)),
        "b (50%)",
    ),
    "unknown family": ("-S", "train.experiments.knn.family=catboost", None, "catboost"),
    "wrong param type": (
        "-S",
        "train.experiments.knn.params.n_neighbors=many",
        None,
        "n_neighbors",
    ),
    "unknown builtin": ("-S", "ingest.source=builtin:iris", None, "builtin:iris"),
    "infinite feature": (
        "-S",
        "ingest.source=data/spiky.csv",
        "a,b,target\n" + "".join(f"{i},{'inf' if i < 3 else i},{i % 2}\n" for i in range(40)),
        "b (3 rows)",
    ),
    "infinite target": (
        "-S",
        "ingest.source=data/spiky_target.csv",
        "a,target\n" + "".join(f"{i},{'-inf' if i == 7 else i / 3}\n" for i in range(40)),
        "target target (1 row)",
    ),
    # DVC watches data/ only: a file elsewhere would change unseen, so it is refused
    "absolute path outside data/": (
        "-S",
        "ingest.source=/srv/exports/table.csv",
        None,
        "dvc import-url /srv/exports/table.csv data/table.csv",
    ),
    "relative path outside data/": (
        "-S",
        "ingest.source=exports/table.csv",
        None,
        "cp exports/table.csv data/",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_and_changes_nothing(project: Project, first_run, case: str) -> None:
    flag, override, content, expected = BAD_INPUTS[case]
    if content is not None:
        path = project.root / override.split("=", 1)[1]
        path.write_text(content)
    params_before = (project.root / "params.yaml").read_bytes()
    runs_before, versions_before = len(project.runs()), len(project.versions())
    result = project.run("run", flag, override)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert (project.root / "params.yaml").read_bytes() == params_before
    assert len(project.runs()) == runs_before
    assert len(project.versions()) == versions_before
    if content is not None:
        path.unlink()
    assert "up to date" in project.dvc("status").stdout


def test_a_second_run_on_the_same_checkout_is_refused(project: Project, first_run) -> None:
    import fcntl

    lock_path = project.root / ".mlrig/run.lock"
    with lock_path.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = project.run("run")
    assert result.returncode == 1
    assert "Another pipeline run" in result.stderr


def test_mlflow_serves_the_champion(project: Project, first_run) -> None:
    import pandas as pd

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL_NAME}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=project.root,
        env=project.env | {"MLFLOW_TRACKING_URI": "sqlite:///.mlrig/mlflow.db"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        test_table = pd.read_parquet(project.root / "outputs/split/test.parquet").head(10)
        features = test_table.drop(columns=["target"])
        body = json.dumps({"dataframe_split": features.to_dict(orient="split") | {"index": None}})
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations",
                    data=body.encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    predictions = json.loads(response.read())["predictions"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "mlflow models serve did not answer in 120 s"
                time.sleep(1)
        assert len(predictions) == 10
        assert set(predictions) <= {0, 1}
    finally:
        server.terminate()
        server.wait(timeout=30)


def locked_file(project: Project, stage: str, suffix: str = "") -> tuple[str, str]:
    """A file of a stage's first output ending in `suffix`, as (path, md5) from dvc.lock."""
    import yaml

    out = yaml.safe_load((project.root / "dvc.lock").read_text())["stages"][stage]["outs"][0]
    if not out["md5"].endswith(".dir"):
        return out["path"], out["md5"]
    listing = json.loads(cache_file(project.root / ".dvc/cache", out["md5"]).read_text())
    entry = next(entry for entry in listing if entry["relpath"].endswith(suffix))
    return f"{out['path']}/{entry['relpath']}", entry["md5"]


def cache_file(store: Path, md5: str) -> Path:
    return store / "files" / "md5" / md5[:2] / md5[2:]


def corrupt(path: Path) -> None:
    """Change the first bytes as bit rot would: same size, and a cache file stays read-only
    (DVC trusts a read-only cache file without hashing it; a writable one it hashes)."""
    mode = path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    path.chmod(mode)


def md5_of(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_corrupted_cache_object_is_named_and_restored_from_the_remote(
    project: Project, first_run
) -> None:
    """The workspace copy is gone (a fresh checkout), the cache's copy is corrupted: DVC would
    check it out and call it up to date. doctor names it; the run pulls the remote's copy."""
    path, md5 = locked_file(project, "evaluate@knn")
    (project.root / path).unlink()
    corrupt(cache_file(project.root / ".dvc/cache", md5))

    doctor = project.run("doctor")
    assert f"✗ data: the DVC cache's copy of {path} (stage evaluate@knn)" in doctor.stdout
    assert "mlrig run puts each right" in doctor.stdout
    summary = json.loads(project.run("run", "--json", check=True).stdout)

    assert summary["repaired"] == [
        f"the DVC cache's copy of {path} (stage evaluate@knn) does not match its hash in "
        "dvc.lock: restored from the DVC remote"
    ]
    assert summary["stages_run"] == []
    assert md5_of(project.root / path) == md5
    assert md5_of(cache_file(project.root / ".dvc/cache", md5)) == md5
    assert "✓ data:" in project.run("doctor").stdout


def test_a_corrupted_output_the_remote_lacks_is_computed_again(project: Project, first_run) -> None:
    """Cache and workspace copies corrupted alike (bit rot keeps size and mtime) and the remote
    lacks the object: the stage runs again and the cache ends with the right bytes."""
    path, md5 = locked_file(project, "split", ".parquet")  # meta.json is ingest's too
    workspace = project.root / path
    stat = workspace.stat()
    corrupt(workspace)
    os.utime(workspace, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    corrupt(cache_file(project.root / ".dvc/cache", md5))
    cache_file(project.root / ".mlrig/dvc-remote", md5).unlink()
    assert "up to date" in project.dvc("status").stdout  # what DVC alone concludes

    output = project.run("run", check=True).stdout
    assert f"Corrupted: {path} (stage split) does not match its hash" in output
    assert "Pipeline run" in output and "split" in output.split("Stages:")[1]
    assert md5_of(workspace) == md5  # the same seed gives the same split
    assert md5_of(cache_file(project.root / ".dvc/cache", md5)) == md5


def test_dvc_pull_restores_outputs_from_the_remote(project: Project, first_run) -> None:
    shutil.rmtree(project.root / "outputs")
    shutil.rmtree(project.root / ".dvc/cache")
    project.dvc("pull")
    assert "up to date" in project.dvc("status").stdout
    assert (project.root / "outputs/register/champion.json").is_file()


def test_regression_dataset_runs_end_to_end(project: Project, first_run) -> None:
    result = project.run("run", "--json", "-S", "ingest.source=builtin:diabetes", check=True)
    summary = json.loads(result.stdout)
    assert summary["champion"]["metric"] == "rmse"
    assert summary["champion"]["registered_model"] == "mlrig-diabetes"
    assert summary["runs_recorded"] == len(EXPERIMENTS)
    metrics = json.loads((project.root / "outputs/evaluate/linear_c10/metrics.json").read_text())
    assert set(metrics) == {"rmse", "mae", "r2"}
    version = project.client().get_model_version_by_alias("mlrig-diabetes", "champion")
    assert version.tags["mlrig.experiment"] == summary["champion"]["experiment"]
    report = (project.root / "reports/report.md").read_text()
    assert "rmse" in report and "roc_auc" not in report


def test_a_new_tracking_store_gets_every_run(project: Project, first_run, tmp_path: Path) -> None:
    """Outputs cached by DVC but recorded in another MLflow store are made again for this one."""
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'other.db'}"
    other = Project(root=project.root, env=project.env | {"MLFLOW_TRACKING_URI": store})
    runs_before = len(project.runs())
    summary = json.loads(other.run("run", "--json", check=True).stdout)
    assert {f"train@{name}" for name in EXPERIMENTS} <= set(summary["stages_run"])
    assert summary["runs_recorded"] == len(EXPERIMENTS)
    version = MlflowClient(store).get_model_version_by_alias(
        summary["champion"]["registered_model"], "champion"
    )
    assert str(version.version) == "1"
    assert version.tags["mlrig.experiment"] == summary["champion"]["experiment"]
    # registered from a run of this store, made again for it
    assert MlflowClient(store).get_run(version.run_id).data.tags["mlrig.step"] == "train"
    assert len(project.runs()) == runs_before  # the first store is left as it was
    again = json.loads(other.run("run", "--json", check=True).stdout)
    assert again["up_to_date"] is True
