"""Tracking facade: one MLflow run and one ClearML task per tracked step, linked both ways.

MLflow gets the params, metrics, plots and models; ClearML gets the same params, scalars and
plots as an offline session (or on its server when one is configured). Each carries the other's
id, plus the lineage tags of `mlrig.lineage`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrig.errors import ConfigError
from mlrig.lineage import git_commit
from mlrig.settings import Settings

if TYPE_CHECKING:  # heavy imports stay inside functions so `mlrig --help` is fast
    from clearml import Task
    from matplotlib.figure import Figure
    from mlflow.entities import Run

TAG_PIPELINE_RUN = "mlrig.pipeline_run_id"
TAG_GIT_COMMIT = "mlrig.git_commit"
TAG_CLEARML_TASK = "mlrig.clearml_task_id"
TAG_STEP = "mlrig.step"
TAG_EXPERIMENT = "mlrig.experiment"
TAG_DATA_MD5 = "mlrig.data.md5"
TAG_IMAGE = "mlrig.image"
#: the host and pid of the `mlrig run` a pipeline run belongs to: one left RUNNING by a dead pid
#: is closed by the next run
TAG_HOST = "mlrig.host"
TAG_PID = "mlrig.pid"
#: MLflow 3's UI opens an experiment of this kind on its runs and models, not its GenAI views
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# MLflow's client retries a server that never answers for about 20 minutes (7 retries, 120 s
# timeout, backoff factor 2); these bound it to about 3 minutes per request, retries included
MLFLOW_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
}
#: MLflow downloads artifacts from presigned S3 URLs when the server proxies an S3 store; those
#: name the store as the server reaches it (a cluster Service such as mlrig-s3:8333), which a
#: container or a client outside the cluster cannot: artifacts go through the tracking server
MLFLOW_PROXIED_DOWNLOADS = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}
#: Task.init's `auto_connect_frameworks`: no framework is patched, and no repository is
#: detected. Detection runs `git status` and `git diff` in the step, which raced a parallel
#: stage's `git add dvc.lock` for .git/index.lock, and stores the uncommitted diff in the task,
#: secrets included; the commit is a lineage tag instead. (A key left out would mean True.)
CLEARML_AUTO_CONNECT: dict[str, bool] = {
    name: False
    for name in (
        "detect_repository",
        "matplotlib",
        "tensorflow",
        "tensorboard",
        "tfdefines",
        "pytorch",
        "xgboost",
        "scikit",
        "joblib",
        "fastai",
        "lightgbm",
        "hydra",
        "megengine",
        "catboost",
        "gradio",
    )
}


def setup_mlflow(settings: Settings, experiment_name: str | None = None) -> str:
    """Point MLflow at the configured store and return the experiment id (created if new),
    marked as model training (`mlflow.experimentKind`).

    Args:
        experiment_name: another experiment than the pipeline's (MLRIG_EXPERIMENT), e.g.
            the one of `mlrig tune`'s searches.

    Raises:
        ConfigError: the tracking server cannot be reached or refuses the request.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if settings.uses_local_mlflow:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    for name, value in (MLFLOW_HTTP_BOUNDS | MLFLOW_PROXIED_DOWNLOADS).items():  # the user's win
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        name = experiment_name or settings.mlflow_experiment
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            location = settings.artifact_root.as_uri() if settings.uses_local_mlflow else None
            return mlflow.create_experiment(
                name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING_KIND}
            )
        if TAG_EXPERIMENT_KIND not in experiment.tags:  # one made before mlrig marked them
            mlflow.MlflowClient().set_experiment_tag(
                experiment.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING_KIND
            )
        return experiment.experiment_id
    except MlflowException as error:
        first_line = error.message.splitlines()[0]
        raise ConfigError(
            f"MLflow at {settings.tracking_uri} refused the request: {first_line}. "
            "Check MLFLOW_TRACKING_URI and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."
        ) from None


def configure_clearml(settings: Settings) -> None:
    """Send ClearML's cache and offline sessions into the project, with mlrig's SDK defaults."""
    os.environ.setdefault("CLEARML_CACHE_DIR", str(settings.clearml_cache_dir))
    if "CLEARML_CONFIG_FILE" not in os.environ:
        conf = resources.files("mlrig") / "clearml-offline.conf"
        os.environ["CLEARML_CONFIG_FILE"] = str(conf)
    if settings.clearml_is_offline:
        os.environ["CLEARML_OFFLINE_MODE"] = "1"


def start_clearml_task(settings: Settings, step: str, name: str, tags: list[str]) -> Task:
    """Open the ClearML task of one step (an offline session unless a server is configured)."""
    configure_clearml(settings)
    from clearml import Task

    if settings.clearml_is_offline:
        Task.set_offline(offline_mode=True)
    task = Task.init(
        project_name=settings.clearml_project,
        task_name=name,
        task_type=Task.TaskTypes.training if step == "train" else Task.TaskTypes.data_processing,
        tags=[f"step:{step}", *tags],
        reuse_last_task_id=False,
        auto_connect_frameworks=CLEARML_AUTO_CONNECT,
        auto_connect_arg_parser=False,
        auto_resource_monitoring=False,
        auto_connect_streams=False,
    )
    return task


