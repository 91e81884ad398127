"""Models teams bring, end to end in a scratch copy of the repository: an XGBoost and a LightGBM
experiment run on the built-in data beside the baseline, are compared, one becomes the champion,
and the registered model loads with its library's MLflow flavor and serves raw columns through
pyfunc; `mlrig tune` searches one; a team's estimator class that cannot be used stops at
preflight naming its key, exit 2, and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlrig.stacks.local.processes import free_port
from tests.support.project import clean_environment, copy_repository

pytestmark = pytest.mark.e2e

MODEL_NAME = "mlrig-breast_cancer"
EXPERIMENTS = {
    "xgboost": {
        "family": "xgboost",
        "params": {"n_estimators": 300, "learning_rate": 0.1, "early_stopping_rounds": 10},
    },
    "lightgbm": {"family": "lightgbm", "params": {"n_estimators": 150, "num_leaves": 15}},
    "baseline": {"family": "baseline"},
}
BOOSTERS = {"xgboost", "lightgbm"}


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

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / '.mlrig/mlflow.db'}"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def runs(self) -> list:
        client = self.client()
        experiment = client.get_experiment_by_name("mlrig")
        return client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A copy whose train.experiments are an XGBoost, a LightGBM and the baseline experiment."""
    root = tmp_path_factory.mktemp("models")
    copy_repository(root, experiments=("baseline",))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["experiments"] = EXPERIMENTS
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "commit", "-qam", "boosters"], cwd=root, check=True)
    yield Project(root=root, env=clean_environment(root))


@pytest.fixture(scope="module")
def first_run(project: Project) -> subprocess.CompletedProcess[str]:
    return project.run("run", check=True)


@pytest.fixture(scope="module")
def champion(project: Project, first_run) -> dict:
    return json.loads((project.root / "outputs/register/champion.json").read_text())


def f1_of(project: Project, name: str) -> float:
    return json.loads((project.root / f"outputs/evaluate/{name}/metrics.json").read_text())["f1"]


def test_the_boosters_are_fitted_logged_and_compared(project: Project, first_run) -> None:
    out = first_run.stdout
    assert "11 stages ran" in out, out
    runs = {
        run.data.tags["mlrig.experiment"]: run
        for run in project.runs()
        if run.data.tags["mlrig.step"] == "train"
    }
    assert set(runs) == set(EXPERIMENTS)
    for name in BOOSTERS:
        tags, data = runs[name].data.tags, runs[name].data
        assert data.params["family"] == name and 0.9 < data.metrics["f1"] <= 1.0
        assert tags["mlrig.model.serialization"] == "skops"
        assert tags["mlrig.model.flavors"] == f"sklearn,{name}"
    assert 1 <= runs["xgboost"].data.metrics["best_iteration"] < 300  # stopped early
    rows = json.loads(project.run("compare", "--json", check=True).stdout)
    assert {row["experiment"] for row in rows} == set(EXPERIMENTS)


def test_a_booster_becomes_the_champion(project: Project, champion: dict) -> None:
    best = max(EXPERIMENTS, key=lambda name: f1_of(project, name))
    assert champion["experiment"] == best and best in BOOSTERS
    assert champion["registered"] is True
    version = project.client().get_model_version_by_alias(MODEL_NAME, "champion")
    assert version.tags["mlrig.experiment"] == champion["experiment"]


def test_the_registered_champion_loads_with_its_flavor(project: Project, champion: dict) -> None:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(project.tracking_uri)
    uri = f"models:/{MODEL_NAME}@champion"
    pipeline = mlflow.sklearn.load_model(uri)  # what evaluate and register load
    flavor = getattr(mlflow, champion["experiment"])  # mlflow.xgboost or mlflow.lightgbm
    booster = flavor.load_model(uri)

    test_table = pd.read_parquet(project.root / "outputs/split/test.parquet")
    raw = test_table.drop(columns=["target"]).astype("float64")
    encoded = pipeline[:-1].transform(raw)
    expected = pipeline.predict_proba(raw)[:, 1]
    from_booster = (
        booster.predict_proba(encoded)[:, 1]
        if champion["experiment"] == "xgboost"
        else booster.predict(encoded)
    )
    assert abs(from_booster - expected).max() < 1e-6
    assert list(mlflow.pyfunc.load_model(uri).predict(raw.head(5))) == list(
        pipeline.predict(raw.head(5))
    )


def test_mlflow_serves_the_booster_champion_from_the_raw_columns(project: Project, champion):
    import pandas as pd

    port = free_port()
    serve = ["models", "serve", "-m", f"models:/{MODEL_NAME}@champion", "--env-manager", "local"]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *serve, "--host", "127.0.0.1", "--port", str(port)],
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
        predictions = post_when_up(server, port, body)
        assert len(predictions) == 10 and set(predictions) <= {0, 1}
        assert sum(p == t for p, t in zip(predictions, test_table["target"], strict=True)) >= 8
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mlrig_tune_searches_a_booster(project: Project, first_run) -> None:
    result = project.run("tune", "lightgbm", "--trials", "2", "--json", check=True)
    summary = json.loads(result.stdout)
    assert summary["family"] == "lightgbm" and summary["space"] == "tune.families.lightgbm"
    assert len(summary["trials"]) == 2 and 0.5 < summary["best"]["score"] <= 1.0


REFUSED = {
    "class that does not import": (
        "{family: estimator, class: sklearn.svm.SVX}",
        "train.experiments.own.class: sklearn.svm.SVX cannot be imported",
    ),
    "regressor for a classification task": (
        "{family: estimator, class: sklearn.svm.SVR}",
        "train.experiments.own.class: sklearn.svm.SVR is a regressor, and the task is",
    ),
    "param the class does not take": (
        "{family: estimator, class: sklearn.svm.SVC, params: {probability: true, gama: 1}}",
        "train.experiments.own.params.gama: SVC takes no param 'gama'",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_unusable_estimator_stops_at_preflight_and_changes_nothing(
    project: Project, first_run, case: str
) -> None:
    experiment, expected = REFUSED[case]
    params_before = (project.root / "params.yaml").read_bytes()
    runs_before = len(project.runs())
    versions_before = len(project.client().search_model_versions(f"name = '{MODEL_NAME}'"))

    result = project.run("run", "-S", f"train.experiments.own={experiment}")

    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert (project.root / "params.yaml").read_bytes() == params_before
    assert len(project.runs()) == runs_before
    assert len(project.client().search_model_versions(f"name = '{MODEL_NAME}'")) == (
        versions_before
    )
    assert not (project.root / "outputs/train/own").exists()


def post_when_up(server: subprocess.Popen, port: int, body: str) -> list:
    """The predictions of `/invocations`, once the server answers (120 s at most)."""
    deadline = time.monotonic() + 120
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["predictions"]
        except OSError:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "mlflow models serve did not answer in 120 s"
            time.sleep(1)
