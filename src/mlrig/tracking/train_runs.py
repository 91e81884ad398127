"""The MLflow run that logged a train output's model, found by what the output holds.

A train output (outputs/train/<experiment>) holds only what its inputs decide: the same inputs
write the same bytes, so DVC finds the same output and a fresh clone's first run leaves dvc.lock
as committed. The run's ids and times are the tracker's: train tags its run with the
experiment and the model's md5, and evaluate, register, the report and `mlrig results` find it
by them (the newest, when the same model was logged more than once: identical bytes).
"""

from __future__ import annotations

from mlrig.errors import DataError, redact
from mlrig.experiments.results import RunFinder, TrainOutput, TrainRun
from mlrig.settings import Settings
from mlrig.tracking.step_run import TAG_CLEARML_TASK, TAG_EXPERIMENT, TAG_STEP, experiment_runs

TAG_MODEL_MD5 = "mlrig.model.md5"
TAG_MODEL_URI = "mlrig.model.uri"
FIT_SECONDS = "fit_seconds"


def find_train_run(settings: Settings, output: TrainOutput) -> TrainRun | None:
    """The newest run of the configured store that logged this output's model, if any."""
    from mlflow.exceptions import MlflowException

    try:
        runs = experiment_runs(
            settings,
            settings.mlflow_experiment,
            f"tags.`{TAG_STEP}` = 'train' and tags.`{TAG_EXPERIMENT}` = '{output.experiment}' "
            f"and tags.`{TAG_MODEL_MD5}` = '{output.model_md5}'",
            ["attributes.start_time DESC"],
            1,
        )
    except MlflowException:
        return None
    if not runs:
        return None
    run = runs[0]
    return TrainRun(
        mlflow_run_id=run.info.run_id,
        mlflow_model_uri=run.data.tags.get(TAG_MODEL_URI, ""),
        fit_seconds=run.data.metrics.get(FIT_SECONDS, float("nan")),
        clearml_task_id=run.data.tags.get(TAG_CLEARML_TASK, ""),
    )


def run_finder(settings: Settings) -> RunFinder:
    """A finder for `load_results` that names the experiment the store has no run of."""

    def find(output: TrainOutput) -> TrainRun:
        run = find_train_run(settings, output)
        if run is None:
            raise DataError(
                f"The MLflow store ({redact(settings.tracking_uri)}) has no run that logged "
                f"the model of experiment {output.experiment!r} (model md5 {output.model_md5}). "
                "Run the pipeline against this store first: mlrig run."
            )
        return run

    return find
