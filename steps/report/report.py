"""Report: a Markdown and a self-contained HTML report a lead can decide from.

At the top the git commit of the code, its date, and the data version; then the decision (the
champion, this run's best and runner-up, each margin with its bootstrap interval and why the
champion changed or stayed), every experiment's params and held-out metrics, comparison plots,
confusion matrices and per-class metrics, the data (each column as ingest found it, the class
balance of the splits, the data files' md5), the latest `mlrig tune` search of each experiment,
where to see the runs in MLflow, and whether ClearML recorded the same values.

The report is a DVC output: it holds what the inputs decide and nothing a run adds (no time of
writing, no run or task id, no fit time: those are in MLflow, `mlrig results` and the run's
summary), so a fresh run of the same inputs writes the same bytes and leaves dvc.lock as it was.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple
from urllib.parse import quote

import typer
from pydantic import BaseModel

from mlrig.errors import exits_cleanly
from mlrig.experiments.metrics import LOWER_IS_BETTER, task_metrics
from mlrig.experiments.params import load_section
from mlrig.experiments.results import Champion, ExperimentResult, load_results, read_champion
from mlrig.experiments.tables import TABLE_FILE, TableMeta, read_meta, read_output, require_output
from mlrig.lineage import file_md5
from mlrig.progress import phase
from mlrig.tracking.step_run import TAG_EXPERIMENT
from mlrig.tracking.tuned import TunedSearch
from steps.evaluate import PER_CLASS_FILE
from steps.report.data import DataSection, data_section
from steps.report.drift import DriftSection, drift_section
from steps.report.figures import build_figures, margin_rows, png_bytes
from steps.report.params import ReportParams
from steps.split import TEST_FILE, TRAIN_FILE
from steps.train.params import TrainParams

if TYPE_CHECKING:
    from mlrig.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
FIGURES_DIR = "figures"
#: how many characters of a run id or md5 the report shows (the whole one is in MLflow)
SHORT_ID = 8


class ClearmlTask(BaseModel):
    """An experiment's tasks in ClearML, and the test-set values ClearML recorded for it."""

    experiment: str
    train_task: str
    evaluate_task: str | None
    link: str | None  # the evaluate task's page in the ClearML UI
    values: dict[str, float] | None  # None: not readable here
    agrees: bool | None  # the values equal the evaluate step's metrics.json


class ClearmlSection(BaseModel):
    project: str
    server: str | None  # the web UI; None when the tasks are offline sessions
    tasks: list[ClearmlTask]


class PerClass(BaseModel):
    """An experiment's confusion matrix and per-class metrics (evaluate's per_class.json)."""

    labels: list[str]  # in natural order
    confusion_matrix: list[list[int]]  # rows: the true class, columns: the predicted one
    classes: dict[str, dict[str, float]]  # precision, recall, f1, support by label


class ReportInputs(BaseModel):
    """Everything the report shows."""

    title: str
    meta: TableMeta
    results: list[ExperimentResult]
    champion: Champion | None
    data_versions: dict[str, str]
    validation: dict[str, Any]
    experiment_id: str  # the pipeline's MLflow experiment
    mlflow_server: str | None  # the MLflow server's address; None for a local store
    mlflow_ui_command: str  # what opens the UI (a local store has no server to link to)
    git_commit: str | None = None  # of the code the results come from (lineage.code_commit)
    code_date: str | None = None  # that commit's date: the report holds no time of its own
    data: DataSection | None = None
    per_class: dict[str, PerClass] = {}
    tuning: list[TunedSearch] = []
    clearml: ClearmlSection | None = None
    drift: DriftSection | None = None  # None: no drift check of the champion version

    @property
    def commit_text(self) -> str:
        """`0bdfc57a1b2c`, with `(uncommitted changes)` when the checkout had some."""
        commit = self.git_commit or "unknown"
        dirty = commit.endswith("-dirty")
        short = commit.removesuffix("-dirty")[:12]
        return f"{short} (uncommitted changes)" if dirty else short

    @property
    def data_version(self) -> str:
        """The md5 of the ingested table, shortened: the data every experiment comes from."""
        return self.data_versions.get(f"ingest/{TABLE_FILE}", "")[:SHORT_ID]


def read_per_class(evaluate_dir: Path, names: list[str]) -> dict[str, PerClass]:
    """Each experiment's per-class results, when evaluate wrote them (classification)."""
    per_class = {}
    for name in names:
        path = evaluate_dir / name / PER_CLASS_FILE
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        if recorded:
            per_class[name] = PerClass.model_validate(recorded)
    return per_class


