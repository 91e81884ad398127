"""Compare and register: pick the champion by the primary metric, register it if it wins.

The best experiment of this run is registered in the MLflow model registry with the alias
`champion` only if it beats the current champion, re-scored on the same test set, by more than
`compare.min_improvement` and beyond noise (the bootstrap interval of the difference excludes
zero: see margin.py); the champion it replaces gets the alias `previous`. A tie keeps the
current champion.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.errors import EXIT_FAILED, MlrigError, exits_cleanly
from mlrig.experiments.metrics import is_better, primary_metric
from mlrig.experiments.params import load_section
from mlrig.experiments.results import (
    CHAMPION_FILE,
    Champion,
    ExperimentResult,
    Margin,
    load_results,
)
from mlrig.experiments.tables import TableMeta, read_meta, read_parquet
from mlrig.progress import phase
from mlrig.tracking.recorded import CHAMPION_ALIAS
from mlrig.tracking.train_runs import TAG_MODEL_MD5
from steps.evaluate import HeldOutPredictions, predict_test
from steps.register.margin import bootstrap_margin, judge
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


def load_model(uri: str, what: str) -> object:
    """The model at an MLflow model URI.

    Raises:
        MlrigError: it could not be downloaded; the registry is left as it is.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.sklearn.load_model(uri)
    except (MlflowException, OSError) as error:  # OSError covers requests' network errors
        # never replace a champion because a model could not be fetched
        raise MlrigError(
            f"Could not load {what} from MLflow at {mlflow.get_tracking_uri()} to score it on "
            f"the test set: {str(error).splitlines()[0]}. The registry is unchanged. Check that "
            "the server and its artifact store answer (mlrig doctor), then run the pipeline "
            "again.",
            exit_code=EXIT_FAILED,
        ) from None


def champion_predictions(
    version: ModelVersion, test_table: pd.DataFrame, meta: TableMeta
) -> HeldOutPredictions | None:
    """The current champion's predictions on this test set; None when it cannot score this data.

    Raises:
        MlrigError: the champion could not be downloaded; the registry is left as it is.
    """
    model = load_model(
        f"models:/{version.name}/{version.version}",
        f"champion version {version.version} of {version.name}",
    )
    try:
        return predict_test(model, test_table, meta)
    except Exception:  # a champion of other columns or classes cannot score this table at all
        return None


def experiment_predictions(
    result: ExperimentResult, test_table: pd.DataFrame, meta: TableMeta
) -> HeldOutPredictions:
    """An experiment's predictions on the test set, from the model its train stage logged."""
    model = load_model(result.record.mlflow_model_uri, f"the model of experiment {result.name}")
    return predict_test(model, test_table, meta)


@dataclass
class Data:
    """The test set the experiments and the champion are compared on."""

    table: pd.DataFrame
    meta: TableMeta
    metric: str


@dataclass
class Decision:
    """Whether this run's best becomes the champion, and why."""

    promote: bool
    incumbent: ModelVersion | None
    reason: str
    margin: Margin | None = None  # the best against the champion, when it was re-scored


def holds(version: ModelVersion, result: ExperimentResult) -> bool:
    """True when the registered version is the experiment's model: logged by its run, or the
    same bytes (the same inputs fit it again in a later run)."""
    return version.run_id == result.record.mlflow_run_id or (
        version.tags.get(TAG_MODEL_MD5) == result.record.model_md5
    )


def decide(
    client: MlflowClient,
    best: ExperimentResult,
    best_predictions: Callable[[], HeldOutPredictions],
    name: str,
    test: Data,
    params: CompareParams,
) -> Decision:
    """Whether `best` should become the champion: only when it beats the current champion,
    re-scored on the same test rows, beyond `compare.min_improvement` and beyond noise."""
    incumbent = current_champion(client, name)
    if incumbent is None:
        return Decision(True, None, f"first champion of {name}")
    if holds(incumbent, best):
        return Decision(
            False, incumbent, f"{best.name} is already the champion (version {incumbent.version})"
        )
    incumbent_predictions = champion_predictions(incumbent, test.table, test.meta)
    if incumbent_predictions is None:
        return Decision(
            True, incumbent, f"champion version {incumbent.version} cannot score this data"
        )
    margin = bootstrap_margin(
        best_predictions(),
        incumbent_predictions,
        test.metric,
        f"champion version {incumbent.version}",
        params,
    )
    promote, reason = judge(margin, params.min_improvement)
    return Decision(promote, incumbent, reason, margin)


def margin_tags(prefix: str, margin: Margin | None) -> dict[str, str]:
    """A margin as registry tags: `<prefix>.versus`, `.difference`, `.interval`."""
    if margin is None:
        return {}
    return {
        f"{prefix}.versus": margin.versus,
        f"{prefix}.difference": f"{margin.difference:+.6f}",
        f"{prefix}.interval": (
            f"[{margin.low:+.6f}, {margin.high:+.6f}] at {margin.confidence:.0%}, "
            f"{margin.resamples} resamples of {margin.rows} test rows, seed {margin.seed}"
        ),
    }


