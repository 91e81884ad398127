"""`mlrig tune EXPERIMENT`: search one experiment's train params, scored without the test set.

The search space is params.yaml's `tune` section. Each trial builds the model the train step
builds (`steps.train.fit`) with the trial's params and is scored by cross-validation on the
train split (`outputs/split/train.parquet`) with the metric that picks the champion
(`compare.metric`, through `steps.evaluate.model_metrics`); the held-out test set is never read.

Offline (the default), Optuna runs the search in this process with a sampler seeded by
`train.seed`: one MLflow parent run `tune-<experiment>`, one nested child run per trial, in the
searches' own MLflow experiment `<MLRIG_EXPERIMENT>-tune` (the pipeline's runs, counts, compare
and report see none of them). With a
ClearML server, ClearML's `HyperParameterOptimizer` (`OptimizerOptuna`) runs the same search,
each trial a clone of a base task enqueued for an agent, running `mlrig tune-trial`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ValidationError

from mlrig.errors import DataError, ParamsError
from mlrig.experiments.metrics import LOWER_IS_BETTER, primary_metric
from mlrig.experiments.params import (
    PARAMS_FILE,
    Choice,
    FloatRange,
    IntRange,
    Params,
    SearchSpace,
    Section,
    dump_params,
    read_params_file,
    set_value,
    validate_params,
)
from mlrig.settings import Settings
from mlrig.text import counted
from mlrig.tracking.tuned import (
    BEST_PARAM_PREFIX,
    OBJECTIVE_TITLE,  # the scalar a trial reports: title `cv`, series the metric (`cv_<metric>`)
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    tune_experiment_name,
)
from steps.train.params import FAMILY_PARAMS, EstimatorParams, TrainParams

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from clearml.automation import HyperParameterOptimizer
    from clearml.automation.parameters import Parameter

    from mlrig.experiments.tables import TableMeta

SPLIT_STAGE = "split"
SPLIT_DIR = Path("outputs/split")
TAG_TUNE_RUN = "mlrig.tune_run"
#: the ClearML section a trial task's params live in (what `Task.connect` of a dict uses)
CLEARML_SECTION = "General"
Direction = Literal["minimize", "maximize"]


class TrialResult(BaseModel):
    """One trial: its params (the family's, searched ones included) and its CV score."""

    number: int
    params: dict[str, Any]
    score: float
    score_std: float
    mlflow_run_id: str | None = None
    clearml_task_id: str | None = None


class TuneSummary(BaseModel):
    """What a search did, for the closing table and `--json`."""

    experiment: str
    family: str
    space: str
    metric: str
    direction: Direction
    cv_folds: int
    seed: int
    train_rows: int
    trials: list[TrialResult]
    best: TrialResult
    searched: list[str]
    mlflow_parent_run_id: str | None = None
    #: the MLflow experiment of the search (`<MLRIG_EXPERIMENT>-tune`)
    mlflow_experiment: str | None = None
    clearml_optimizer_task_id: str | None = None
    applied: bool = False
    params_file: str


def tune_experiment(settings: Settings) -> str:
    """The MLflow experiment of the searches (see `mlrig.tracking.tuned`)."""
    return tune_experiment_name(settings)


def direction_of(metric: str) -> Direction:
    """Which way the metric is better (the register step compares the same way)."""
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


# --- the search space -------------------------------------------------------------------------


def resolve_space(params: Params, experiment: str) -> tuple[str, SearchSpace]:
    """The search space of an experiment, checked against its family's params.

    Returns:
        The space's dotted key in params.yaml and the space.

    Raises:
        ParamsError: the experiment is unknown, has no space, or the space names a param its
            family does not have or a range its param cannot take.
    """
    experiments = params.train.experiments
    known = ", ".join(experiments)
    if experiment not in experiments:
        raise ParamsError(
            f"Experiment {experiment!r} is not in train.experiments ({known}). Tune one of "
            "those, or add it to params.yaml first."
        )
    stray = sorted(set(params.tune.experiments) - set(experiments))
    if stray:
        raise ParamsError(
            f"tune.experiments names {', '.join(stray)}, which train.experiments does not have "
            f"({known}). Rename or remove that entry of params.yaml."
        )
    if stray := sorted(set(params.tune.families) - set(FAMILY_PARAMS)):
        raise ParamsError(
            f"tune.families names {', '.join(stray)}, which is no model family "
            f"({', '.join(FAMILY_PARAMS)}). Rename or remove that entry of params.yaml."
        )
    family = experiments[experiment].family
    if experiment in params.tune.experiments:
        key, space = f"tune.experiments.{experiment}", params.tune.experiments[experiment]
    elif family in params.tune.families:
        key, space = f"tune.families.{family}", params.tune.families[family]
    else:
        raise ParamsError(
            f"Experiment {experiment!r} ({family}) has no search space: add "
            f"tune.families.{family} or tune.experiments.{experiment} to params.yaml, e.g. "
            "n_estimators: {int: [50, 400]}."
        )
    if not space:
        raise ParamsError(f"{key} in params.yaml is empty: name at least one param to search.")
    problems = space_problems(key, family, experiments[experiment].params, space)
    if problems:
        raise ParamsError(
            f"The search space {key} does not fit the {family} family:\n"
            + "\n".join(f"  {line}" for line in problems)
            + "\nFix it in params.yaml."
        )
    return key, space


def field_types(schema: type[Section], name: str) -> set[Any]:
    """The types a family param takes (`int | None` -> {int, NoneType})."""
    annotation = schema.model_fields[name].annotation
    return set(get_args(annotation)) or {annotation}


def space_problems(key: str, family: str, current: Section, space: SearchSpace) -> list[str]:
    """Every way `space` does not fit the family: unknown params, values it cannot take."""
    if isinstance(current, EstimatorParams):
        return estimator_space_problems(key, current, space)
    schema = FAMILY_PARAMS[family]
    problems = []
    for name, dimension in space.items():
        where = f"{key}.{name}"
        if name not in schema.model_fields:
            names = ", ".join(schema.model_fields) or "none"
            problems.append(f"{where}: {family} has no param {name!r} (its params: {names})")
            continue
        if isinstance(dimension, FloatRange) and float not in field_types(schema, name):
            problems.append(f"{where}: {name} takes integers; use {{int: [low, high]}}")
            continue
        values = dimension.choice if isinstance(dimension, Choice) else list(dimension.bounds)
        for value in values:
            try:
                schema.model_validate({**current.model_dump(), name: value})
            except ValidationError as error:
                reason = error.errors()[0]["msg"]
                problems.append(f"{where}: {value!r} is not a valid {name}: {reason}")
    return problems


def estimator_space_problems(key: str, current: EstimatorParams, space: SearchSpace) -> list[str]:
    """Every way `space` does not fit a team's own estimator class: a param its constructor
    does not take, a value it refuses (each end of a range and each choice, built in turn).

    Raises:
        ParamsError: the class does not import.
    """
    from steps.train.estimator import accepted_params, construct, import_estimator_class

    estimator_class = import_estimator_class(current.class_path, f"{key} (its class)")
    accepted = accepted_params(estimator_class)
    problems = []
    for name, dimension in space.items():
        where = f"{key}.{name}"
        if accepted is not None and name not in accepted:
            names = ", ".join(sorted(accepted)) or "none"
            problems.append(
                f"{where}: {estimator_class.__name__} has no param {name!r} (its params: {names})"
            )
            continue
        values = dimension.choice if isinstance(dimension, Choice) else list(dimension.bounds)
        for value in values:
            try:
                construct(estimator_class, {**current.model_dump(), name: value}, key)
            except ParamsError as error:
                problems.append(f"{where}: {value!r} is refused: {error}")
    return problems


def trial_params(family: str, current: Section, values: Mapping[str, Any]) -> Section:
    """The family's params with the searched values in place of the experiment's."""
    if isinstance(current, EstimatorParams):  # free-form: its class checks them when built
        return current.model_copy(update=dict(values))
    return FAMILY_PARAMS[family].model_validate({**current.model_dump(), **values})


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask an Optuna trial for a value of every dimension of the space."""
    values: dict[str, Any] = {}
    for name, dimension in space.items():
        match dimension:
            case IntRange(bounds=(low, high), step=step):
                values[name] = trial.suggest_int(name, low, high, step=step)
            case FloatRange(bounds=(low, high), log=log):
                values[name] = trial.suggest_float(name, low, high, log=log)
            case Choice(choice=choices):
                values[name] = trial.suggest_categorical(name, choices)
    return values


# --- the objective ----------------------------------------------------------------------------


def cv_folds(train_table: pd.DataFrame, meta: TableMeta, folds: int, seed: int) -> list[Any]:
    """The seeded folds of the train table (stratified by class for classification).

    Every trial is scored on the same folds, so scores compare.

    Raises:
        DataError: a class (or the table) has fewer rows than folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if meta.task == "classification":
        counts = train_table[meta.target].value_counts()
        if int(counts.min()) < folds:
            raise DataError(
                f"The train split has {counted(int(counts.min()), 'row')} of class "
                f"{counts.idxmin()!r}, "
                f"fewer than tune.cv_folds = {folds}: every fold needs each class. Lower "
                "tune.cv_folds in params.yaml, or use more data."
            )
        splitter: Any = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(train_table, train_table[meta.target]))
    if len(train_table) < folds:
        raise DataError(
            f"The train split has {counted(len(train_table), 'row')}, fewer than "
            f"tune.cv_folds = {folds}."
        )
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(train_table))


