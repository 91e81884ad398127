"""The same fit writes the same model bytes (steps/train/canonical.py), and the run that logged
them is found by them (mlrig.tracking.train_runs)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlrig.errors import DataError
from mlrig.experiments.results import TrainOutput
from mlrig.settings import Settings
from mlrig.tracking.step_run import TAG_EXPERIMENT, TAG_STEP, setup_mlflow
from mlrig.tracking.train_runs import find_train_run, run_finder
from steps.train.canonical import content_md5
from steps.train.tests.test_train import features, fit_family, load_dataset
from steps.train.train import save_and_log_model


def file_bytes(model_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(model_dir.iterdir())}


@pytest.mark.parametrize("family", ["random_forest", "linear", "xgboost", "lightgbm"])
def test_two_fits_of_the_same_inputs_write_the_same_bytes(
    family: str, project_settings: Settings, tmp_path: Path
) -> None:
    """Without canonical files every skops array is named after its id() in memory, every
    zip entry and MLmodel carry the time, and MLmodel a random uuid: DVC saw a new output."""
    table, meta = load_dataset("breast_cancer", rows=150)
    saved = []
    for attempt in ("first", "second"):
        pipeline = fit_family(family, table, meta)  # a new object: other ids in memory
        model_dir = tmp_path / attempt / "model"
        with mlflow.start_run(experiment_id=setup_mlflow(project_settings)):
            save_and_log_model(pipeline, family, table, meta, model_dir)
        saved.append(model_dir)

    first, second = (file_bytes(model_dir) for model_dir in saved)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert content_md5(saved[0]) == content_md5(saved[1])
    loaded = mlflow.pyfunc.load_model(str(saved[0]))  # still a model MLflow loads
    np.testing.assert_array_equal(
        loaded.predict(features(table, meta)), pipeline.predict(features(table, meta))
    )


def test_the_run_that_logged_a_model_is_found_by_its_bytes(
    project_settings: Settings, tmp_path: Path
) -> None:
    table, meta = load_dataset("breast_cancer", rows=150)
    pipeline = fit_family("linear", table, meta)
    model_dir = tmp_path / "model"
    experiment_id = setup_mlflow(project_settings)
    tags = {TAG_STEP: "train", TAG_EXPERIMENT: "linear"}
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        model_uri, _ = save_and_log_model(pipeline, "linear", table, meta, model_dir)
        mlflow.log_metric("fit_seconds", 0.5)
    output = TrainOutput(
        experiment="linear",
        family="linear",
        params={},
        task=meta.task,
        dataset=meta.dataset,
        train_md5="0" * 32,
        model_md5=content_md5(model_dir),
    )

    found = find_train_run(project_settings, output)

    assert found is not None
    assert (found.mlflow_run_id, found.mlflow_model_uri) == (run.info.run_id, model_uri)
    assert found.fit_seconds == 0.5
    other_model = output.model_copy(update={"model_md5": "f" * 32})
    assert find_train_run(project_settings, other_model) is None
    other_experiment = output.model_copy(update={"experiment": "forest"})
    with pytest.raises(DataError, match="no run that logged the model of experiment 'forest'"):
        run_finder(project_settings)(other_experiment)
