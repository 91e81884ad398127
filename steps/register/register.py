"""Compare and register: pick the champion by the primary metric, register it if it wins.

The best experiment of this run is registered in the MLflow model registry with the alias
`champion` only if it beats the current champion re-scored on the same test set; the champion
it replaces gets the alias `previous`. A tie keeps the current champion.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.errors import EXIT_FAILED, MlrigError, exits_cleanly
from mlrig.experiments.metrics import is_better, primary_metric
from mlrig.experiments.params import load_section
from mlrig.experiments.results import CHAMPION_FILE, Champion, ExperimentResult, load_results
from mlrig.experiments.tables import TableMeta, read_meta, read_parquet
from mlrig.tracking.recorded import CHAMPION_ALIAS
from steps.evaluate import model_metrics
from steps.register.params import SECTION_NAME, CompareParams
from steps.split import TEST_FILE
from steps.train.params import TrainParams

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

PREVIOUS_ALIAS = "previous"
NAME_HASH_LENGTH = 8  # hex digits of the suffix that keeps changed dataset names apart


def registered_model_name(params: CompareParams, meta: TableMeta) -> str:
    """`compare.registered_model`, or `mlrig-<dataset>` so each dataset has its own champion.

    The dataset name is transliterated to ASCII (`données` -> `donnees`) and what stays outside
    letters, digits, `_`, `.` and `-` becomes `_`. When that changed the name, a short hash of
    the name as written is appended, so two datasets never share a champion
    (`données ✓` -> `mlrig-donnees-<hash>`, `donnees` -> `mlrig-donnees`).
    """
    if params.registered_model != "auto":
        return params.registered_model
    return "mlrig-" + safe_name(meta.dataset)


def safe_name(name: str) -> str:
    """`name` in the characters a registered model name keeps, distinct names kept distinct."""
    import hashlib
    import unicodedata

    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_name).strip("_")
    if safe == name:
        return safe
    digest = hashlib.sha256(name.encode()).hexdigest()[:NAME_HASH_LENGTH]
    return f"{safe or 'dataset'}-{digest}"


def best_result(results: list[ExperimentResult], metric: str) -> ExperimentResult:
    """The experiment with the best value of `metric` (the first one listed wins a tie)."""
    best = results[0]
    for result in results[1:]:
        if is_better(result.metrics[metric], best.metrics[metric], metric):
            best = result
    return best


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:  # no such model or no such alias yet
        return None


def rescore(
    version: ModelVersion, test_table: pd.DataFrame, meta: TableMeta, metric: str
) -> float | None:
    """The current champion's `metric` on this test set; None when it cannot score this data.

    Raises:
        MlrigError: the champion could not be downloaded; the registry is left as it is.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.sklearn.load_model(f"models:/{version.name}/{version.version}")
    except (MlflowException, OSError) as error:  # OSError covers requests' network errors
        # never replace a champion because it could not be fetched
        raise MlrigError(
            f"Could not load champion version {version.version} of {version.name} from "
            f"MLflow at {mlflow.get_tracking_uri()} to re-score it: "
            f"{str(error).splitlines()[0]}. The registry is unchanged. Check that the server "
            "and its artifact store answer (mlrig doctor), then run the pipeline again.",
            exit_code=EXIT_FAILED,
        ) from None
    try:
        return model_metrics(model, test_table, meta)[metric]
    except Exception:  # a champion of other columns or classes cannot score this table at all
        return None


def decide(
    client: MlflowClient,
    best: ExperimentResult,
    metric: str,
    name: str,
    test_table: pd.DataFrame,
    meta: TableMeta,
) -> tuple[bool, ModelVersion | None, str]:
    """Whether `best` should become the champion, the current champion, and why."""
    value = best.metrics[metric]
    incumbent = current_champion(client, name)
    if incumbent is None:
        return True, None, f"first champion of {name}"
    if incumbent.run_id == best.record.mlflow_run_id:
        return (
            False,
            incumbent,
            f"{best.name} is already the champion (version {incumbent.version})",
        )
    incumbent_value = rescore(incumbent, test_table, meta, metric)
    if incumbent_value is None:
        return True, incumbent, f"champion version {incumbent.version} cannot score this data"
    if is_better(value, incumbent_value, metric):
        return (
            True,
            incumbent,
            (
                f"{metric} {value:.4f} beats champion version {incumbent.version} "
                f"({incumbent_value:.4f} on the same test set)"
            ),
        )
    return (
        False,
        incumbent,
        (
            f"{metric} {value:.4f} does not beat champion version {incumbent.version} "
            f"({incumbent_value:.4f} on the same test set)"
        ),
    )