def cv_score(
    train_table: pd.DataFrame,
    meta: TableMeta,
    train: TrainParams,
    experiment: str,
    metric: str,
    folds: list[Any],
) -> tuple[float, float]:
    """Mean and standard deviation of `metric` over the folds, the model fitted as train does.

    Args:
        train: the train section with the trial's params in `experiments[experiment]`.
    """
    import statistics

    from steps.evaluate import model_metrics
    from steps.train import fit

    scores = []
    for fit_rows, score_rows in folds:
        fold_train = train_table.iloc[fit_rows].reset_index(drop=True)
        fold_score = train_table.iloc[score_rows].reset_index(drop=True)
        pipeline, _ = fit(fold_train, meta, experiment, train)
        scores.append(float(model_metrics(pipeline, fold_score, meta)[metric]))
    return statistics.fmean(scores), statistics.pstdev(scores)


def with_trial_params(train: TrainParams, experiment: str, params: Section) -> TrainParams:
    """The train section with `experiment` fitted with `params`."""
    chosen = train.experiments[experiment].model_copy(update={"params": params})
    return train.model_copy(update={"experiments": {**train.experiments, experiment: chosen}})


# --- the train split --------------------------------------------------------------------------


def ensure_split(
    settings: Settings, params: Params, on_stage: Callable[[str], None] = lambda stage: None
) -> bool:
    """Bring `outputs/split` up to date (`dvc repro split`) when it is missing or stale.

    The data is checked in memory first (as `mlrig run` does), so bad data changes nothing.

    Returns:
        True when the split stages ran.
    """
    from mlrig.dvc.commands import run_dvc
    from mlrig.dvc.repo import changed_stages
    from mlrig.experiments.preflight import preflight
    from mlrig.run import stage_environment

    root = settings.root
    if not changed_stages(root, SPLIT_STAGE):
        return False
    preflight(params, root)
    run_dvc(
        ["repro", SPLIT_STAGE],
        root,
        stage_environment(settings, None, None),
        settings.state_dir / "logs" / "tune-split.log",
        on_stage,
    )
    return True


