"""`mlrig tune`: a real search on a small dataset, --apply, bad input, and the ClearML optimizer.

One copy of the repository (synthetic data, a small random-forest space, 3 folds) is shared by
the module: its first search runs the split stages through DVC and records MLflow runs in the
copy's own SQLite store; the other tests read what it recorded or search it again.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from mlrig.errors import EXIT_BAD_INPUT, ConfigError, DataError, ParamsError
from mlrig.experiments.params import Params, read_params_file, validate_params
from mlrig.settings import Settings
from mlrig.tune import (
    OBJECTIVE_TITLE,
    TuneSummary,
    build_optimizer,
    check_input,
    cv_folds,
    direction_of,
    parse_clearml_value,
    resolve_space,
    top_trials,
    trial_task_arguments,
)
from tests.support.project import REPO_ROOT, copy_repository, run_mlrig

TRIALS = 4
SPACE = {"n_estimators": {"int": [10, 60]}, "max_depth": {"int": [2, 8]}}
#: what the copy's params.yaml gets: small data, a small space, 3 folds; the synthetic table's
#: categorical columns are dropped, so scikit-learn alone recomputes a trial's score
TEST_PARAMS = {
    "ingest.source": "synthetic:200",
    "ingest.columns": {f"c{i}": "drop" for i in range(5)},
    "tune.cv_folds": 3,
    "tune.families.random_forest": SPACE,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed copy of the repository with TEST_PARAMS in its params.yaml."""
    root = tmp_path_factory.mktemp("tune") / "project"
    root.mkdir()
    copy_repository(root)
    path = root / "params.yaml"
    document = read_params_file(path)
    for key, value in TEST_PARAMS.items():
        *parents, last = key.split(".")
        node = document
        for name in parents:
            node = node[name]
        node[last] = value
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    with path.open("w") as stream:
        yaml.dump(document, stream)
    subprocess.run(["git", "commit", "-qam", "tune test params"], cwd=root, check=True)
    return root