@dataclass
class StepRun:
    """What a tracked step logs to; every call goes to MLflow (when a run is open) and ClearML."""

    step: str
    clearml_task: Task
    mlflow_run_id: str | None = None
    _iteration: int = field(default=0, repr=False)

    @property
    def clearml_task_id(self) -> str:
        return str(self.clearml_task.id)

    def log_params(self, params: dict[str, Any]) -> None:
        self.clearml_task.connect(dict(params), name="params")
        if self.mlflow_run_id:
            import mlflow

            mlflow.log_params({key: param_text(value) for key, value in params.items()})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        logger = self.clearml_task.get_logger()
        for name, value in metrics.items():
            logger.report_single_value(name, value)
        if self.mlflow_run_id:
            import mlflow

            mlflow.log_metrics(metrics)

    def log_figure(self, figure: Figure, name: str) -> None:
        self.clearml_task.get_logger().report_matplotlib_figure(
            title=Path(name).stem, series=self.step, figure=figure, iteration=0, report_image=True
        )
        if self.mlflow_run_id:
            import mlflow

            mlflow.log_figure(figure, f"plots/{name}")

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A table (ClearML's table plot; MLflow's run table when a run is open)."""
        import pandas as pd

        frame = pd.DataFrame(rows)
        self.clearml_task.get_logger().report_table(
            title=name, series=self.step, iteration=0, table_plot=frame
        )
        if self.mlflow_run_id:
            import mlflow

            mlflow.log_table(data=frame, artifact_file=f"{name}.json")

    def log_artifact(self, path: Path) -> None:
        self.clearml_task.upload_artifact(path.name, artifact_object=path, wait_on_upload=True)
        if self.mlflow_run_id:
            import mlflow

            mlflow.log_artifact(str(path))


def param_text(value: Any) -> str:
    """A param value as MLflow stores it (None as the word, as ClearML shows it)."""
    return "None" if value is None else str(value)


def lineage_tags(settings: Settings, step: str) -> dict[str, str]:
    """Tags every MLflow run and ClearML task of this pipeline run carries."""
    # in a step container the workspace is no git checkout: the executor passes the commit
    commit = settings.git_commit or git_commit(settings.root)
    tags = {TAG_STEP: step, TAG_GIT_COMMIT: commit}
    if settings.pipeline_run_id:
        tags[TAG_PIPELINE_RUN] = settings.pipeline_run_id
    if settings.image:
        tags[TAG_IMAGE] = settings.image
    return tags


@contextmanager
def tracked_step(
    settings: Settings,
    step: str,
    name: str,
    *,
    mlflow_run_id: str | None = None,
    new_mlflow_run: bool = False,
    tags: dict[str, str] | None = None,
) -> Iterator[StepRun]:
    """Track one step: a ClearML task, plus an MLflow run when asked for.

    Args:
        settings: where to track.
        step: the step's name (`train`, `evaluate`, ...).
        name: the task and run name, e.g. `train@random_forest`.
        mlflow_run_id: resume this MLflow run (evaluate adds to the run train created).
        new_mlflow_run: start a new MLflow run, a child of the pipeline run when there is one.
        tags: extra tags for both.

    Yields:
        The `StepRun` to log to. On an exception the MLflow run is marked FAILED.
    """
    all_tags = {**lineage_tags(settings, step), **(tags or {})}
    task = start_clearml_task(settings, step, name, [f"{k}:{v}" for k, v in all_tags.items()])
    try:
        if not (mlflow_run_id or new_mlflow_run):
            if settings.parent_run_id:  # a step without its own run belongs to the pipeline's
                task.set_user_properties(mlflow_run_id=settings.parent_run_id)
            yield StepRun(step=step, clearml_task=task)
            return
        import mlflow

        experiment_id = setup_mlflow(settings)
        run_args: dict[str, Any] = {"run_id": mlflow_run_id}
        if not mlflow_run_id:
            run_args = {
                "experiment_id": experiment_id,
                "run_name": name,
                "parent_run_id": settings.parent_run_id,
            }
        with mlflow.start_run(**run_args) as run:
            if new_mlflow_run:
                mlflow.set_tags({**all_tags, TAG_CLEARML_TASK: str(task.id)})
            else:  # a resumed run keeps the lineage of the step that created it
                mlflow.set_tag(f"{TAG_CLEARML_TASK}.{step}", str(task.id))
                if settings.image:  # and names the image this step ran in beside its own
                    mlflow.set_tag(f"{TAG_IMAGE}.{step}", settings.image)
            task.set_user_properties(mlflow_run_id=run.info.run_id)
            yield StepRun(step=step, clearml_task=task, mlflow_run_id=run.info.run_id)
    finally:
        task.close()


def experiment_runs(
    settings: Settings, experiment_name: str, filter_string: str, order_by: list[str], limit: int
) -> list[Run]:
    """The runs of a named experiment of the configured store that the filter keeps, in the
    given order; none when the experiment does not exist (nothing was ever logged to it)."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return list(
        client.search_runs(
            [experiment.experiment_id],
            filter_string=filter_string,
            order_by=order_by,
            max_results=limit,
        )
    )