def load_train_split(root: Path) -> tuple[pd.DataFrame, TableMeta]:
    from mlrig.experiments.tables import read_meta, read_parquet
    from steps.split import TRAIN_FILE

    return read_parquet(root / SPLIT_DIR / TRAIN_FILE), read_meta(root / SPLIT_DIR)


# --- the offline search -----------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """What every trial of one search shares, checked before the first trial."""

    settings: Settings
    params: Params
    experiment: str
    key: str  # the search space's key in params.yaml's tune section
    space: SearchSpace
    train_table: pd.DataFrame
    meta: TableMeta
    metric: str
    folds: list[Any]
    experiment_id: str  # the searches' MLflow experiment
    tags: dict[str, str]  # the lineage tags of every run of the search

    @property
    def chosen(self) -> Any:
        return self.params.train.experiments[self.experiment]

    @property
    def metric_name(self) -> str:
        return f"{OBJECTIVE_TITLE}_{self.metric}"


def prepare_search(settings: Settings, params: Params, experiment: str) -> Search:
    """The space, the train split, its folds and the MLflow experiment of a search.

    Raises:
        ParamsError: the experiment or its search space is wrong.
        DataError: the train split is too small for the folds.
    """
    from mlrig.lineage import file_md5
    from mlrig.tracking.step_run import TAG_DATA_MD5, TAG_EXPERIMENT, lineage_tags, setup_mlflow
    from steps.split import TRAIN_FILE

    key, space = resolve_space(params, experiment)
    train_table, meta = load_train_split(settings.root)
    return Search(
        settings=settings,
        params=params,
        experiment=experiment,
        key=key,
        space=space,
        train_table=train_table,
        meta=meta,
        metric=primary_metric(params.compare.metric, meta.task),
        folds=cv_folds(train_table, meta, params.tune.cv_folds, params.train.seed),
        experiment_id=setup_mlflow(settings, tune_experiment(settings)),
        tags={
            **lineage_tags(settings, "tune"),
            TAG_EXPERIMENT: experiment,
            TAG_DATA_MD5: file_md5(settings.root / SPLIT_DIR / TRAIN_FILE),
        },
    )


