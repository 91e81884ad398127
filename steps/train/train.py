"""Train: fit one experiment from `train.experiments` and log it to MLflow and ClearML.

DVC runs one instance of this stage per experiment (`train@<name>`), so each is cached on its
own. The fitted model is written in MLflow's format as the stage's output (the evaluate and
register steps read it from there) and logged to the experiment's MLflow run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlrig.errors import ParamsError, exits_cleanly
from mlrig.experiments.params import load_section
from mlrig.experiments.results import RUN_FILE, TrainOutput
from mlrig.experiments.tables import TableMeta, read_meta, read_parquet
from mlrig.progress import phase
from steps.split import TRAIN_FILE
from steps.train.estimator import check_estimator
from steps.train.families import build_pipeline, fit_pipeline, scale_note
from steps.train.features import raw_features
from steps.train.params import EstimatorExperiment, TrainParams

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from mlrig.tracking.step_run import StepRun
    from steps.train.model_format import ModelFormat

MODEL_DIR = "model"
EXAMPLE_ROWS = 5


def fit(
    train_table: pd.DataFrame, meta: TableMeta, name: str, params: TrainParams
) -> tuple[Pipeline, float]:
    """Fit experiment `name` on the train table.

    Returns:
        The fitted pipeline and the fit time in seconds.

    Raises:
        ParamsError: `name` is not in `train.experiments`, or its estimator class does not fit
            the task or its params.
    """
    pipeline, fit_seconds, _ = fit_experiment(train_table, meta, name, params)
    return pipeline, fit_seconds


def fit_experiment(
    train_table: pd.DataFrame, meta: TableMeta, name: str, params: TrainParams
) -> tuple[Pipeline, float, dict[str, float]]:
    """`fit`, plus what the fit found (a booster's rounds when it stopped early)."""
    if name not in params.experiments:
        known = ", ".join(params.experiments)
        raise ParamsError(f"Experiment {name!r} is not in train.experiments ({known}).")
    experiment = params.experiments[name]
    if isinstance(experiment, EstimatorExperiment):
        check_estimator(name, experiment, meta.task)  # errors name the experiment's keys
    pipeline = build_pipeline(experiment.family, experiment.params, meta, params.seed)
    features, target = raw_features(train_table, meta), train_table[meta.target]
    phase(f"fitting {name} ({experiment.family}) on {len(target)} train rows")
    started = time.perf_counter()
    found = fit_pipeline(pipeline, experiment.params, features, target, meta, params.seed)
    return pipeline, time.perf_counter() - started, found


def save_and_log_model(
    pipeline: Pipeline,
    family: str,
    train_table: pd.DataFrame,
    meta: TableMeta,
    model_dir: Path,
) -> tuple[str, ModelFormat]:
    """Write the model in MLflow format to `model_dir` and log it to the active run
    (steps/train/model_format.py says how each family is stored, and why).

    Returns:
        The logged model's URI (what the registry registers), and how it is stored.
    """
    import shutil

    import mlflow
    from mlflow.models import infer_signature

    from mlrig.tracking.train_runs import TAG_MODEL_MD5, TAG_MODEL_URI
    from steps.train.canonical import canonical_model_dir, content_md5
    from steps.train.model_format import log_model, model_format, save_model

    example = raw_features(train_table.head(EXAMPLE_ROWS), meta)
    signature = infer_signature(example, pipeline.predict(example))
    fmt = model_format(pipeline, family)
    shutil.rmtree(model_dir, ignore_errors=True)
    save_model(model_dir, pipeline=pipeline, fmt=fmt, signature=signature, input_example=example)
    canonical_model_dir(model_dir)
    model_uri = log_model(pipeline, fmt, signature, example, name=MODEL_DIR)
    mlflow.set_tags({**fmt.tags(), TAG_MODEL_MD5: content_md5(model_dir), TAG_MODEL_URI: model_uri})
    return model_uri, fmt


def log_training(run: StepRun, name: str, params: TrainParams, meta: TableMeta) -> dict[str, Any]:
    """Log the experiment's params to both trackers; returns them flat."""
    experiment = params.experiments[name]
    flat = {
        "experiment": name,
        "family": experiment.family,
        "seed": params.seed,
        "task": meta.task,
        "dataset": meta.dataset,
        **({"class": experiment.class_path} if isinstance(experiment, EstimatorExperiment) else {}),
        **experiment.params.model_dump(),
    }
    run.log_params(flat)
    return flat


app = typer.Typer(add_completion=False, help="Fit one experiment and log it.")


@app.command()
@exits_cleanly
def main(
    experiment: Annotated[str, typer.Option(help="key in train.experiments")],
    split_dir: Annotated[Path, typer.Option(help="folder with train.parquet")],
    out_dir: Annotated[Path, typer.Option(help="folder for the model and run.json")],
    params: Annotated[Path, typer.Option(help="params.yaml; reads its `train` section")] = Path(
        "params.yaml"
    ),
) -> None:
    """Fit the experiment, write its model and log the run."""
    from mlrig.lineage import file_md5
    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import TAG_DATA_MD5, TAG_EXPERIMENT, tracked_step
    from mlrig.tracking.train_runs import FIT_SECONDS
    from steps.train.canonical import content_md5

    section = load_section(params, "train", TrainParams)
    meta = read_meta(split_dir)
    phase(f"reading {split_dir / TRAIN_FILE}")
    train_table = read_parquet(split_dir / TRAIN_FILE)
    pipeline, fit_seconds, found = fit_experiment(train_table, meta, experiment, section)
    train_md5 = file_md5(split_dir / TRAIN_FILE)
    settings = load_settings()
    tags = {TAG_EXPERIMENT: experiment, TAG_DATA_MD5: train_md5}
    with tracked_step(
        settings, "train", f"train@{experiment}", new_mlflow_run=True, tags=tags
    ) as run:
        phase("saving the model and logging it to MLflow")
        flat = log_training(run, experiment, section, meta)
        run.log_metrics({FIT_SECONDS: fit_seconds, **found})
        _, fmt = save_and_log_model(
            pipeline, flat["family"], train_table, meta, out_dir / MODEL_DIR
        )
        output = TrainOutput(
            experiment=experiment,
            family=flat["family"],
            params=section.experiments[experiment].params.model_dump(),
            task=meta.task,
            dataset=meta.dataset,
            train_md5=train_md5,
            model_md5=content_md5(out_dir / MODEL_DIR),
        )
        (out_dir / RUN_FILE).write_text(json.dumps(output.model_dump(), indent=2) + "\n")
    stopped = (
        f" ({found['best_iteration']:.0f} rounds, stopped early)"
        if "best_iteration" in found
        else ""
    )
    flavors = f"{' and '.join(fmt.flavors)} flavor{'s' if len(fmt.flavors) > 1 else ''}"
    typer.echo(
        f"train@{experiment}: fitted in {fit_seconds:.2f}s{stopped}, MLflow run "
        f"{run.mlflow_run_id}; model in the {flavors}, saved with {fmt.serialization}"
    )
    if fmt.reason:
        typer.echo(f"train@{experiment}: {fmt.reason}")
    if note := scale_note(section.experiments[experiment].params, len(train_table)):
        typer.echo(f"train@{experiment}: {note}")
