"""A table as a team has it, run end to end: a CSV under data/ with a text label, city names, a
boolean, dates and gaps (and an ID column), through `mlrig run`, its champion served by
`mlflow models serve` scoring raw strings, booleans and dates; then a team's own step between
ingest and validate, whose table the checks follow.

The tests share one scratch copy and run in file order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlrig.errors import EXIT_BAD_INPUT
from mlrig.stacks.local.processes import free_port
from tests.support.project import clean_environment, copy_repository, run_mlrig
from tests.support.tables import mixed_table

pytestmark = pytest.mark.e2e

# a linear model (one-hot), a forest (ordinal codes) and boosting (native categories)
EXPERIMENTS = ("linear_c0_1", "random_forest", "gradient_boosting")
SOURCE = ("-S", "ingest.source=data/customers.csv", "-S", "ingest.target=outcome")
MODEL_NAME = "mlrig-customers"
ROWS = 300


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    copy_repository(root, EXPERIMENTS)
    mixed_table(rows=ROWS).to_csv(root / "data" / "customers.csv", index=False)
    return root


def mlflow_client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / '.mlrig/mlflow.db'}")


def test_an_id_column_stops_the_run_before_anything_changes(project: Path) -> None:
    params = (project / "params.yaml").read_bytes()

    result = run_mlrig("run", "--no-push", *SOURCE, cwd=project)

    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert "text columns: customer_id (300 distinct values)" in result.stderr
    assert "ingest.columns: {customer_id: drop}" in result.stderr
    assert "Traceback" not in result.stderr
    assert (project / "params.yaml").read_bytes() == params
    assert not (project / "outputs").exists()
    assert not (project / ".mlrig/mlflow.db").exists()  # no MLflow run


@pytest.fixture(scope="module")
def first_run(project: Path) -> subprocess.CompletedProcess[str]:
    result = run_mlrig(
        "run", "--no-push", *SOURCE, "-S", "ingest.columns.customer_id=drop", cwd=project
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_mixed_table_runs_end_to_end(project: Path, first_run) -> None:
    assert "11 stages ran" in first_run.stdout
    assert f"{MODEL_NAME} v1 @champion" in first_run.stdout
    assert "Task:      classification: target 'outcome' holds text (2 labels)" in first_run.stdout


def test_meta_json_describes_each_column_and_the_split(project: Path, first_run) -> None:
    ingested = json.loads((project / "outputs/ingest/meta.json").read_text())
    split = json.loads((project / "outputs/split/meta.json").read_text())

    roles = {column["name"]: column["role"] for column in ingested["columns"]}
    assert roles == {
        "customer_id": "dropped",
        "city": "categorical",
        "member": "boolean",
        "signup": "datetime",
        "amount": "numeric",
        "visits": "categorical",
        "outcome": "categorical",
    }
    city = next(column for column in ingested["columns"] if column["name"] == "city")
    assert 0.05 < city["missing_share"] < 0.15
    assert {top["value"] for top in city["top_values"]} == {"Paris", "Lyon", "Nice", "Lille"}
    balance = split["class_balance"]
    assert set(balance) == {"train", "test"}
    assert sum(balance["train"].values()) + sum(balance["test"].values()) == ROWS
    assert set(balance["test"]) == {"churn", "stay"}


def test_the_experiment_is_marked_as_model_training(project: Path, first_run) -> None:
    experiment = mlflow_client(project).get_experiment_by_name("mlrig")

    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_champions_signature_has_the_raw_columns(project: Path, first_run) -> None:
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(f"sqlite:///{project / '.mlrig/mlflow.db'}")
    info = get_model_info(f"models:/{MODEL_NAME}@champion")

    assert {column.name: column.type.name for column in info.signature.inputs.inputs} == {
        "city": "string",
        "member": "boolean",
        "signup": "datetime",
        "amount": "double",
        "visits": "double",
    }


@pytest.fixture
def served(project: Path, first_run) -> Iterator[int]:
    """`mlflow models serve` of the champion, as a user starts it; yields its port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m",
         f"models:/{MODEL_NAME}@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=project,
        env=clean_environment(project) | {"MLFLOW_TRACKING_URI": "sqlite:///.mlrig/mlflow.db"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "mlflow models serve did not answer in 120 s"
                time.sleep(1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_served_champion_scores_raw_strings_booleans_and_dates(served: int) -> None:
    request = {
        "dataframe_split": {
            "columns": ["city", "member", "signup", "amount", "visits"],
            "data": [
                ["Lille", True, "2024-03-01", 51.5, 2],
                ["Paris", False, "2023-11-20", 80.0, 0],
                ["Rome", None, None, None, None],  # a city never seen, and gaps
            ],
        }
    }
    posted = urllib.request.Request(
        f"http://127.0.0.1:{served}/invocations",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )

    with urllib.request.urlopen(posted, timeout=30) as response:
        predictions = json.loads(response.read())["predictions"]

    assert len(predictions) == 3
    assert set(predictions) <= {"churn", "stay"}
    assert predictions[0] == "churn"  # every customer in Lille churns


# --- a team's own step between ingest and validate -----------------------------------------

FEATURIZE = '''"""featurize: the team's own step: leave out the ID and free-text columns."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlrig.errors import exits_cleanly
from mlrig.experiments.tables import TABLE_FILE, read_meta, read_parquet, write_meta

app = typer.Typer(add_completion=False)


@app.command()
@exits_cleanly
def main(
    table_dir: Annotated[Path, typer.Option()], out_dir: Annotated[Path, typer.Option()]
) -> None:
    meta = read_meta(table_dir)
    text = [column.name for column in meta.columns if column.role == "text"]
    columns = [
        column.model_copy(update={"role": "dropped", "reason": "left out by featurize"})
        if column.name in text
        else column
        for column in meta.columns
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    read_parquet(table_dir / TABLE_FILE).drop(columns=text).to_parquet(out_dir / TABLE_FILE)
    write_meta(meta.model_copy(update={"columns": columns}), out_dir)
    typer.echo(f"featurize: left out {', '.join(text) or 'nothing'}")
'''


def add_featurize_step(root: Path) -> None:
    """The step's folder, and its stage between ingest and validate: validate and split read
    outputs/featurize, as a team wires its own step in dvc.yaml."""
    from mlrig.dvc.code_deps import step_code_files

    folder = root / "steps" / "featurize"
    folder.mkdir()
    (folder / "__init__.py").write_text('"""featurize: the team\'s own step."""\n')
    (folder / "__main__.py").write_text(
        'from mlrig.executors.warm import run_step\n\nrun_step("steps.featurize.featurize")\n'
    )
    (folder / "featurize.py").write_text(FEATURIZE)
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    stages = pipeline["stages"]
    featurize = {
        "cmd": "python -m steps.featurize --table-dir outputs/ingest --out-dir outputs/featurize",
        "deps": ["steps/featurize", *step_code_files(root, folder), "outputs/ingest"],
        "outs": ["outputs/featurize"],
    }
    pipeline["stages"] = {"ingest": stages.pop("ingest"), "featurize": featurize, **stages}
    for name in ("validate", "split"):
        stage = pipeline["stages"][name]
        stage["cmd"] = stage["cmd"].replace("outputs/ingest", "outputs/featurize")
        stage["deps"] = [
            dep.replace("outputs/ingest", "outputs/featurize") for dep in stage["deps"]
        ]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def test_the_checks_follow_a_teams_step_before_validate(project: Path, first_run) -> None:
    """Without the drop, ingest keeps the ID column: the team's featurize step leaves it out, so
    the table validate and the models get is fine. The preflight cannot check a table that step
    has not made yet: it leaves the check to the validate stage, and the run says so."""
    add_featurize_step(project)

    result = run_mlrig("run", "--no-push", "-S", "ingest.columns={}", cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "Checked:   validate reads outputs/featurize, made by stage featurize, which has not "
        "run on this data and these params yet" in result.stdout
    )
    featurized = json.loads((project / "outputs/featurize/meta.json").read_text())
    roles = {column["name"]: column["role"] for column in featurized["columns"]}
    assert roles["customer_id"] == "dropped"
    validated = json.loads((project / "outputs/validate/report.json").read_text())
    assert validated["passed"]


def test_a_teams_table_that_is_made_is_checked_before_the_run(project: Path) -> None:
    """Once featurize has made its table, DVC finds it up to date: a stricter expectation in
    params.yaml is checked on that table up front, and refused before any stage runs."""
    params_path = project / "params.yaml"
    params = params_path.read_text()
    report = project / "outputs/validate/report.json"
    validated = report.read_bytes()
    params_path.write_text(params.replace("min_rows: 20", "min_rows: 100000"))
    try:
        result = run_mlrig("run", "--no-push", cwd=project)
    finally:
        params_path.write_text(params)

    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert "enough rows: 300 rows (validate.min_rows = 100000)" in result.stderr
    assert report.read_bytes() == validated  # the validate stage did not run