def run_search(
    settings: Settings,
    params: Params,
    experiment: str,
    trials: int,
    on_trial: Callable[[TrialResult], None] = lambda result: None,
) -> TuneSummary:
    """Search with Optuna in this process; every trial a nested MLflow run.

    Args:
        params: the validated params.yaml; its split must be in `outputs/split`.
        trials: how many trials to run.
        on_trial: called with each finished trial (for progress).

    Raises:
        ParamsError: the experiment or its search space is wrong, or trials < 1.
        DataError: the train split is too small for the folds.
    """
    import mlflow
    import optuna

    if trials < 1:
        raise ParamsError(f"--trials is {trials}: a search needs at least 1 trial.")
    search = prepare_search(settings, params, experiment)
    results: list[TrialResult] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with mlflow.start_run(
        experiment_id=search.experiment_id, run_name=f"tune-{experiment}", tags=search.tags
    ) as parent:
        mlflow.log_params(search_params(search, trials))

        def objective(trial: optuna.Trial) -> float:
            result = run_trial(search, trial, parent.info.run_id)
            results.append(result)
            on_trial(result)
            return result.score

        study = optuna.create_study(
            study_name=f"tune-{experiment}",
            direction=direction_of(search.metric),
            sampler=optuna.samplers.TPESampler(seed=params.train.seed),
        )
        study.optimize(objective, n_trials=trials)
        best = results[study.best_trial.number]
        log_best(search, best)
    return TuneSummary(
        **summary_fields(settings, params, experiment, search.key, search.space, search.metric),
        train_rows=len(search.train_table),
        trials=results,
        best=best,
        mlflow_parent_run_id=parent.info.run_id,
        mlflow_experiment=tune_experiment(settings),
    )


def summary_fields(
    settings: Settings,
    params: Params,
    experiment: str,
    key: str,
    space: SearchSpace,
    metric: str,
) -> dict[str, Any]:
    """What a search's summary says of the search itself, wherever its trials ran."""
    return {
        "experiment": experiment,
        "family": params.train.experiments[experiment].family,
        "space": key,
        "metric": metric,
        "direction": direction_of(metric),
        "cv_folds": params.tune.cv_folds,
        "seed": params.train.seed,
        "searched": list(space),
        "params_file": str(settings.root / PARAMS_FILE),
    }


def search_params(search: Search, trials: int) -> dict[str, Any]:
    """The search's own params, logged on its parent run."""
    return {
        "experiment": search.experiment,
        "family": search.chosen.family,
        "metric": search.metric,
        "direction": direction_of(search.metric),
        "cv_folds": search.params.tune.cv_folds,
        "trials": trials,
        "seed": search.params.train.seed,
        "space": json.dumps(
            {name: dim.model_dump(by_alias=True) for name, dim in search.space.items()}
        ),
    }