def tune_json(root: Path, *arguments: str) -> TuneSummary:
    result = run_mlrig(
        "tune", "random_forest", "--trials", str(TRIALS), "--json", *arguments, cwd=root
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return TuneSummary.model_validate_json(result.stdout)


@pytest.fixture(scope="module")
def search(project: Path) -> TuneSummary:
    """The first search of the project (it runs ingest, validate and split first)."""
    assert not (project / "outputs/split").exists()
    return tune_json(project)


@pytest.fixture(scope="module")
def store(project: Path, search: TuneSummary) -> Iterator[Any]:
    """An MLflow client of the project's own store (the one `mlrig run` uses)."""
    from mlflow import MlflowClient

    yield MlflowClient(f"sqlite:///{project}/.mlrig/mlflow.db")


# --- a real search ----------------------------------------------------------------------------


def test_a_search_runs_the_split_and_the_trials_it_was_asked_for(
    project: Path, search: TuneSummary
) -> None:
    assert (project / "outputs/split/train.parquet").is_file()
    assert search.experiment == "random_forest" and search.family == "random_forest"
    assert search.space == "tune.families.random_forest"
    assert (search.metric, search.direction, search.cv_folds) == ("f1", "maximize", 3)
    assert [trial.number for trial in search.trials] == list(range(TRIALS))
    for trial in search.trials:
        assert 10 <= trial.params["n_estimators"] <= 60
        assert 2 <= trial.params["max_depth"] <= 8
        assert trial.params["min_samples_leaf"] == 1  # not searched: the experiment's own
        assert 0.0 < trial.score <= 1.0
    # a seeded sampler still samples: the trials do not all try the same params
    assert len({json.dumps(trial.params) for trial in search.trials}) > 1


def test_every_trial_is_an_mlflow_child_run_with_its_params_and_score(
    search: TuneSummary, store: Any
) -> None:
    parent = store.get_run(search.mlflow_parent_run_id)
    assert parent.info.run_name == "tune-random_forest"
    assert parent.data.tags["mlrig.step"] == "tune"
    assert parent.data.tags["mlrig.experiment"] == "random_forest"
    assert parent.data.params["metric"] == "f1" and parent.data.params["cv_folds"] == "3"
    children = store.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    by_id = {child.info.run_id: child for child in children}
    assert sorted(by_id) == sorted(trial.mlflow_run_id for trial in search.trials)
    for trial in search.trials:
        child = by_id[trial.mlflow_run_id]
        assert child.info.status == "FINISHED"
        assert child.data.params["trial"] == str(trial.number)
        assert child.data.params["n_estimators"] == str(trial.params["n_estimators"])
        assert child.data.params["max_depth"] == str(trial.params["max_depth"])
        assert child.data.metrics["cv_f1"] == pytest.approx(trial.score)
        assert child.data.tags["mlrig.data.md5"] == parent.data.tags["mlrig.data.md5"]


def test_a_search_has_its_own_mlflow_experiment_that_mlrig_run_does_not_count(
    project: Path, search: TuneSummary, store: Any
) -> None:
    from mlrig.settings import Settings
    from mlrig.tracking.parent_run import count_runs

    parent = store.get_run(search.mlflow_parent_run_id)
    assert search.mlflow_experiment == "mlrig-tune"
    assert parent.info.experiment_id == store.get_experiment_by_name("mlrig-tune").experiment_id
    tune_runs = store.search_runs([parent.info.experiment_id], max_results=1000)
    assert len(tune_runs) == 1 + TRIALS
    pipeline = store.get_experiment_by_name("mlrig")
    in_pipeline = store.search_runs([pipeline.experiment_id]) if pipeline else []
    assert not [run for run in in_pipeline if run.data.tags.get("mlrig.step") == "tune"]
    # the summary of mlrig run counts the pipeline's experiment alone
    settings = Settings(project_dir=project, mlflow_experiment="mlrig", mlflow_tracking_uri=None)
    assert count_runs(settings, None) == (0, len(in_pipeline))


def test_the_best_trial_reported_is_the_best_score(search: TuneSummary, store: Any) -> None:
    best = max(search.trials, key=lambda trial: trial.score)
    assert search.best == best
    parent = store.get_run(search.mlflow_parent_run_id)
    assert parent.data.tags["mlrig.tune.best_trial"] == str(best.number)
    assert parent.data.tags["mlrig.tune.best_run_id"] == best.mlflow_run_id
    assert parent.data.metrics["best_cv_f1"] == pytest.approx(best.score)
    assert parent.data.params["best.n_estimators"] == str(best.params["n_estimators"])


def test_the_report_reads_the_search_back_from_mlflow(project: Path, search: TuneSummary) -> None:
    """What the report's tuning section shows: the search of this train split, its best trial."""
    from mlrig.lineage import file_md5
    from mlrig.tracking.tuned import latest_searches

    settings = Settings(project_dir=project, mlflow_experiment="mlrig", mlflow_tracking_uri=None)
    train_md5 = file_md5(project / "outputs/split/train.parquet")

    (found,) = latest_searches(settings, ["linear_c0_1", "random_forest"], train_md5)

    assert (found.experiment, found.family) == ("random_forest", "random_forest")
    assert found.metric == "f1"
    assert (found.trials, found.cv_folds, found.direction) == (TRIALS, 3, "maximize")
    assert (found.best_trial, found.best_score) == (search.best.number, search.best.score)
    assert found.best_score_std == pytest.approx(search.best.score_std)
    assert found.best_params == {
        "max_depth": str(search.best.params["max_depth"]),
        "n_estimators": str(search.best.params["n_estimators"]),
    }
    assert found.mlflow_run_id == search.mlflow_parent_run_id
    # a search of other data is not this run's
    assert latest_searches(settings, ["random_forest"], "0" * 32) == []
    assert latest_searches(settings, ["linear_c0_1"], train_md5) == []


def test_the_score_is_cross_validated_on_the_train_split_only(
    project: Path, search: TuneSummary
) -> None:
    """Recomputed with scikit-learn alone: the train split's 3 seeded folds, macro F1."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    meta = json.loads((project / "outputs/split/meta.json").read_text())
    train_table = pd.read_parquet(project / "outputs/split/train.parquet")
    assert search.train_rows == len(train_table) == 150  # 200 rows, test_size 0.25
    trial = search.trials[0]
    # max_samples (100000) is beyond the 150 rows: each tree draws them all, as train does
    params = {key: value for key, value in trial.params.items() if key != "max_samples"}
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        RandomForestClassifier(**params, random_state=42, n_jobs=1),
    )
    scores = cross_val_score(
        model,
        train_table[meta["features"]].astype("float64"),
        train_table[meta["target"]],
        cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=42),
        scoring="f1_macro",
    )
    assert trial.score == pytest.approx(float(scores.mean()))


def test_without_apply_params_yaml_is_untouched(project: Path, search: TuneSummary) -> None:
    assert not search.applied
    status = subprocess.run(
        ["git", "status", "--porcelain", "params.yaml"], cwd=project, capture_output=True, text=True
    )
    assert status.stdout == ""


def test_the_same_seed_gives_the_same_search(project: Path, search: TuneSummary) -> None:
    again = tune_json(project)
    assert [t.params for t in again.trials] == [t.params for t in search.trials]
    assert [t.score for t in again.trials] == pytest.approx([t.score for t in search.trials])
    assert again.mlflow_parent_run_id != search.mlflow_parent_run_id


def test_apply_writes_the_best_params_into_that_experiment_only(
    project: Path, search: TuneSummary
) -> None:
    """The same seeded search again, printed as a table, its best params written."""
    path = project / "params.yaml"
    before = path.read_text()
    try:
        result = run_mlrig("tune", "random_forest", "--trials", str(TRIALS), "--apply", cwd=project)
        after = path.read_text()
    finally:
        path.write_text(before)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cv f1 ↑" in result.stdout and "n_estimators" in result.stdout
    best = search.best.params
    assert f"Best:    trial {search.best.number}, cv f1={search.best.score:.4f}" in result.stdout
    assert "Applied: train.experiments.random_forest.params" in result.stdout
    old, new = plain(before), plain(after)
    assert new["train"]["experiments"]["random_forest"]["params"] == {
        "n_estimators": best["n_estimators"],
        "max_depth": best["max_depth"],
    }
    # everything else is as it was, comments included
    del old["train"]["experiments"]["random_forest"]["params"]
    del new["train"]["experiments"]["random_forest"]["params"]
    assert new == old
    comments = [line.strip() for line in before.splitlines() if line.strip().startswith("#")]
    assert comments and all(comment in after for comment in comments)
    assert len(after.splitlines()) == len(before.splitlines())  # two values replaced in place


def plain(text: str) -> dict[str, Any]:
    """A params.yaml text as plain data."""
    return json.loads(json.dumps(YAML(typ="safe").load(text)))


# --- bad input --------------------------------------------------------------------------------


def mlflow_runs(store: Any) -> int:
    experiments = [experiment.experiment_id for experiment in store.search_experiments()]
    return len(store.search_runs(experiments, max_results=1000))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nope"], "Experiment 'nope' is not in train.experiments"),
        (["random_forest", "--trials", "0"], "--trials is 0"),
        (["baseline"], "tune.families.baseline or tune.experiments.baseline"),
        (["random_forest", "--queue", "q"], "--queue is for ClearML trials"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem_and_change_nothing(
    project: Path, store: Any, arguments: list[str], message: str
) -> None:
    runs = mlflow_runs(store)
    before = (project / "params.yaml").read_text()
    result = run_mlrig("tune", *arguments, "--apply", cwd=project)
    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert mlflow_runs(store) == runs
    assert (project / "params.yaml").read_text() == before


def with_tune(tune: dict[str, Any]) -> Params:
    return validate_params(
        {
            "train": {
                "experiments": {
                    "forest": {"family": "random_forest"},
                    "lin": {"family": "linear", "params": {"C": 1.0}},
                }
            },
            "tune": tune,
        },
        "params.yaml",
        REPO_ROOT,
    )


def space_error(tune: dict[str, Any], experiment: str = "forest") -> str:
    with pytest.raises(ParamsError) as caught:
        resolve_space(with_tune(tune), experiment)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


def test_a_param_the_family_does_not_have_is_named_with_the_family_params() -> None:
    message = space_error({"families": {"random_forest": {"C": {"float": [0.1, 1.0]}}}})
    assert "tune.families.random_forest.C: random_forest has no param 'C'" in message
    assert "n_estimators, max_depth, min_samples_leaf" in message


def test_a_float_range_for_an_integer_param_is_refused() -> None:
    message = space_error({"experiments": {"forest": {"max_depth": {"float": [1.0, 9.0]}}}})
    assert "tune.experiments.forest.max_depth: max_depth takes integers" in message


def test_a_bound_the_param_cannot_take_is_named() -> None:
    message = space_error({"families": {"random_forest": {"n_estimators": {"int": [0, 5]}}}})
    assert "tune.families.random_forest.n_estimators: 0 is not a valid n_estimators" in message
    message = space_error({"families": {"linear": {"C": {"choice": [1.0, -1.0]}}}}, "lin")
    assert "tune.families.linear.C: -1.0 is not a valid C" in message


def test_an_experiment_space_replaces_its_family_space() -> None:
    key, space = resolve_space(
        with_tune(
            {
                "families": {"random_forest": SPACE},
                "experiments": {"forest": {"max_depth": {"choice": [None, 4]}}},
            }
        ),
        "forest",
    )
    assert key == "tune.experiments.forest" and list(space) == ["max_depth"]


def test_a_tune_entry_of_an_unknown_experiment_is_refused() -> None:
    message = space_error({"families": {"random_forest": SPACE}, "experiments": {"frest": {}}})
    assert "tune.experiments names frest" in message


def test_a_tune_entry_of_an_unknown_family_is_refused() -> None:
    message = space_error({"families": {"random_forest": SPACE, "lineer": {}}})
    assert "tune.families names lineer, which is no model family (linear, random_forest" in message


@pytest.mark.parametrize(
    ("dimension", "message"),
    [
        ({"range": [1, 2]}, "a search dimension is one of {int: [low, high]}"),
        ({"int": [5, 1]}, "the range [5, 1] is empty"),
        ({"float": [0.0, 1.0], "log": True}, "a log scale needs low above 0"),
        ({"int": [1, 2], "float": [1.0, 2.0]}, "a search dimension is one of"),
        ({"choice": []}, "at least 1 item"),
    ],
)
def test_a_malformed_dimension_names_its_dotted_key(dimension: dict, message: str) -> None:
    with pytest.raises(ParamsError) as caught:
        with_tune({"families": {"random_forest": {"n_estimators": dimension}}})
    assert "tune.families.random_forest.n_estimators" in str(caught.value)
    assert message in str(caught.value)


def test_bad_params_stop_before_the_split_runs(tmp_path: Path, project: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("outputs", ".mlrig"))
    text = (copy / "params.yaml").read_text().replace("cv_folds: 3", "cv_folds: 1")
    (copy / "params.yaml").write_text(text)
    result = run_mlrig("tune", "random_forest", cwd=copy)
    assert result.returncode == EXIT_BAD_INPUT
    assert "tune.cv_folds: Input should be greater than or equal to 2" in result.stderr
    assert not (copy / "outputs").exists() and not (copy / ".mlrig/mlflow.db").exists()


def test_too_few_rows_of_a_class_for_the_folds_is_a_data_error() -> None:
    import pandas as pd

    from mlrig.experiments.tables import TableMeta

    table = pd.DataFrame({"x": range(10), "target": ["a"] * 8 + ["b"] * 2})
    meta = TableMeta(
        dataset="t", source="t", target="target", task="classification", features=["x"], rows=10
    )
    with pytest.raises(DataError, match=r"2 rows of class 'b', fewer than tune.cv_folds = 3"):
        cv_folds(table, meta, 3, seed=0)
    one = pd.DataFrame({"x": range(10), "target": ["a"] * 9 + ["b"]})
    with pytest.raises(DataError, match=r"1 row of class 'b', fewer than tune.cv_folds = 3"):
        cv_folds(one, meta, 3, seed=0)


def test_a_folder_dvc_cannot_work_in_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(
        "train:\n  experiments:\n    forest:\n      family: random_forest\n"
        "tune:\n  families:\n    random_forest:\n      n_estimators: {int: [10, 20]}\n"
    )
    with pytest.raises(ConfigError, match="dvc init"):
        check_input(Settings(project_dir=tmp_path), "forest", 2)
    assert not (tmp_path / "outputs").exists()


def test_direction_follows_the_metric() -> None:
    assert direction_of("f1") == "maximize" and direction_of("rmse") == "minimize"


# --- ClearML ----------------------------------------------------------------------------------

CLEARML_SPACE = {
    "n_estimators": {"int": [50, 400], "step": 10},
    "learning_rate": {"float": [0.01, 0.3]},
    "C": {"float": [0.001, 100.0], "log": True},
    "max_depth": {"choice": [None, 3, 6]},
}


def clearml_space() -> Any:
    params = with_tune({"experiments": {}, "families": {}})
    space_type = type(params.tune).model_fields["families"].annotation
    from pydantic import TypeAdapter

    return TypeAdapter(space_type).validate_python({"linear": CLEARML_SPACE})["linear"]


@pytest.mark.clearml
@pytest.mark.parametrize(("metric", "sign"), [("f1", "max"), ("rmse", "min")])
def test_the_clearml_optimizer_gets_the_space_objective_and_queue(
    offline_clearml: Path, metric: str, sign: str
) -> None:
    from clearml.automation import (
        DiscreteParameterRange,
        LogUniformParameterRange,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )
    from clearml.automation.optuna import OptimizerOptuna
    from optuna.samplers import TPESampler

    optimizer = build_optimizer(
        "base-task-id", clearml_space(), metric, "gpu-queue", trials=7, seed=42
    )

    ranges = {parameter.name: parameter for parameter in optimizer.hyper_parameters}
    assert list(ranges) == [
        "General/n_estimators",
        "General/learning_rate",
        "General/C",
        "General/max_depth",
    ]
    estimators = ranges["General/n_estimators"]
    assert isinstance(estimators, UniformIntegerParameterRange)
    assert (estimators.min_value, estimators.max_value, estimators.step_size) == (50, 400, 10)
    assert type(ranges["General/learning_rate"]) is UniformParameterRange
    assert isinstance(ranges["General/C"], LogUniformParameterRange)
    assert isinstance(ranges["General/max_depth"], DiscreteParameterRange)
    assert ranges["General/max_depth"].values == [None, 3, 6]
    # what Optuna is asked for: the log range's exponents come back as the bounds
    optuna_space = optimizer.optimizer._convert_hyper_parameters_to_optuna()
    kind, bounds = optuna_space["General/C"]
    assert kind == "suggest_float" and bounds["log"] is True
    assert math.isclose(bounds["low"], 0.001) and math.isclose(bounds["high"], 100.0)
    assert optuna_space["General/n_estimators"][1] == {
        "low": 50,
        "high": 400,
        "log": False,
        "step": 10,
    }
    assert optimizer.execution_queue == "gpu-queue"
    assert optimizer.base_task_id == "base-task-id"
    objective = optimizer._objective_metric
    assert (objective.title, objective.series) == ([OBJECTIVE_TITLE], [metric])
    assert objective.get_objective_sign() == [1 if sign == "max" else -1]
    assert isinstance(optimizer.optimizer, OptimizerOptuna)
    assert optimizer.optimizer.total_max_jobs == 7
    assert isinstance(optimizer.optimizer._optuna_sampler, TPESampler)


@pytest.mark.clearml
def test_the_trial_task_runs_the_trial_command_in_the_train_image() -> None:
    arguments = trial_task_arguments("mlrig", "random_forest", "localhost/mlrig/train:abc")
    assert arguments["script"] == "-c mlrig tune-trial random_forest"
    assert arguments["binary"] == "/bin/bash" and arguments["packages"] == ""
    assert arguments["docker"] == "localhost/mlrig/train:abc"
    assert arguments["task_type"] == "training"


@pytest.mark.parametrize(
    ("text", "value"), [("None", None), ("", None), ("12", 12), ("0.5", 0.5), ("gini", "gini")]
)
def test_clearml_values_come_back_typed(text: str, value: Any) -> None:
    assert parse_clearml_value(text) == value


@pytest.mark.clearml
def test_clearml_executor_without_a_server_names_clearml_api_host(project: Path) -> None:
    result = run_mlrig(
        "tune", "random_forest", "--executor", "clearml", "--queue", "q", cwd=project
    )
    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert "CLEARML_API_HOST" in result.stderr
    assert "mlrig tune without --executor" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_optimizers_top_trials_come_back_typed_in_its_order() -> None:
    """What `get_top_experiments_details` returns (ClearML 2.1's shape), read into trials."""
    params = validate_params(read_params_file(REPO_ROOT / "params.yaml"), "params.yaml", REPO_ROOT)
    _, space = resolve_space(params, "knn")
    top = [
        {
            "task_id": f"task-{n}",
            "hyper_parameters": {"General/n_neighbors": str(n)},
            "metrics": {f"{OBJECTIVE_TITLE}/f1": {"value": score}},
        }
        for n, score in ((7, 0.97), (3, 0.91))
    ]

    trials = top_trials(top, params.train.experiments["knn"], space, "f1")

    assert [(trial.number, trial.clearml_task_id, trial.score) for trial in trials] == [
        (0, "task-7", 0.97),
        (1, "task-3", 0.91),
    ]
    assert trials[0].params["n_neighbors"] == 7 and trials[1].params["n_neighbors"] == 3


def test_a_trial_is_cross_validated_on_the_raw_columns_of_a_mixed_table(tmp_path: Path) -> None:
    """A trial fits and scores the model train builds, on the raw columns: text categories,
    booleans and dates are encoded inside it, as in the pipeline."""
    from mlrig.tune import cv_score
    from steps.ingest.ingest import ingest
    from steps.ingest.params import IngestParams
    from steps.train.params import TrainParams
    from tests.support.tables import mixed_table

    (tmp_path / "data").mkdir()
    mixed_table(rows=150).to_csv(tmp_path / "data" / "customers.csv", index=False)
    params = IngestParams(
        source="data/customers.csv", target="outcome", columns={"customer_id": "drop"}
    )
    table, meta = ingest(params, tmp_path)
    train = TrainParams.model_validate(
        {"experiments": {"boosting": {"family": "gradient_boosting", "params": {"max_iter": 30}}}}
    )

    mean, _ = cv_score(table, meta, train, "boosting", "f1", cv_folds(table, meta, 3, seed=0))

    assert mean > 0.7


# --- the xgboost, lightgbm and estimator families ---------------------------------------------


def with_models(tune: dict[str, Any] | None = None) -> Params:
    """The committed params.yaml with an xgboost, a lightgbm and an estimator experiment."""
    document = read_params_file(REPO_ROOT / "params.yaml")
    document["train"]["experiments"] = {
        "xgb": {"family": "xgboost"},
        "lgbm": {"family": "lightgbm"},
        "svm": {"family": "estimator", "class": "sklearn.svm.SVC", "params": {"probability": True}},
    }
    if tune is not None:
        document["tune"] = tune
    return validate_params(document, "params.yaml", REPO_ROOT)


@pytest.mark.parametrize("experiment", ["xgb", "lgbm"])
def test_the_committed_spaces_of_the_booster_families_fit_them(experiment: str) -> None:
    family = "xgboost" if experiment == "xgb" else "lightgbm"
    key, space = resolve_space(with_models(), experiment)
    assert key == f"tune.families.{family}" and {"n_estimators", "learning_rate"} <= set(space)


def test_an_estimator_is_searched_only_with_a_space_given_for_it() -> None:
    with pytest.raises(ParamsError, match=r"'svm' \(estimator\) has no search space"):
        resolve_space(with_models(), "svm")
    tune = {"experiments": {"svm": {"C": {"float": [0.1, 10.0], "log": True}}}}
    assert resolve_space(with_models(tune), "svm")[0] == "tune.experiments.svm"


def test_an_estimator_space_is_checked_against_its_class() -> None:
    tune = {"experiments": {"svm": {"gama": {"float": [0.1, 1.0]}, "C": {"choice": [1.0]}}}}
    with pytest.raises(ParamsError) as caught:
        resolve_space(with_models(tune), "svm")
    message = str(caught.value)
    assert (
        "tune.experiments.svm.gama: SVC has no param 'gama' (its params: C, break_ties" in message
    )
    assert "svm.C" not in message


@pytest.mark.parametrize("experiment", ["xgb", "lgbm", "svm"])
def test_a_trial_of_each_family_is_fitted_and_scored(experiment: str) -> None:
    import pandas as pd

    from mlrig.experiments.tables import TableMeta
    from mlrig.tune import cv_score, trial_params, with_trial_params

    space = {
        "svm": {"C": 3.0},
        "xgb": {"n_estimators": 7},
        "lgbm": {"num_leaves": 9, "min_child_samples": 3},
    }
    params = with_models()
    chosen = params.train.experiments[experiment]
    values = trial_params(chosen.family, chosen.params, space[experiment])
    train = with_trial_params(params.train, experiment, values)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    table["target"] = np.where(table["a"] > 0, "yes", "no")
    meta = TableMeta(
        dataset="t",
        source="t",
        target="target",
        task="classification",
        features=["a", "b"],
        rows=60,
    )

    score, _ = cv_score(table, meta, train, experiment, "f1", cv_folds(table, meta, 3, seed=0))

    assert train.experiments[experiment].params.model_dump().items() >= space[experiment].items()
    assert 0.5 < score <= 1.0
