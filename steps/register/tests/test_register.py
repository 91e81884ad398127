"""Register step: the champion is registered only when it beats the current one, in a real
MLflow registry (the SQLite store of `project_settings`)."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlrig.errors import MlrigError
from mlrig.experiments.results import Champion, ExperimentResult, TrainRecord
from mlrig.experiments.tables import TableMeta
from mlrig.settings import Settings
from mlrig.tracking.step_run import setup_mlflow
from steps.evaluate import model_metrics
from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.register import CHAMPION_ALIAS, PREVIOUS_ALIAS, compare_and_register
from steps.register.params import CompareParams
from steps.register.register import best_result, registered_model_name
from steps.split import split_table
from steps.split.params import SplitParams
from steps.train import fit
from steps.train.model_format import log_model, model_format
from steps.train.params import TrainParams

# fewer resamples than the default 1000 keep these tests quick: the decisions they check are
# far from the edge of the interval (test_margin.py checks the bootstrap itself)
AUTO = CompareParams(bootstrap_resamples=300)


@dataclass
class Data:
    train_table: pd.DataFrame
    test_table: pd.DataFrame
    meta: TableMeta


def load_data(name: str) -> Data:
    table, meta = ingest(IngestParams(source=f"builtin:{name}"), Path.cwd())
    return Data(*split_table(table, meta, SplitParams(test_size=0.25, seed=0)), meta)


@pytest.fixture(scope="module")
def breast_cancer() -> Data:
    return load_data("breast_cancer")


@pytest.fixture(scope="module")
def diabetes() -> Data:
    return load_data("diabetes")


@pytest.fixture
def client(project_settings: Settings) -> MlflowClient:
    setup_mlflow(project_settings)
    return MlflowClient(project_settings.tracking_uri)


TrainFn = Callable[..., ExperimentResult]


@pytest.fixture
def train(project_settings: Settings, client: MlflowClient) -> TrainFn:
    """Fit a family, log its model under a new MLflow run, and score it on the test table."""
    experiment_id = setup_mlflow(project_settings)

    def train_experiment(data: Data, name: str, family: str, **params: Any) -> ExperimentResult:
        train_params = TrainParams.model_validate(
            {"seed": 0, "experiments": {name: {"family": family, "params": params}}}
        )
        pipeline, fit_seconds = fit(data.train_table, data.meta, name, train_params)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train@{name}") as run:
            model_uri = log_model(pipeline, model_format(pipeline, family))
        record = TrainRecord(
            experiment=name,
            family=family,
            params=params,
            task=data.meta.task,
            dataset=data.meta.dataset,
            train_md5="0" * 32,
            model_md5=hashlib.md5(run.info.run_id.encode()).hexdigest(),  # one model per run
            fit_seconds=fit_seconds,
            mlflow_run_id=run.info.run_id,
            mlflow_model_uri=model_uri,
            clearml_task_id=f"offline-{name}",
        )
        return ExperimentResult(
            record=record, metrics=model_metrics(pipeline, data.test_table, data.meta)
        )

    return train_experiment


def decide(
    client: MlflowClient, data: Data, results: list[ExperimentResult], params=AUTO
) -> Champion:
    return compare_and_register(client, results, params, data.test_table, data.meta, "pipe-1")


def alias_version(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def version_count(client: MlflowClient, name: str) -> int:
    return len(client.search_model_versions(f"name = '{name}'"))


def test_first_champion_is_registered_as_version_one(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    baseline = train(breast_cancer, "baseline", "baseline")
    forest = train(breast_cancer, "forest", "random_forest", n_estimators=30)

    champion = decide(client, breast_cancer, [baseline, forest])

    assert champion.experiment == "forest"
    assert champion.metric == "f1"
    assert champion.value == forest.metrics["f1"]
    assert champion.registered_model == "mlrig-breast_cancer"
    assert (champion.registered, champion.version, champion.previous_version) == (True, "1", None)
    assert champion.reason == "first champion of mlrig-breast_cancer"
    assert champion.versus_champion is None  # nothing to re-score
    runner_up = champion.versus_runner_up
    assert runner_up is not None
    assert (runner_up.versus, runner_up.metric, runner_up.rows) == ("baseline", "f1", 143)
    # the bootstrap scores the models with the metric evaluate reported
    assert runner_up.value == pytest.approx(forest.metrics["f1"])
    assert runner_up.versus_value == pytest.approx(baseline.metrics["f1"])
    assert runner_up.difference == pytest.approx(forest.metrics["f1"] - baseline.metrics["f1"])
    assert 0 < runner_up.low < runner_up.difference < runner_up.high
    version = client.get_model_version_by_alias("mlrig-breast_cancer", CHAMPION_ALIAS)
    assert (str(version.version), version.run_id) == ("1", forest.record.mlflow_run_id)
    assert version.tags["mlrig.experiment"] == "forest"
    assert version.tags["mlrig.model.md5"] == forest.record.model_md5
    assert version.tags["mlrig.pipeline_run_id"] == "pipe-1"
    assert version.tags["mlrig.decision"] == "first champion of mlrig-breast_cancer"
    assert float(version.tags["mlrig.metric.f1"]) == pytest.approx(forest.metrics["f1"], abs=1e-6)
    # the champion alias serves the model that was trained
    served = mlflow.sklearn.load_model(f"models:/mlrig-breast_cancer@{CHAMPION_ALIAS}")
    features = breast_cancer.test_table[breast_cancer.meta.features].astype("float64")
    assert model_metrics(served, breast_cancer.test_table, breast_cancer.meta) == forest.metrics
    assert len(served.predict(features)) == len(features)


def test_better_challenger_becomes_champion_and_the_old_one_previous(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    baseline = train(breast_cancer, "baseline", "baseline")
    decide(client, breast_cancer, [baseline])
    linear = train(breast_cancer, "linear", "linear")

    champion = decide(client, breast_cancer, [linear])

    assert champion.experiment == "linear"
    assert (champion.registered, champion.version, champion.previous_version) == (True, "2", "1")
    assert champion.reason.startswith(f"f1 {linear.metrics['f1']:.4f} beats champion version 1")
    margin = champion.versus_champion
    assert margin is not None
    assert (margin.versus, margin.versus_value) == ("champion version 1", baseline.metrics["f1"])
    assert margin.difference == pytest.approx(linear.metrics["f1"] - baseline.metrics["f1"])
    assert 0 < margin.low < margin.difference < margin.high  # clear of zero: in its favour
    assert (margin.confidence, margin.resamples, margin.seed) == (0.95, 300, 42)
    interval = f"95% interval {margin.low:+.4f} to {margin.high:+.4f}"
    assert f"difference {margin.difference:+.4f}, {interval}" in champion.reason
    assert alias_version(client, "mlrig-breast_cancer", CHAMPION_ALIAS) == "2"
    assert alias_version(client, "mlrig-breast_cancer", PREVIOUS_ALIAS) == "1"
    registered = client.get_model_version("mlrig-breast_cancer", "2")
    assert registered.run_id == linear.record.mlflow_run_id
    # the registry says by how much and with what interval
    assert registered.tags["mlrig.decision"] == champion.reason
    assert registered.tags["mlrig.margin.versus"] == "champion version 1"
    assert float(registered.tags["mlrig.margin.difference"]) == pytest.approx(
        margin.difference, abs=1e-6
    )
    assert registered.tags["mlrig.margin.interval"] == (
        f"[{margin.low:+.6f}, {margin.high:+.6f}] at 95%, 300 resamples of 143 test rows, seed 42"
    )


def test_challenger_better_by_noise_keeps_the_champion(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    """Better on these 143 test rows, but the interval of the difference includes zero."""
    boosting = train(breast_cancer, "boosting", "gradient_boosting")
    decide(client, breast_cancer, [boosting])
    linear = train(breast_cancer, "linear", "linear")
    assert linear.metrics["f1"] > boosting.metrics["f1"]  # what replaced the champion before

    champion = decide(client, breast_cancer, [linear])

    assert (champion.registered, champion.is_champion, champion.version) == (False, False, "1")
    assert champion.incumbent_experiment == "boosting"
    margin = champion.versus_champion
    assert margin is not None
    assert margin.difference == pytest.approx(linear.metrics["f1"] - boosting.metrics["f1"])
    assert margin.low < 0 < margin.difference < margin.high
    assert champion.reason.startswith(
        f"f1 {linear.metrics['f1']:.4f} does not beat champion version 1 "
        f"({boosting.metrics['f1']:.4f} on the same 143 test rows) beyond noise: "
        f"difference {margin.difference:+.4f}, 95% interval {margin.low:+.4f} to "
        f"{margin.high:+.4f} includes zero"
    )
    assert version_count(client, "mlrig-breast_cancer") == 1
    assert alias_version(client, "mlrig-breast_cancer", CHAMPION_ALIAS) == "1"
    # the champion that stayed says which challenger it held off, and why
    kept = client.get_model_version("mlrig-breast_cancer", "1")
    assert kept.tags["mlrig.challenge.experiment"] == "linear"
    assert kept.tags["mlrig.challenge.run_id"] == linear.record.mlflow_run_id
    assert kept.tags["mlrig.challenge.reason"] == champion.reason
    assert kept.tags["mlrig.challenge.interval"].startswith(
        f"[{margin.low:+.6f}, {margin.high:+.6f}] at 95%"
    )


def test_challenger_better_by_less_than_min_improvement_keeps_the_champion(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    baseline = train(breast_cancer, "baseline", "baseline")
    decide(client, breast_cancer, [baseline])
    linear = train(breast_cancer, "linear", "linear")
    gain = linear.metrics["f1"] - baseline.metrics["f1"]
    demanding = AUTO.model_copy(update={"min_improvement": round(gain + 0.01, 2)})

    champion = decide(client, breast_cancer, [linear], demanding)

    assert (champion.registered, champion.version) == (False, "1")
    assert champion.min_improvement == demanding.min_improvement
    margin = champion.versus_champion
    assert margin is not None and margin.low > 0  # clear of noise, but not by enough
    assert (
        f"does not beat champion version 1 ({baseline.metrics['f1']:.4f} on the same 143 test "
        f"rows) by compare.min_improvement = {demanding.min_improvement:g}: difference "
        f"{gain:+.4f}"
    ) in champion.reason
    assert version_count(client, "mlrig-breast_cancer") == 1


def test_worse_challenger_keeps_the_champion_and_registers_nothing(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    linear = train(breast_cancer, "linear", "linear")
    decide(client, breast_cancer, [linear])
    baseline = train(breast_cancer, "baseline", "baseline")

    champion = decide(client, breast_cancer, [baseline])

    assert (champion.registered, champion.version, champion.previous_version) == (False, "1", None)
    assert "does not beat champion version 1" in champion.reason
    assert version_count(client, "mlrig-breast_cancer") == 1
    assert alias_version(client, "mlrig-breast_cancer", CHAMPION_ALIAS) == "1"


def test_tie_keeps_the_incumbent(client: MlflowClient, train: TrainFn, breast_cancer: Data) -> None:
    first = train(breast_cancer, "linear", "linear")
    decide(client, breast_cancer, [first])
    rerun = train(breast_cancer, "linear_again", "linear")  # same data, same seed: same scores
    assert rerun.record.mlflow_run_id != first.record.mlflow_run_id
    assert rerun.metrics["f1"] == first.metrics["f1"]

    champion = decide(client, breast_cancer, [rerun])

    assert (champion.registered, champion.version) == (False, "1")
    assert "does not beat" in champion.reason
    assert version_count(client, "mlrig-breast_cancer") == 1
    champion_version = client.get_model_version_by_alias("mlrig-breast_cancer", CHAMPION_ALIAS)
    assert champion_version.run_id == first.record.mlflow_run_id


def test_the_same_model_from_a_later_run_is_already_the_champion(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    """A fresh clone, or `--force`, fits the same bytes again in a new run: that is the
    champion's model, not a challenger to re-score."""
    first = train(breast_cancer, "linear", "linear")
    decide(client, breast_cancer, [first])
    again = train(breast_cancer, "linear", "linear")
    same_bytes = again.model_copy(
        update={"record": again.record.model_copy(update={"model_md5": first.record.model_md5})}
    )

    champion = decide(client, breast_cancer, [same_bytes])

    assert (champion.registered, champion.is_champion, champion.version) == (False, True, "1")
    assert champion.reason == "linear is already the champion (version 1)"
    assert champion.versus_champion is None  # not re-scored
    assert version_count(client, "mlrig-breast_cancer") == 1