def run_trial(search: Search, trial: optuna.Trial, parent_run_id: str) -> TrialResult:
    """One trial: its params suggested, scored by cross-validation, in a nested MLflow run."""
    import mlflow

    from mlrig.tracking.step_run import param_text

    chosen = search.chosen
    values = trial_params(chosen.family, chosen.params, suggest(trial, search.space))
    train = with_trial_params(search.params.train, search.experiment, values)
    with mlflow.start_run(
        experiment_id=search.experiment_id,
        run_name=f"tune-{search.experiment}-{trial.number}",
        nested=True,
        tags={**search.tags, TAG_TUNE_RUN: parent_run_id},
    ) as child:
        flat = values.model_dump()
        mlflow.log_params({"trial": trial.number, **{k: param_text(v) for k, v in flat.items()}})
        score, spread = cv_score(
            search.train_table, search.meta, train, search.experiment, search.metric, search.folds
        )
        mlflow.log_metrics({search.metric_name: score, f"{search.metric_name}_std": spread})
    return TrialResult(
        number=trial.number,
        params=flat,
        score=score,
        score_std=spread,
        mlflow_run_id=child.info.run_id,
    )


def log_best(search: Search, best: TrialResult) -> None:
    """The best trial's score and params, on the search's parent run (the active run)."""
    import mlflow

    from mlrig.tracking.step_run import param_text

    mlflow.log_metric(f"best_{search.metric_name}", best.score)
    mlflow.log_params(
        {f"{BEST_PARAM_PREFIX}{name}": param_text(best.params[name]) for name in search.space}
    )
    mlflow.set_tag(TAG_BEST_TRIAL, str(best.number))
    mlflow.set_tag(TAG_BEST_RUN, best.mlflow_run_id or "")


def apply_best(path: Path, experiment: str, values: Mapping[str, Any]) -> str:
    """Write the searched params into `train.experiments.<experiment>.params` of params.yaml.

    Only those keys change; comments and layout stay (a round-trip edit, as `-S` makes).

    Returns:
        The new text of params.yaml.
    """
    document = read_params_file(path)
    for name, value in values.items():
        keys = ["train", "experiments", experiment, "params", name]
        set_value(document, keys, value, f"Applying the best {name}")
    validate_params(document, origin=f"{path} with the best params", root=path.parent)
    text = dump_params(document)
    path.write_text(text)
    return text


def check_input(
    settings: Settings, experiment: str, trials: int | None
) -> tuple[Params, int, str, SearchSpace]:
    """Everything a search needs that a user can get wrong, checked before anything runs.

    Returns:
        The params, the number of trials, the space's key and the space.

    Raises:
        ParamsError: params.yaml is invalid, the experiment or its space is wrong, trials < 1.
        ConfigError: the project is no git and DVC checkout.
    """
    from mlrig.dvc.repo import require_checkout
    from mlrig.experiments.params import load_params

    require_checkout(settings.root)  # first: the params' schema is the project's steps'
    params = load_params(settings.root / PARAMS_FILE)
    count = params.tune.trials if trials is None else trials
    if count < 1:
        raise ParamsError(f"--trials is {count}: a search needs at least 1 trial.")
    key, space = resolve_space(params, experiment)
    return params, count, key, space


def tune(
    settings: Settings,
    experiment: str,
    trials: int | None = None,
    *,
    apply: bool = False,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_trial: Callable[[TrialResult], None] = lambda result: None,
) -> TuneSummary:
    """`mlrig tune`: check the input, bring the split up to date, search, apply if asked.

    Everything a user can get wrong is checked before the split runs or a run is recorded.
    """
    from mlrig.run import exclusive_run

    root = settings.root
    params, count, _, _ = check_input(settings, experiment, trials)
    with exclusive_run(settings, "mlrig tune"):
        ensure_split(settings, params, on_stage)
        summary = run_search(settings, params, experiment, count, on_trial)
        if apply:
            best = {name: summary.best.params[name] for name in summary.searched}
            apply_best(root / PARAMS_FILE, experiment, best)
            summary = summary.model_copy(update={"applied": True})
    return summary


# --- ClearML ----------------------------------------------------------------------------------


def clearml_name(param: str) -> str:
    """A param's name among a trial task's hyperparameters (`General/<param>`)."""
    return f"{CLEARML_SECTION}/{param}"