def render(inputs: ReportInputs, figures: dict[str, bytes], out_dir: Path) -> tuple[Path, Path]:
    """Write report.md (figures beside it) and report.html (figures inlined).

    Returns:
        The paths of the Markdown and HTML reports.
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["params_text"] = params_text
    environment.filters["param_value"] = param_value
    environment.filters["short"] = lambda text: (text or "")[:SHORT_ID]
    environment.filters["share"] = lambda part, whole: f"{part / whole:.1%}" if whole else "-"
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name, content in figures.items():
        (figures_dir / name).write_bytes(content)
    context = {
        **dict(inputs),
        **decision_context(inputs),
        "data_version": inputs.data_version,
        "commit_text": inputs.commit_text,
        "metric_names": task_metrics(inputs.meta.task),  # type: ignore[arg-type]
        "lower_is_better": LOWER_IS_BETTER,
        "run_link": lambda run_id, experiment_id: run_link(
            inputs.mlflow_server, experiment_id, run_id
        ),
        "experiment_runs_link": lambda experiment: experiment_runs_link(
            inputs.mlflow_server, inputs.experiment_id, experiment
        ),
        "tuning_applied": {
            search.experiment: tuning_applied(search, inputs.results) for search in inputs.tuning
        },
        "figures": {name: f"{FIGURES_DIR}/{name}" for name in figures},
        "inline": {name: base64.b64encode(content).decode() for name, content in figures.items()},
    }
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    markdown_path.write_text(environment.get_template("report.md.j2").render(context))
    html_path.write_text(environment.get_template("report.html.j2").render(context))
    return markdown_path, html_path


def decision_context(inputs: ReportInputs) -> dict[str, Any]:
    """What the decision section and the per-class section need beyond the inputs: the
    margins, this run's best and runner-up, and the experiments best first."""
    champion = inputs.champion
    best = champion.experiment if champion else None
    runner_up = champion.versus_runner_up.versus if champion and champion.versus_runner_up else None
    leading = [name for name in (best, runner_up) if name]
    names = [result.name for result in inputs.results]
    return {
        "margins": margin_rows(champion) if champion else [],
        "best": best,
        "runner_up": runner_up,
        # best and runner-up first, each experiment once
        "per_class_order": list(
            dict.fromkeys(name for name in leading + names if name in inputs.per_class)
        ),
    }


def run_link(server: str | None, experiment_id: str, run_id: str) -> str | None:
    """A run's page on the MLflow server; None for a local store, which has no server."""
    return f"{server}/#/experiments/{experiment_id}/runs/{run_id}" if server else None


def experiment_runs_link(server: str | None, experiment_id: str, experiment: str) -> str | None:
    """The MLflow UI's list of an experiment's runs (the report names no run: its bytes
    depend on the results only, and a fresh run of the same inputs writes the same report)."""
    if not server:
        return None
    search = quote(f"tags.`{TAG_EXPERIMENT}` = '{experiment}'")
    return f"{server}/#/experiments/{experiment_id}?searchFilter={search}"


def tuning_applied(search: TunedSearch, results: list[ExperimentResult]) -> bool:
    """True when the experiment of this run has the search's best params."""
    run = next((result for result in results if result.name == search.experiment), None)
    if run is None:
        return False
    return all(
        str(run.record.params.get(name)) == value for name, value in search.best_params.items()
    )


def clearml_section(settings: Settings, results: list[ExperimentResult]) -> ClearmlSection:
    """Each experiment's ClearML tasks (the evaluate task's id is a tag of the MLflow run) and
    the values ClearML holds for them, checked against the metrics MLflow got."""
    import mlflow

    from mlrig.tracking.clearml_sessions import recorded_single_values, task_link
    from mlrig.tracking.step_run import TAG_CLEARML_TASK

    client = mlflow.MlflowClient(settings.tracking_uri)
    tasks = []
    for result in results:
        tags = client.get_run(result.record.mlflow_run_id).data.tags
        evaluate_task = tags.get(f"{TAG_CLEARML_TASK}.evaluate")
        values = recorded_single_values(settings, evaluate_task) if evaluate_task else None
        tasks.append(
            ClearmlTask(
                experiment=result.name,
                train_task=result.record.clearml_task_id,
                evaluate_task=evaluate_task,
                link=task_link(settings, evaluate_task) if evaluate_task else None,
                values=values,
                agrees=None
                if values is None
                else all(
                    abs(values.get(name, float("nan")) - value) <= 1e-9 * max(1.0, abs(value))
                    for name, value in result.metrics.items()
                ),
            )
        )
    server = None if settings.clearml_is_offline else settings.clearml_web_host
    return ClearmlSection(project=settings.clearml_project, server=server, tasks=tasks)


def comparison_rows(inputs: ReportInputs) -> list[dict[str, Any]]:
    """The experiments table as rows, for ClearML's table plot of the report's task."""
    return [
        {
            "experiment": result.name,
            "family": result.record.family,
            "params": params_text(result.record.params),
            **result.metrics,
            "fit_seconds": result.record.fit_seconds,
            "mlflow_run": result.record.mlflow_run_id,
            "clearml_task": result.record.clearml_task_id,
        }
        for result in inputs.results
    ]


