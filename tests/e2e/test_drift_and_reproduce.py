"""After the registry: `mlrig drift` against the real champion's training split, and `mlrig
reproduce` of the champion after two further commits, in a scratch copy of the repository
(local MLflow SQLite store and DVC remote, as a user's first run makes them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlrig.stacks.local.processes import free_port
from tests.support.project import FEW_EXPERIMENTS, clean_environment, copy_repository, run_mlrig
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

MODEL = "mlrig-breast_cancer"
CHAMPION = f"models:/{MODEL}@champion"
SHIFTED = {"mean radius", "worst texture"}
IDENTITY = ["-c", "user.name=test", "-c", "user.email=test@mlrig.invalid"]


def git(root: Path, *arguments: str) -> None:
    subprocess.run(["git", *IDENTITY, *arguments], cwd=root, check=True, capture_output=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The pipeline run once, then two commits: its dvc.lock, and a change of no stage."""
    root = tmp_path_factory.mktemp("clone") / "project"
    copy_repository(root, FEW_EXPERIMENTS)
    ran = run_mlrig("run", cwd=root)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    git(root, "commit", "-qam", "the pipeline's dvc.lock")
    with (root / "README.md").open("a") as readme:
        readme.write("\nA line no stage reads.\n")
    git(root, "commit", "-qam", "a change of no stage")
    yield root


def client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / '.mlrig/mlflow.db'}")


def registry_state(root: Path) -> tuple[list[tuple[str, str]], int]:
    """The model's versions with their runs, and the runs of the training experiment."""
    store = client(root)
    versions = sorted((v.version, v.run_id) for v in store.search_model_versions(f"name='{MODEL}'"))
    experiment = store.get_experiment_by_name("mlrig")
    return versions, len(store.search_runs([experiment.experiment_id], max_results=1000))


def dvc(root: Path, *arguments: str) -> str:
    """`dvc ARGS` as a user's shell in `root` runs it; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *arguments],
        cwd=root,
        env=clean_environment(root),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def new_data(root: Path, folder: Path, shift: bool) -> Path:
    """The test split's features as new data; with `shift`, two columns moved."""
    table = pd.read_parquet(root / "outputs/split/test.parquet").drop(columns=["target"])
    if shift:
        table["mean radius"] = table["mean radius"] * 1.6
        table["worst texture"] = table["worst texture"] + 10
    path = folder / ("shifted.csv" if shift else "unchanged.csv")
    table.to_csv(path, index=False)
    return path


def test_reproduce_of_the_champion_after_two_commits_gives_its_metrics_back(project: Path) -> None:
    before = registry_state(project)

    done = run_mlrig("reproduce", CHAMPION, "--json", cwd=project)

    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["reproduced"] is True
    links = {link["name"]: link["state"] for link in result["links"]}
    assert links == {
        "commit": "ok", "data": "ok", "image": "ok", "experiment": "ok", "params": "ok"
    }  # fmt: skip
    compared = {item["what"]: item for item in result["compared"]}
    assert {"f1", "accuracy", "roc_auc"} <= set(compared)
    assert all(item["equal"] for item in compared.values())
    registered_f1 = (
        client(project)
        .get_run(client(project).get_model_version_by_alias(MODEL, "champion").run_id)
        .data.metrics["f1"]
    )
    assert float(compared["f1"]["reproduced"]) == pytest.approx(registered_f1, rel=1e-9)
    assert "throwaway" in result["rerun_tracking"]
    # the registry and the experiment are as they were; the scratch worktree is gone
    assert registry_state(project) == before
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=project, capture_output=True, text=True, check=True
    )
    assert len(worktrees.stdout.splitlines()) == 1


def test_reproduce_says_which_link_is_missing(project: Path) -> None:
    store = client(project)
    run_id = store.get_model_version_by_alias(MODEL, "champion").run_id
    recorded = store.get_run(run_id).data.tags["mlrig.git_commit"]
    store.set_tag(run_id, "mlrig.git_commit", "0" * 40)
    try:
        done = run_mlrig("reproduce", CHAMPION, cwd=project)
    finally:
        store.set_tag(run_id, "mlrig.git_commit", recorded)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "NOT reproduced" in done.stdout
    assert f"commit: missing ({'0' * 12} is not in this repository" in done.stdout
    assert "Traceback" not in done.stderr