def clearml_parameters(space: SearchSpace) -> list[Parameter]:
    """The space as ClearML parameter ranges, each named `General/<param>`."""
    from clearml.automation import (
        DiscreteParameterRange,
        LogUniformParameterRange,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )

    ranges: list[Parameter] = []
    for name, dimension in space.items():
        match dimension:
            case IntRange(bounds=(low, high), step=step):
                ranges.append(
                    UniformIntegerParameterRange(clearml_name(name), low, high, step_size=step)
                )
            case FloatRange(bounds=(low, high), log=True):
                # ClearML samples the exponent: base ** [log10(low), log10(high)]
                ranges.append(
                    LogUniformParameterRange(
                        clearml_name(name), math.log10(low), math.log10(high), base=10
                    )
                )
            case FloatRange(bounds=(low, high)):
                ranges.append(UniformParameterRange(clearml_name(name), low, high))
            case Choice(choice=choices):
                ranges.append(DiscreteParameterRange(clearml_name(name), values=list(choices)))
    return ranges


def build_optimizer(
    base_task_id: str,
    space: SearchSpace,
    metric: str,
    queue: str,
    trials: int,
    seed: int,
    concurrent: int = 2,
) -> HyperParameterOptimizer:
    """ClearML's HyperParameterOptimizer with OptimizerOptuna over the space (not started).

    Each trial clones the base task with its `General/<param>` values and is enqueued on
    `queue`; the objective is the scalar the trial reports, `cv` / `<metric>`.
    """
    import optuna
    from clearml.automation import HyperParameterOptimizer
    from clearml.automation.optuna import OptimizerOptuna

    return HyperParameterOptimizer(
        base_task_id=base_task_id,
        hyper_parameters=clearml_parameters(space),
        objective_metric_title=OBJECTIVE_TITLE,
        objective_metric_series=metric,
        objective_metric_sign="min" if direction_of(metric) == "minimize" else "max",
        optimizer_class=OptimizerOptuna,
        max_number_of_concurrent_tasks=concurrent,
        execution_queue=queue,
        # the optimizer's own task is the one the caller opened (Task.current_task)
        auto_connect_task=True,
        always_create_task=False,
        save_top_k_tasks_only=None,
        # OptimizerOptuna's own arguments
        total_max_jobs=trials,
        max_iteration_per_job=None,
        min_iteration_per_job=None,
        pool_period_min=0.5,
        optuna_sampler=optuna.samplers.TPESampler(seed=seed),
    )


def trial_command(experiment: str) -> str:
    return f"mlrig tune-trial {experiment}"


def trial_task_arguments(project: str, experiment: str, image: str) -> dict[str, Any]:
    """The `Task.create` arguments of the base task every trial clones (train step image)."""
    from mlrig.executors.clearml.submit import bash_task_arguments

    return bash_task_arguments(
        project, f"tune-{experiment} trial", trial_command(experiment), image, "training"
    )


