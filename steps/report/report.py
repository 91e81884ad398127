"""Report: a Markdown and a self-contained HTML report comparing every experiment.

It holds a table of all experiments (params, metrics, fit time), comparison plots, the champion
and why, the data version (DVC hashes) and the MLflow run and ClearML task of each experiment.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel

from mlrig.errors import exits_cleanly
from mlrig.experiments.metrics import LOWER_IS_BETTER, task_metrics
from mlrig.experiments.params import load_section
from mlrig.experiments.results import Champion, ExperimentResult, load_results, read_champion
from mlrig.experiments.tables import TABLE_FILE, TableMeta, read_meta, read_output, require_output
from mlrig.lineage import file_md5
from steps.evaluate import CURVE_FILE
from steps.report.params import ReportParams
from steps.split import TEST_FILE, TRAIN_FILE
from steps.train.params import TrainParams

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlrig.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
FIGURES_DIR = "figures"


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


class ReportInputs(BaseModel):
    """Everything the report shows."""

    title: str
    meta: TableMeta
    results: list[ExperimentResult]
    champion: Champion | None
    data_versions: dict[str, str]
    validation: dict[str, Any]
    mlflow_ui: str
    experiment_id: str
    clearml: ClearmlSection | None = None


def metrics_figure(results: list[ExperimentResult], metrics: tuple[str, ...]) -> Figure:
    """One bar chart per metric, experiments side by side."""
    import matplotlib.pyplot as plt

    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    names = [result.name for result in results]
    for axis, metric in zip(axes.flat, metrics, strict=False):
        values = [result.metrics.get(metric, float("nan")) for result in results]
        bars = axis.barh(names, values, color="#4c72b0")
        axis.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)  # close scores need the numbers
        axis.margins(x=0.2)
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        axis.set_title(f"{metric} ({better} is better)", fontsize=10)
        axis.tick_params(labelsize=8)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure


def roc_figure(curves: dict[str, dict]) -> Figure:
    """Every experiment's ROC curve on one plot."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, curve in curves.items():
        axis.plot(curve["fpr"], curve["tpr"], label=name)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test set")
    axis.legend(loc="lower right", fontsize=8)
    return figure


def fit_time_figure(results: list[ExperimentResult]) -> Figure:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 0.5 + 0.4 * len(results)))
    axis.barh([r.name for r in results], [r.record.fit_seconds for r in results], color="#dd8452")
    axis.set(xlabel="seconds", title="fit time")
    figure.tight_layout()
    return figure


def build_figures(inputs: ReportInputs, evaluate_dir: Path) -> dict[str, Figure]:
    """The report's figures by file name."""
    import matplotlib

    matplotlib.use("Agg")
    figures = {
        "metrics.png": metrics_figure(inputs.results, task_metrics(inputs.meta.task)),  # type: ignore[arg-type]
        "fit_time.png": fit_time_figure(inputs.results),
    }
    curves = {
        result.name: json.loads(read_output(evaluate_dir / result.name / CURVE_FILE))
        for result in inputs.results
    }
    curves = {name: curve for name, curve in curves.items() if curve}
    if curves:
        figures["roc.png"] = roc_figure(curves)
    return figures


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


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
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name, content in figures.items():
        (figures_dir / name).write_bytes(content)
    context = {
        **dict(inputs),
        "metric_names": task_metrics(inputs.meta.task),  # type: ignore[arg-type]
        "figures": {name: f"{FIGURES_DIR}/{name}" for name in figures},
        "inline": {name: base64.b64encode(content).decode() for name, content in figures.items()},
    }
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    markdown_path.write_text(environment.get_template("report.md.j2").render(context))
    html_path.write_text(environment.get_template("report.html.j2").render(context))
    return markdown_path, html_path


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


def params_text(params: dict[str, Any]) -> str:
    """`C=0.1, max_iter=1000`: an experiment's hyperparameters in one cell."""
    return (
        ", ".join(f"{key}={value}" for key, value in params.items() if value is not None)
        or "defaults"
    )


def mlflow_ui_base(tracking_uri: str) -> str:
    """Where run links point: the server itself, or `mlflow ui`'s default address."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"


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
    from mlrig.tracking.step_run import setup_mlflow, tracked_step

    settings = load_settings()
    names = list(load_section(params, "train", TrainParams).experiments)
    inputs = ReportInputs(
        title=load_section(params, "report", ReportParams).title,
        meta=read_meta(split_dir),
        results=load_results(train_dir, evaluate_dir, names),
        champion=read_champion(register_dir),
        data_versions={
            f"{folder.name}/{file}": file_md5(require_output(folder / file))
            for folder, file in (
                (table_dir, TABLE_FILE),
                (split_dir, TRAIN_FILE),
                (split_dir, TEST_FILE),
            )
        },
        validation=json.loads(read_output(validation_dir / "report.json")),
        mlflow_ui=mlflow_ui_base(settings.tracking_uri),
        experiment_id=setup_mlflow(settings),
    )
    inputs.clearml = clearml_section(settings, inputs.results)
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
