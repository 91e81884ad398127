"""A live ClearML server and its agents: submit, follow to the end, resubmit, change data.

Runs only where CLEARML_API_HOST (and its keys) point at a server whose queue
MLRIG_CLEARML_QUEUE an agent serves (the chart's glue), with the DVC remote the agent's pods use
(MLRIG_DVC_REMOTE_URL, AWS_ENDPOINT_URL and keys) and the MLflow server they log to
(MLFLOW_TRACKING_URI). Step images come from MLRIG_LIVE_IMAGES (digest files of
`mlrig images push --digests`, separated by spaces) when set, else their local content tags.
No ClearML server can run on the machines these tests were written on (it needs MongoDB and
Elasticsearch): they are skipped there, even in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlrig.dvc.dag import stage_graph
from tests.support.project import clean_environment, copy_repository

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (os.environ.get("CLEARML_API_HOST") and os.environ.get("MLRIG_DVC_REMOTE_URL")),
        reason="no ClearML server and agent here (set CLEARML_API_HOST, its keys, "
        "MLRIG_CLEARML_QUEUE and MLRIG_DVC_REMOTE_URL to run these against one)",
    ),
]
LIVE_SETTINGS = (
    "CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY", "MLRIG_CLEARML_QUEUE", "MLRIG_CLEARML_SERVICES_QUEUE",
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
)  # fmt: skip


def submit(project: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`mlrig run --executor clearml --wait --json` with the live settings; its summary."""
    images = os.environ.get("MLRIG_LIVE_IMAGES", "").split()
    live = {name: os.environ[name] for name in LIVE_SETTINGS if os.environ.get(name)}
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run", "--executor", "clearml", "--wait", "--json",
         *(word for path in images for word in ("--images", path))],
        cwd=project, env=clean_environment(project) | live,
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(result.stdout.splitlines()[0])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live") / "project"
    copy_repository(root)
    remote = ["remote", "add", "--local", "--default", "live", os.environ["MLRIG_DVC_REMOTE_URL"]]
    subprocess.run([sys.executable, "-m", "dvc", *remote], cwd=root, check=True)
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        modify = ["remote", "modify", "--local", "live", "endpointurl", endpoint]
        subprocess.run([sys.executable, "-m", "dvc", *modify], cwd=root, check=True)
    return root


def test_a_submission_runs_every_stage_on_the_agents_and_the_checkout_gets_the_results(
    project: Path,
) -> None:
    result, summary = submit(project)
    stages = set(stage_graph(project))
    assert summary["pipeline_id"] and set(summary["submitted"]) | set(summary["recorded"]) == stages
    for stage in summary["submitted"]:
        assert f"{stage}: completed" in result.stderr, result.stderr
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == stages
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=project,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert "up to date" in status.stdout
    assert (project / "reports" / "report.md").is_file()
    assert_runs_under_parent_run(summary["parent_run_id"], summary["submitted"])


def assert_runs_under_parent_run(parent_run_id: str, submitted: list[str]) -> None:
    """The submission's parent run ended FINISHED (--wait), and each train step that ran is
    a child of it, in the MLflow server the pods log to."""
    from mlflow import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent = client.get_run(parent_run_id)
    assert parent.info.status == "FINISHED"
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    children = client.search_runs([parent.info.experiment_id], query)
    trained = {stage for stage in submitted if stage.startswith("train@")}
    assert {run.info.run_name for run in children} >= trained


def test_a_second_submission_submits_nothing(project: Path) -> None:
    _, summary = submit(project)
    assert summary["pipeline_id"] is None and summary["submitted"] == []
    assert set(summary["recorded"]) == set(stage_graph(project))


def test_a_changed_param_runs_only_what_reads_it_and_what_follows(project: Path) -> None:
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("min_rows: 20", "min_rows: 19"))
    subprocess.run(["git", "commit", "-qam", "validate.min_rows 19"], cwd=project, check=True)
    _, summary = submit(project)
    assert "ingest" in summary["recorded"] and "validate" in summary["submitted"]