def test_same_run_twice_is_already_the_champion(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    linear = train(breast_cancer, "linear", "linear")
    decide(client, breast_cancer, [linear])

    champion = decide(client, breast_cancer, [linear])

    assert (champion.registered, champion.version, champion.previous_version) == (False, "1", None)
    assert champion.reason == "linear is already the champion (version 1)"
    assert version_count(client, "mlrig-breast_cancer") == 1


def test_lower_rmse_wins_for_regression(
    client: MlflowClient, train: TrainFn, diabetes: Data
) -> None:
    baseline = train(diabetes, "baseline", "baseline")
    ridge = train(diabetes, "ridge", "linear")
    knn = train(diabetes, "knn", "knn")
    assert ridge.metrics["rmse"] < knn.metrics["rmse"] < baseline.metrics["rmse"]

    first = decide(client, diabetes, [baseline, ridge, knn])

    assert (first.experiment, first.metric, first.value) == ("ridge", "rmse", ridge.metrics["rmse"])
    assert (first.registered, first.version) == (True, "1")
    assert first.registered_model == "mlrig-diabetes"

    # a challenger with a higher rmse does not replace it
    second = decide(client, diabetes, [knn])

    assert (second.registered, second.version) == (False, "1")
    margin = second.versus_champion
    assert margin is not None and margin.difference > 0  # knn minus ridge: a worse rmse
    assert second.reason.startswith(
        f"rmse (lower is better) {knn.metrics['rmse']:.4f} does not beat champion version 1"
    )
    assert version_count(client, "mlrig-diabetes") == 1
    assert client.get_model_version_by_alias("mlrig-diabetes", CHAMPION_ALIAS).run_id == (
        ridge.record.mlflow_run_id
    )


def test_clearly_lower_rmse_replaces_the_champion(
    client: MlflowClient, train: TrainFn, diabetes: Data
) -> None:
    baseline = train(diabetes, "baseline", "baseline")
    decide(client, diabetes, [baseline])
    ridge = train(diabetes, "ridge", "linear")

    champion = decide(client, diabetes, [ridge])

    assert (champion.registered, champion.version, champion.previous_version) == (True, "2", "1")
    margin = champion.versus_champion
    assert margin is not None
    assert margin.difference == pytest.approx(ridge.metrics["rmse"] - baseline.metrics["rmse"])
    assert margin.low < margin.difference < margin.high < 0  # lower is better: all below zero
    assert champion.reason.startswith(
        f"rmse (lower is better) {ridge.metrics['rmse']:.4f} beats champion version 1"
    )


def test_champion_that_cannot_score_the_new_data_is_replaced(
    client: MlflowClient, train: TrainFn, breast_cancer: Data, diabetes: Data
) -> None:
    shared = CompareParams(registered_model="shared")
    decide(client, breast_cancer, [train(breast_cancer, "linear", "linear")], shared)

    champion = decide(client, diabetes, [train(diabetes, "baseline", "baseline")], shared)

    assert (champion.registered, champion.version, champion.previous_version) == (True, "2", "1")
    assert champion.reason == "champion version 1 cannot score this data"


def test_champion_that_cannot_be_loaded_stops_and_changes_nothing(
    client: MlflowClient, train: TrainFn, breast_cancer: Data
) -> None:
    baseline = train(breast_cancer, "baseline", "baseline")
    decide(client, breast_cancer, [baseline])
    model_id = baseline.record.mlflow_model_uri.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    shutil.rmtree(Path(location.removeprefix("file://")))  # the champion's files are gone

    with pytest.raises(MlrigError, match="Could not load champion version 1 of mlrig-breast"):
        decide(client, breast_cancer, [train(breast_cancer, "linear", "linear")])

    assert version_count(client, "mlrig-breast_cancer") == 1
    assert alias_version(client, "mlrig-breast_cancer", CHAMPION_ALIAS) == "1"


def test_explicit_metric_decides(client: MlflowClient, train: TrainFn, breast_cancer: Data) -> None:
    baseline = train(breast_cancer, "baseline", "baseline")
    linear = train(breast_cancer, "linear", "linear")

    champion = decide(client, breast_cancer, [baseline, linear], CompareParams(metric="log_loss"))

    assert (champion.experiment, champion.metric) == ("linear", "log_loss")
    assert champion.value == linear.metrics["log_loss"] < baseline.metrics["log_loss"]


@pytest.mark.parametrize(
    ("configured", "dataset", "expected"),
    [
        ("auto", "breast_cancer", "mlrig-breast_cancer"),
        ("auto", "churn 2024/v2", "mlrig-churn_2024_v2-d53e0478"),
        ("auto", "données ✓", "mlrig-donnees-4256ddcc"),
        ("auto", "数据", "mlrig-dataset-5440f742"),
        ("auto", "iris.v2-final", "mlrig-iris.v2-final"),
        ("auto", "synthetic_1000", "mlrig-synthetic_1000"),
        ("fraud-detector", "breast_cancer", "fraud-detector"),
    ],
)
def test_registered_model_name(configured: str, dataset: str, expected: str) -> None:
    meta = TableMeta(
        dataset=dataset, source="x.csv", target="y", task="regression", features=["a"], rows=2
    )

    assert registered_model_name(CompareParams(registered_model=configured), meta) == expected


@pytest.mark.parametrize(
    "names",
    [
        ["données ✓", "données ✗", "donnees", "donn_es_", "données"],
        ["churn 2024/v2", "churn_2024_v2", "churn 2024 v2", "churn-2024-v2"],
        ["数据", "资料", "dataset"],
    ],
)
def test_distinct_datasets_never_share_a_registered_model(names: list[str]) -> None:
    models = []
    for dataset in names:
        meta = TableMeta(
            dataset=dataset, source="x.csv", target="y", task="regression", features=["a"], rows=2
        )
        models.append(registered_model_name(CompareParams(), meta))

    assert len(set(models)) == len(names), models
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", model) for model in models)


def result(name: str, **metrics: float) -> ExperimentResult:
    record = TrainRecord(
        experiment=name,
        family="linear",
        params={},
        task="classification",
        dataset="d",
        train_md5="0" * 32,
        model_md5=hashlib.md5(name.encode()).hexdigest(),
        fit_seconds=0.0,
        mlflow_run_id=f"run-{name}",
        mlflow_model_uri=f"runs:/run-{name}/model",
        clearml_task_id=f"offline-{name}",
    )
    return ExperimentResult(record=record, metrics=metrics)


def test_best_result_picks_by_direction_and_first_listed_on_a_tie() -> None:
    results = [result("a", f1=0.8, rmse=3.0), result("b", f1=0.9, rmse=2.0), result("c", f1=0.9)]

    assert best_result(results, "f1").name == "b"
    assert best_result(results[:2], "rmse").name == "b"
    assert best_result(list(reversed(results[:2])), "rmse").name == "b"
    assert best_result([result("x", mae=1.0), result("y", mae=1.0)], "mae").name == "x"