def test_drift_flags_the_shifted_columns_and_not_the_others(project: Path, tmp_path: Path) -> None:
    done = run_mlrig(
        "drift", "--data", str(new_data(project, tmp_path, True)), "--json", cwd=project
    )

    assert done.returncode == 0, done.stdout + done.stderr  # 2 of 30 columns: under 0.5
    result = json.loads(done.stdout)
    drifted = {column["column"] for column in result["columns"] if column["drifted"]}
    assert drifted == SHIFTED
    assert len(result["columns"]) == 30
    assert all(column["method"] == "K-S p_value" for column in result["columns"])
    assert result["share"] == pytest.approx(2 / 30)
    # beside the main report, and no change of the report stage for DVC
    assert result["report"].startswith(f"reports/drift/{MODEL}-v")
    assert (project / result["report"]).is_file()
    assert json.loads(dvc(project, "status", "--json", "report")) == {}
    version = client(project).get_model_version_by_alias(MODEL, "champion")
    assert float(version.tags["mlrig.drift.share"]) == pytest.approx(2 / 30, abs=1e-4)
    drift_run = client(project).get_run(version.tags["mlrig.drift.run_id"])
    assert drift_run.data.metrics["drift_share"] == pytest.approx(2 / 30)


def test_drift_exits_1_when_the_share_reaches_the_threshold(project: Path, tmp_path: Path) -> None:
    params = project / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("  threshold: 0.5", "  threshold: 0.05"))
    try:
        shifted = run_mlrig("drift", "--data", str(new_data(project, tmp_path, True)), cwd=project)
        unchanged = run_mlrig(
            "drift", "--data", str(new_data(project, tmp_path, False)), cwd=project
        )
    finally:
        params.write_text(original)

    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    assert "DRIFTED: 2 of 30 columns drifted" in shifted.stdout
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "no drift: 0 of 30 columns drifted" in unchanged.stdout


def test_drift_names_a_missing_column_of_the_new_data(project: Path, tmp_path: Path) -> None:
    data = new_data(project, tmp_path, False)
    pd.read_csv(data).drop(columns=["mean area"]).to_csv(data, index=False)

    done = run_mlrig("drift", "--data", str(data), cwd=project)

    assert done.returncode == 2
    assert "lacks the column(s) mean area" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_report_lists_the_champions_drift_checks_and_links_them(
    project: Path, tmp_path: Path
) -> None:
    done = run_mlrig(
        "drift", "--data", str(new_data(project, tmp_path, True)), "--json", cwd=project
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check = json.loads(done.stdout)

    # the report stage depends on no MLflow state: a check shows when the stage runs again
    dvc(project, "repro", "--force", "--single-item", "report")

    drift = (project / "reports/report.md").read_text().split("\n## Drift\n")[1]
    rows = [line for line in drift.split("\n## ")[0].splitlines() if line.startswith("| 20")]
    link = check["report"].removeprefix("reports/")  # relative to the report
    assert f"| [{link}]({link}) |" in rows[0]  # the newest check first
    assert "| 0.0667 | 0.5 | no drift |" in rows[0]
    assert (project / "reports" / link).is_file()
    assert json.loads(dvc(project, "status", "--json", "report")) == {}


def test_drift_reads_what_the_served_champion_saw_from_its_request_log(
    project: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    """The champion served with request logging to S3 (a real SeaweedFS), the shifted rows
    sent to it in a few requests, the server stopped with SIGTERM, then `mlrig drift --data
    s3://<bucket>/<prefix>/` on what it logged: the same two columns drift."""
    s3_server.create_bucket("mlrig-requests")
    prefix = f"s3://mlrig-requests/e2e-{uuid.uuid4().hex[:8]}"
    rows = pd.read_csv(new_data(project, tmp_path, True)).to_dict(orient="records")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlrig", "serve", "--port", str(port)],
        cwd=project,
        env=clean_environment(project) | s3_server.env() | {"MLRIG_SERVE_REQUEST_LOG": prefix},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_served(url, server)
        for start in range(0, len(rows), 50):
            body = json.dumps({"dataframe_records": rows[start : start + 50]}).encode()
            request = urllib.request.Request(
                f"{url}/invocations", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)

    done = run_mlrig(
        "drift", "--data", prefix + "/", "--json", "--no-record", cwd=project, **s3_server.env()
    )

    assert done.returncode == 0, done.stdout + done.stderr + output
    result = json.loads(done.stdout)
    assert result["rows"] == len(rows)
    assert {column["column"] for column in result["columns"] if column["drifted"]} == SHIFTED
    assert result["data"] == prefix + "/"
    assert result["mlflow_run_id"] is None  # --no-record: MLflow only read


def wait_until_served(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[0]
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the champion was not served in time")