def register(
    client: MlflowClient,
    best: ExperimentResult,
    name: str,
    metric: str,
    pipeline_run_id: str | None,
) -> ModelVersion:
    """Register the best model's logged version and move the aliases."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Champion models chosen by mlrig.")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {
        "mlrig.experiment": best.name,
        f"mlrig.metric.{metric}": f"{best.metrics[metric]:.6f}",
        "mlrig.data.md5": best.record.train_md5,
        "mlrig.pipeline_run_id": pipeline_run_id or "",
    }
    # a run cut off between registering and moving the aliases left a version: reuse it
    for existing in client.search_model_versions(f"name = '{name}'"):
        if existing.run_id == best.record.mlflow_run_id:
            return existing
    model_id = best.record.mlflow_model_uri.removeprefix("models:/")  # a LoggedModel's URI
    return client.create_model_version(
        name,
        source=best.record.mlflow_model_uri,
        run_id=best.record.mlflow_run_id,
        tags=tags,
        model_id=model_id,
    )


def compare_and_register(
    client: MlflowClient,
    results: list[ExperimentResult],
    params: CompareParams,
    test_table: pd.DataFrame,
    meta: TableMeta,
    pipeline_run_id: str | None = None,
) -> Champion:
    """Pick the best experiment and register it if it beats the current champion.

    Args:
        client: the MLflow client of the tracking store with the registry.
        results: every experiment's record and metrics.
        params: the `compare` section of params.yaml.
        test_table: the held-out set, to re-score the current champion on the same data.
        meta: what the table's columns are.
        pipeline_run_id: tagged on a new model version.

    Returns:
        The decision, with the registered version when there is a new one.
    """
    metric = primary_metric(params.metric, meta.task)  # type: ignore[arg-type]
    name = registered_model_name(params, meta)
    best = best_result(results, metric)
    promote, incumbent, reason = decide(client, best, metric, name, test_table, meta)
    version = str(incumbent.version) if incumbent and not promote else None
    if promote:
        created = register(client, best, name, metric, pipeline_run_id)
        if incumbent is not None:
            client.set_registered_model_alias(name, PREVIOUS_ALIAS, incumbent.version)
        client.set_registered_model_alias(name, CHAMPION_ALIAS, created.version)
        version = str(created.version)
    return Champion(
        experiment=best.name,
        metric=metric,
        value=best.metrics[metric],
        mlflow_run_id=best.record.mlflow_run_id,
        registered_model=name,
        registered=promote,
        is_champion=promote
        or (incumbent is not None and incumbent.run_id == best.record.mlflow_run_id),
        version=version,
        previous_version=str(incumbent.version) if promote and incumbent else None,
        reason=reason,
    )


app = typer.Typer(add_completion=False, help="Pick the champion and register it in MLflow.")


@app.command()
@exits_cleanly
def main(
    split_dir: Annotated[Path, typer.Option(help="folder with test.parquet")],
    train_dir: Annotated[Path, typer.Option(help="the train stages' output folder")],
    evaluate_dir: Annotated[Path, typer.Option(help="the evaluate stages' output folder")],
    out_dir: Annotated[Path, typer.Option(help="folder for champion.json")],
    params: Annotated[Path, typer.Option(help="params.yaml; reads `compare` and `train`")] = Path(
        "params.yaml"
    ),
) -> None:
    """Compare the experiments and register the champion."""
    from mlflow import MlflowClient

    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import setup_mlflow, tracked_step

    settings = load_settings()
    section = load_section(params, SECTION_NAME, CompareParams)
    names = list(load_section(params, "train", TrainParams).experiments)
    meta = read_meta(split_dir)
    results = load_results(train_dir, evaluate_dir, names)
    setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    with tracked_step(settings, "register", "register") as run:
        champion = compare_and_register(
            client,
            results,
            section,
            read_parquet(split_dir / TEST_FILE),
            meta,
            settings.pipeline_run_id,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CHAMPION_FILE).write_text(champion.model_dump_json(indent=2) + "\n")
        run.log_params({"metric": champion.metric, "registered_model": champion.registered_model})
        run.log_metrics({f"champion_{champion.metric}": champion.value})
        run.clearml_task.set_user_properties(mlflow_champion_run_id=champion.mlflow_run_id)
    if settings.parent_run_id:
        client.set_tag(settings.parent_run_id, "mlrig.champion", champion.experiment)
        client.log_metric(settings.parent_run_id, f"champion_{champion.metric}", champion.value)
    verdict = (
        f"registered {champion.registered_model} v{champion.version}"
        if champion.registered
        else "kept"
    )
    typer.echo(
        f"register: champion {champion.experiment} ({champion.metric}={champion.value:.4f}); "
        f"{verdict}: {champion.reason}"
    )
