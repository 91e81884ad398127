"""What `mlrig tune` recorded in MLflow, read back: each experiment's latest search on the data
the pipeline trains on, for the report.

A search is a parent run in the experiment `<MLRIG_EXPERIMENT>-tune`, tagged with the searched
experiment and the md5 of the train split; its trials are child runs. These names are the
contract between `mlrig.tune`, which writes them, and this reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlrig.settings import Settings
from mlrig.tracking.step_run import TAG_DATA_MD5, TAG_EXPERIMENT, experiment_runs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

TUNE_EXPERIMENT_SUFFIX = "-tune"
TAG_BEST_TRIAL = "mlrig.tune.best_trial"
TAG_BEST_RUN = "mlrig.tune.best_run_id"
#: the prefix of a trial's cross-validated score (`cv_f1`, its spread `cv_f1_std`)
OBJECTIVE_TITLE = "cv"
BEST_PARAM_PREFIX = "best."


class TunedSearch(BaseModel):
    """One search of an experiment's params: its best trial and how it was found."""

    experiment: str
    family: str
    metric: str
    direction: str
    trials: int
    cv_folds: int
    best_trial: int
    best_score: float  # the best trial's mean cross-validated score on the train split
    best_score_std: float | None  # its spread over the folds
    best_params: dict[str, str]  # the searched params of the best trial, as logged
    mlflow_run_id: str  # the search's parent run
    mlflow_experiment_id: str
    started: int  # milliseconds since the epoch


def tune_experiment_name(settings: Settings) -> str:
    """The MLflow experiment of the searches: apart from the pipeline's, whose runs, counts,
    table and report are the pipeline's experiments alone."""
    return f"{settings.mlflow_experiment}{TUNE_EXPERIMENT_SUFFIX}"


def latest_searches(settings: Settings, experiments: list[str], data_md5: str) -> list[TunedSearch]:
    """The latest finished search of each of `experiments` on the train split with `data_md5`.

    Args:
        settings: where the MLflow store is.
        experiments: the experiments of the pipeline, in the order to list them.
        data_md5: the md5 of the train split (a search on other data is not shown).

    Returns:
        One search per experiment that has one, in the order of `experiments`.
    """
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)  # reads each search's best trial
    runs = experiment_runs(
        settings,
        tune_experiment_name(settings),
        f"tags.`{TAG_DATA_MD5}` = '{data_md5}' and attributes.status = 'FINISHED'",
        ["attributes.start_time DESC"],
        1000,
    )
    latest = {}
    for run in runs:  # newest first: the first search of an experiment is its latest
        name = run.data.tags.get(TAG_EXPERIMENT)
        if TAG_BEST_TRIAL in run.data.tags and name in experiments and name not in latest:
            latest[name] = search_of(client, run)
    return [latest[name] for name in experiments if name in latest]


def search_of(client: MlflowClient, run: Run) -> TunedSearch:
    """A search's parent run as a TunedSearch (the spread comes from its best trial's run)."""
    params, metric = run.data.params, run.data.params["metric"]
    best_run_id = run.data.tags.get(TAG_BEST_RUN)
    spread = None
    if best_run_id:
        spread = client.get_run(best_run_id).data.metrics.get(f"{OBJECTIVE_TITLE}_{metric}_std")
    return TunedSearch(
        experiment=run.data.tags[TAG_EXPERIMENT],
        family=params["family"],
        metric=metric,
        direction=params["direction"],
        trials=int(params["trials"]),
        cv_folds=int(params["cv_folds"]),
        best_trial=int(run.data.tags[TAG_BEST_TRIAL]),
        best_score=run.data.metrics[f"best_{OBJECTIVE_TITLE}_{metric}"],
        best_score_std=spread,
        best_params={
            key.removeprefix(BEST_PARAM_PREFIX): value
            for key, value in sorted(params.items())
            if key.startswith(BEST_PARAM_PREFIX)
        },
        mlflow_run_id=run.info.run_id,
        mlflow_experiment_id=run.info.experiment_id,
        started=run.info.start_time,
    )