def register(
    client: MlflowClient,
    best: ExperimentResult,
    name: str,
    metric: str,
    pipeline_run_id: str | None,
    decision: Decision,
) -> ModelVersion:
    """Register the best model's logged version, tagged with why; the caller moves the
    aliases."""
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
        TAG_MODEL_MD5: best.record.model_md5,
        "mlrig.pipeline_run_id": pipeline_run_id or "",
        "mlrig.decision": decision.reason,
        **margin_tags("mlrig.margin", decision.margin),
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


def tag_challenge(
    client: MlflowClient, best: ExperimentResult, decision: Decision, pipeline_run_id: str | None
) -> None:
    """On the champion that stayed: which challenger it held off, by how much, and why."""
    if decision.incumbent is None or decision.margin is None:
        return
    tags = {
        "mlrig.challenge.experiment": best.name,
        "mlrig.challenge.run_id": best.record.mlflow_run_id,
        "mlrig.challenge.pipeline_run_id": pipeline_run_id or "",
        "mlrig.challenge.reason": decision.reason,
        **margin_tags("mlrig.challenge", decision.margin),
    }
    for key, value in tags.items():
        client.set_model_version_tag(
            decision.incumbent.name, str(decision.incumbent.version), key, value
        )


def runner_up_margin(
    results: list[ExperimentResult],
    best: ExperimentResult,
    best_predictions: Callable[[], HeldOutPredictions],
    test: Data,
    params: CompareParams,
) -> Margin | None:
    """This run's best against its second best, on the same test rows (None: one experiment)."""
    others = [result for result in results if result is not best]
    if not others:
        return None
    runner_up = best_result(others, test.metric)
    return bootstrap_margin(
        best_predictions(),
        experiment_predictions(runner_up, test.table, test.meta),
        test.metric,
        runner_up.name,
        params,
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
    test = Data(test_table, meta, primary_metric(params.metric, meta.task))  # type: ignore[arg-type]
    name = registered_model_name(params, meta)
    best = best_result(results, test.metric)
    best_predictions = cache(lambda: experiment_predictions(best, test_table, meta))
    decision = decide(client, best, best_predictions, name, test, params)
    incumbent = decision.incumbent
    version = str(incumbent.version) if incumbent and not decision.promote else None
    if decision.promote:
        created = register(client, best, name, test.metric, pipeline_run_id, decision)
        if incumbent is not None:
            client.set_registered_model_alias(name, PREVIOUS_ALIAS, incumbent.version)
        client.set_registered_model_alias(name, CHAMPION_ALIAS, created.version)
        version = str(created.version)
    else:
        tag_challenge(client, best, decision, pipeline_run_id)
    return Champion(
        experiment=best.name,
        metric=test.metric,
        value=best.metrics[test.metric],
        registered_model=name,
        registered=decision.promote,
        is_champion=decision.promote or (incumbent is not None and holds(incumbent, best)),
        version=version,
        previous_version=str(incumbent.version) if decision.promote and incumbent else None,
        reason=decision.reason,
        min_improvement=params.min_improvement,
        incumbent_experiment=incumbent.tags.get("mlrig.experiment") if incumbent else None,
        versus_champion=decision.margin,
        versus_runner_up=runner_up_margin(results, best, best_predictions, test, params),
    )


def margin_metrics(champion: Champion) -> dict[str, float]:
    """The margins of the decision as metrics of the register run: `margin_champion_low`, ..."""
    metrics = {}
    for against, margin in (
        ("champion", champion.versus_champion),
        ("runner_up", champion.versus_runner_up),
    ):
        if margin is not None:
            metrics[f"margin_{against}"] = margin.difference
            metrics[f"margin_{against}_low"] = margin.low
            metrics[f"margin_{against}_high"] = margin.high
    return metrics


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
    from mlrig.tracking.train_runs import run_finder

    settings = load_settings()
    section = load_section(params, SECTION_NAME, CompareParams)
    names = list(load_section(params, "train", TrainParams).experiments)
    meta = read_meta(split_dir)
    setup_mlflow(settings)
    results = load_results(train_dir, evaluate_dir, names, run_finder(settings))
    client = MlflowClient(settings.tracking_uri)
    with tracked_step(settings, "register", "register") as run:
        phase(f"comparing {len(results)} experiments on the test set (bootstrap margins)")
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
        run.log_params(
            {
                "metric": champion.metric,
                "registered_model": champion.registered_model,
                "min_improvement": section.min_improvement,
                "confidence": section.confidence,
                "bootstrap_resamples": section.bootstrap_resamples,
                "seed": section.seed,
            }
        )
        run.log_metrics({f"champion_{champion.metric}": champion.value, **margin_metrics(champion)})
        best = next(result for result in results if result.name == champion.experiment)
        run.clearml_task.set_user_properties(mlflow_champion_run_id=best.record.mlflow_run_id)
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