def param_value(text: str) -> str:
    """A logged param value as a reader wants it: `0.9846738873614566` as `0.9847`."""
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.4g}" if "." in text else text


def params_text(params: dict[str, Any]) -> str:
    """`C=0.1, max_iter=1000`: an experiment's hyperparameters in one cell."""
    return (
        ", ".join(f"{key}={value}" for key, value in params.items() if value is not None)
        or "defaults"
    )


class Folders(NamedTuple):
    """The upstream steps' output folders the report reads."""

    table: Path
    validation: Path
    split: Path
    train: Path
    evaluate: Path
    register: Path


def gather_inputs(
    settings: Settings, params: Path, folders: Folders, out_dir: Path
) -> ReportInputs:
    """What the report shows, from the steps' outputs, the settings and the MLflow store
    (`out_dir`: where the report goes, which its links are relative to)."""
    from mlrig.dvc.code_deps import pipeline_inputs
    from mlrig.lineage import code_commit
    from mlrig.tracking.mlflow_ui import mlflow_server, project_mlflow_ui_command
    from mlrig.tracking.step_run import setup_mlflow
    from mlrig.tracking.train_runs import run_finder
    from mlrig.tracking.tuned import latest_searches

    names = list(load_section(params, "train", TrainParams).experiments)
    meta = read_meta(folders.split)
    data_versions = {
        f"{folder.name}/{file}": file_md5(require_output(folder / file))
        for folder, file in (
            (folders.table, TABLE_FILE),
            (folders.split, TRAIN_FILE),
            (folders.split, TEST_FILE),
        )
    }
    experiment_id = setup_mlflow(settings)
    results = load_results(folders.train, folders.evaluate, names, run_finder(settings))
    # the commit a step container names (it has no checkout), else the checkout's own
    commit, code_date = code_commit(settings.root, pipeline_inputs(settings.root))
    if commit == "unknown" and settings.git_commit:
        commit = settings.git_commit
    train_md5 = data_versions[f"{folders.split.name}/{TRAIN_FILE}"]
    return ReportInputs(
        title=load_section(params, "report", ReportParams).title,
        meta=meta,
        results=results,
        champion=read_champion(folders.register),
        data_versions=data_versions,
        validation=json.loads(read_output(folders.validation / "report.json")),
        experiment_id=experiment_id,
        mlflow_server=mlflow_server(settings),
        mlflow_ui_command=project_mlflow_ui_command(settings),
        git_commit=commit,
        code_date=code_date,
        data=data_section(folders.split, meta),
        per_class=read_per_class(folders.evaluate, names),
        tuning=latest_searches(settings, names, train_md5),
        clearml=clearml_section(settings, results),
        drift=drift_section(settings, read_champion(folders.register), out_dir),
    )


app = typer.Typer(add_completion=False, help="Write the Markdown and HTML experiment report.")


@app.command()
@exits_cleanly
def main(
    table_dir: Annotated[Path, typer.Option(help="the ingest step's output folder")],
    validation_dir: Annotated[Path, typer.Option(help="the validate step's output folder")],
    split_dir: Annotated[Path, typer.Option(help="the split step's output folder")],
    train_dir: Annotated[Path, typer.Option(help="the train stages' output folder")],
    evaluate_dir: Annotated[Path, typer.Option(help="the evaluate stages' output folder")],
    register_dir: Annotated[Path, typer.Option(help="the register step's output folder")],
    out_dir: Annotated[Path, typer.Option(help="folder for report.md, report.html, figures/")],
    params: Annotated[Path, typer.Option(help="params.yaml; reads `report` and `train`")] = Path(
        "params.yaml"
    ),
) -> None:
    """Write the report."""
    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import tracked_step

    settings = load_settings()
    inputs = gather_inputs(
        settings,
        params,
        Folders(table_dir, validation_dir, split_dir, train_dir, evaluate_dir, register_dir),
        out_dir,
    )
    phase("drawing the figures and rendering the report")
    figures = build_figures(inputs, evaluate_dir)
    markdown_path, html_path = render(
        inputs, {name: png_bytes(figure) for name, figure in figures.items()}, out_dir
    )
    # the comparison in ClearML too: the report's task holds the table and the plots
    with tracked_step(settings, "report", "report") as run:
        run.log_table("experiments", comparison_rows(inputs))
        for name, figure in figures.items():
            run.log_figure(figure, name)
        run.log_artifact(html_path)
    if settings.parent_run_id:
        import mlflow

        mlflow.MlflowClient(settings.tracking_uri).log_artifact(
            settings.parent_run_id, str(html_path)
        )
    typer.echo(f"report: {markdown_path} and {html_path}")