def parse_clearml_value(text: Any) -> Any:
    """A hyperparameter as ClearML returns it (text) as the value it was (None, int, ...)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if not isinstance(text, str):
        return text
    if text in ("", "None"):
        return None
    try:
        return YAML(typ="safe").load(text)
    except YAMLError:
        return text


def tune_on_clearml(
    settings: Settings, experiment: str, trials: int | None, queue: str, *, apply: bool = False
) -> TuneSummary:
    """Run the search on ClearML: trials enqueued on `queue`, this process the controller.

    Needs a ClearML server (CLEARML_API_HOST and credentials), agents on `queue` running the
    train step image, and the split in the DVC remote (it is pushed from here).

    Raises:
        ConfigError: no ClearML server is configured.
    """
    from mlrig.tracking.clearml_server import TRIALS, require_server

    checked = check_input(settings, experiment, trials)
    require_server(settings, TRIALS)
    return _tune_on_server(settings, experiment, checked, queue, apply=apply)  # pragma: no cover


def _tune_on_server(  # pragma: no cover - needs a ClearML server, which cannot run here
    settings: Settings,
    experiment: str,
    checked: tuple[Params, int, str, SearchSpace],
    queue: str,
    *,
    apply: bool,
) -> TuneSummary:
    from clearml import Task

    from mlrig.dvc.commands import push_outputs
    from mlrig.images.build import step_image_references
    from mlrig.images.engine import engine_if_any
    from mlrig.run import exclusive_run
    from mlrig.tracking.step_run import CLEARML_AUTO_CONNECT, configure_clearml

    root = settings.root
    params, count, key, space = checked
    chosen = params.train.experiments[experiment]
    image = step_image_references(settings, engine_if_any(settings))["train"]
    with exclusive_run(settings):
        ensure_split(settings, params)
        push_outputs(settings, settings.state_dir / "logs" / "tune-push.log")
        train_table, meta = load_train_split(root)
        metric = primary_metric(params.compare.metric, meta.task)
        configure_clearml(settings)
        controller = Task.init(
            project_name=settings.clearml_project,
            task_name=f"tune-{experiment}",
            task_type=Task.TaskTypes.optimizer,
            reuse_last_task_id=False,
            auto_connect_frameworks=CLEARML_AUTO_CONNECT,
        )
        base = Task.create(**trial_task_arguments(settings.clearml_project, experiment, image))
        base.set_parameters(
            {clearml_name(name): chosen.params.model_dump()[name] for name in space}
        )
        optimizer = build_optimizer(base.id, space, metric, queue, count, params.train.seed)
        optimizer.start()
        optimizer.wait()
        optimizer.stop()
        results = top_trials(
            optimizer.get_top_experiments_details(top_k=count), chosen, space, metric
        )
        controller.close()
        if not results:
            raise DataError(f"No trial on queue {queue!r} reported {OBJECTIVE_TITLE}/{metric}.")
        best = results[0]  # ClearML orders them by the objective
        if apply:
            apply_best(root / PARAMS_FILE, experiment, {n: best.params[n] for n in space})
    return TuneSummary(
        **summary_fields(settings, params, experiment, key, space, metric),
        train_rows=len(train_table),
        trials=results,
        best=best,
        clearml_optimizer_task_id=str(controller.id),
        applied=apply,
    )


def top_trials(
    top: list[dict[str, Any]], chosen: Any, space: SearchSpace, metric: str
) -> list[TrialResult]:
    """The optimizer's trials, best first, from `get_top_experiments_details`."""
    results = []
    for number, details in enumerate(top):
        values = {
            name: parse_clearml_value(details["hyper_parameters"].get(clearml_name(name)))
            for name in space
        }
        objective = details["metrics"][f"{OBJECTIVE_TITLE}/{metric}"]["value"]
        results.append(
            TrialResult(
                number=number,
                params=trial_params(chosen.family, chosen.params, values).model_dump(),
                score=float(objective),
                score_std=0.0,
                clearml_task_id=details["task_id"],
            )
        )
    return results


def run_trial_task(settings: Settings, experiment: str) -> float:  # pragma: no cover - agent
    """One ClearML trial in the train step image: score the task's params, report the objective.

    An agent starts it with CLEARML_TASK_ID set, so `Task.init` attaches to the cloned trial
    task and `connect` returns the values the optimizer gave it.
    """
    from clearml import Task

    from mlrig.executors.workspace import configure_workspace, pull_inputs, require_settings
    from mlrig.experiments.params import load_params
    from mlrig.tracking.step_run import CLEARML_AUTO_CONNECT, configure_clearml

    require_settings()
    configure_workspace(settings)
    root = settings.root
    pull_inputs(settings, f"train@{experiment}")
    params = load_params(root / PARAMS_FILE)
    _, space = resolve_space(params, experiment)
    chosen = params.train.experiments[experiment]
    configure_clearml(settings)
    task = Task.init(
        project_name=settings.clearml_project,
        task_name=f"tune-{experiment} trial",
        auto_connect_frameworks=CLEARML_AUTO_CONNECT,
    )
    defaults = {name: chosen.params.model_dump()[name] for name in space}
    connected = task.connect(defaults, name=CLEARML_SECTION)
    values = {name: parse_clearml_value(connected[name]) for name in space}
    train_table, meta = load_train_split(root)
    metric = primary_metric(params.compare.metric, meta.task)
    folds = cv_folds(train_table, meta, params.tune.cv_folds, params.train.seed)
    train = with_trial_params(
        params.train, experiment, trial_params(chosen.family, chosen.params, values)
    )
    score, _ = cv_score(train_table, meta, train, experiment, metric, folds)
    task.get_logger().report_scalar(OBJECTIVE_TITLE, metric, value=score, iteration=0)
    task.close()
    return score
