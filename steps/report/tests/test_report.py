"""Report step: report.md plus a self-contained report.html comparing every experiment."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib import pyplot

from mlrig.experiments.results import Champion, ExperimentResult, TrainRecord
from mlrig.experiments.tables import TableMeta
from steps.report import ReportInputs, build_figures, render
from steps.report.report import ClearmlSection, ClearmlTask, png_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION = ("rmse", "mae", "r2")


class HtmlReport(HTMLParser):
    """Collects the report's tables (rows of cell texts), image sources and resource links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str | None]] = []
        self.resources: list[str] = []  # src/href that a browser would fetch to show the page
        self.champion_rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._champion_row = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
            self._champion_row = attributes.get("class") == "champion"
        elif tag in {"td", "th"}:
            self._cell = []
        elif tag == "img":
            self.images.append(attributes)
        if tag in {"img", "script", "iframe"} and attributes.get("src"):
            self.resources.append(attributes["src"] or "")
        if tag == "link" and attributes.get("href"):
            self.resources.append(attributes["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._champion_row:
            self.champion_rows.append(self.tables[-1][-1])

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def markdown_table(text: str, first_header: str) -> list[list[str]]:
    """The Markdown table whose header starts with `first_header`, as rows of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def experiment_result(name: str, family: str, params: dict, metrics: dict) -> ExperimentResult:
    record = TrainRecord(
        experiment=name,
        family=family,
        params=params,
        task="classification" if "f1" in metrics else "regression",
        dataset="d",
        train_md5="0" * 32,
        fit_seconds=0.25,
        mlflow_run_id=f"{name:0<32}"[:32],
        mlflow_model_uri=f"models:/m-{name}",
        clearml_task_id=f"offline-{name}",
    )
    return ExperimentResult(record=record, metrics=metrics)


CLASSIFICATION_RESULTS = [
    experiment_result(
        "linear_c0_1",
        "linear",
        {"C": 0.1, "max_iter": 1000},
        dict(
            zip(CLASSIFICATION, (0.979, 0.97941, 0.97562, 0.97738, 0.99712, 0.10213), strict=True)
        ),
    ),
    experiment_result(
        "random_forest",
        "random_forest",
        {"n_estimators": 200, "max_depth": None, "min_samples_leaf": 1},
        dict(
            zip(CLASSIFICATION, (0.958, 0.95871, 0.95123, 0.95472, 0.99541, 0.10312), strict=True)
        ),
    ),
    experiment_result(
        "baseline",
        "baseline",
        {},
        dict(zip(CLASSIFICATION, (0.62937, 0.31469, 0.5, 0.38627, 0.5, 0.65934), strict=True)),
    ),
]
REGRESSION_RESULTS = [
    experiment_result("ridge", "linear", {"C": 1.0}, {"rmse": 53.85, "mae": 42.79, "r2": 0.4526}),
    experiment_result("baseline", "baseline", {}, {"rmse": 73.25, "mae": 63.33, "r2": -0.0128}),
]


def report_inputs(task: str, title: str = "mlrig experiment report") -> ReportInputs:
    classification = task == "classification"
    results = CLASSIFICATION_RESULTS if classification else REGRESSION_RESULTS
    winner = results[0]
    metric = "f1" if classification else "rmse"
    meta = TableMeta(
        dataset="breast_cancer" if classification else "diabetes",
        source="builtin:breast_cancer" if classification else "builtin:diabetes",
        target="target",
        task=task,
        features=["a", "b", "c"],
        rows=569 if classification else 442,
        classes=["0", "1"] if classification else [],
    )
    champion = Champion(
        experiment=winner.name,
        metric=metric,
        value=winner.metrics[metric],
        mlflow_run_id=winner.record.mlflow_run_id,
        registered_model=f"mlrig-{meta.dataset}",
        registered=True,
        is_champion=True,
        version="2",
        previous_version="1",
        reason=f"{metric} {winner.metrics[metric]:.4f} beats champion version 1 (0.9000 on the "
        "same test set)",
    )
    return ReportInputs(
        title=title,
        meta=meta,
        results=results,
        champion=champion,
        data_versions={"ingest/table.parquet": "a" * 32, "split/train.parquet": "b" * 32},
        validation={"rows": meta.rows, "checks": [{"name": "enough rows", "passed": True}]},
        mlflow_ui="http://127.0.0.1:5000",
        experiment_id="1",
    )


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    pyplot.close("all")


def write_curves(evaluate_dir: Path, results: list[ExperimentResult], curve: dict) -> None:
    """The roc_curve.json each evaluate stage leaves (`{}` for regression)."""
    for result in results:
        folder = evaluate_dir / result.name
        folder.mkdir(parents=True)
        (folder / "roc_curve.json").write_text(json.dumps(curve))


def render_report(tmp_path: Path, inputs: ReportInputs) -> tuple[str, str, Path]:
    curve = (
        {"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.9, 1.0]}
        if inputs.meta.task == "classification"
        else {}
    )
    write_curves(tmp_path / "evaluate", inputs.results, curve)
    figures = {
        name: png_bytes(figure)
        for name, figure in build_figures(inputs, tmp_path / "evaluate").items()
    }
    out_dir = tmp_path / "report"
    markdown_path, html_path = render(inputs, figures, out_dir)
    assert (markdown_path, html_path) == (out_dir / "report.md", out_dir / "report.html")
    return markdown_path.read_text(), html_path.read_text(), out_dir


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    _, html, _ = render_report(tmp_path, report_inputs("classification"))

    page = HtmlReport(html)
    assert sorted(image["alt"] or "" for image in page.images) == [
        "fit_time.png",
        "metrics.png",
        "roc.png",
    ]
    prefix = "data:image/png;base64,"
    assert page.resources, "the report shows no images at all"
    for source in page.resources:
        assert source.startswith(prefix), f"report.html fetches {source[:60]}"
        assert base64.b64decode(source[len(prefix) :], validate=True).startswith(PNG_MAGIC)
    assert "figures/" not in html


def test_markdown_report_links_figures_written_beside_it(tmp_path: Path) -> None:
    markdown, _, out_dir = render_report(tmp_path, report_inputs("classification"))

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(links) == ["figures/fit_time.png", "figures/metrics.png", "figures/roc.png"]
    for link in links:
        assert (out_dir / link).read_bytes().startswith(PNG_MAGIC)


def test_table_lists_every_experiment_with_its_metrics(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    markdown, html, _ = render_report(tmp_path, inputs)

    header, separator, *rows = markdown_table(markdown, "experiment")
    assert header[:3] == ["experiment", "family", "params"]
    assert header[3:9] == list(CLASSIFICATION)
    assert len(separator) == len(header)
    assert all(len(row) == len(header) for row in rows)
    html_header, *html_rows = HtmlReport(html).tables[0]
    assert html_header == header
    assert len(rows) == len(html_rows) == len(inputs.results)
    for result, row, html_row in zip(inputs.results, rows, html_rows, strict=True):
        expected_metrics = [f"{result.metrics[metric]:.4f}" for metric in CLASSIFICATION]
        assert result.name in row[0]
        assert row[1] == result.record.family
        assert row[3:9] == expected_metrics
        assert html_row[0].removesuffix(" 🏆") == result.name
        assert html_row[3:9] == expected_metrics
        assert result.record.mlflow_run_id in html_row
        assert result.record.clearml_task_id in html_row
    assert rows[0][2] == "C=0.1, max_iter=1000"
    assert rows[1][2] == "n_estimators=200, min_samples_leaf=1"  # None is left out
    assert rows[2][2] == "defaults"


def test_champion_and_why_are_stated(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    markdown, html, _ = render_report(tmp_path, inputs)
    champion = inputs.champion
    assert champion is not None

    for text in (markdown, html):
        assert f"Why: {champion.reason}." in text
        assert "version 2" in text and "version 1" in text
        assert "mlrig-breast_cancer" in text
    assert f"**{champion.experiment}** with f1 = 0.9774" in markdown
    assert f"<strong>{champion.experiment}</strong> with f1 = 0.9774" in html
    (champion_row,) = HtmlReport(html).champion_rows
    assert champion_row[0] == f"{champion.experiment} 🏆"
    rows = markdown_table(markdown, "experiment")[2:]
    assert [row[0] for row in rows if "🏆" in row[0]] == [f"**{champion.experiment}** 🏆"]


def test_report_without_champion_says_so(tmp_path: Path) -> None:
    inputs = report_inputs("classification").model_copy(update={"champion": None})

    markdown, html, _ = render_report(tmp_path, inputs)

    assert "No champion was chosen." in markdown
    assert "No champion was chosen." in html
    assert HtmlReport(html).champion_rows == []


def test_regression_report_has_its_metrics_and_no_roc_figure(tmp_path: Path) -> None:
    markdown, html, out_dir = render_report(tmp_path, report_inputs("regression"))

    header = markdown_table(markdown, "experiment")[0]
    assert header[3:6] == list(REGRESSION)
    assert not set(header) & set(CLASSIFICATION)
    assert "roc" not in markdown.lower()
    assert sorted(image["alt"] or "" for image in HtmlReport(html).images) == [
        "fit_time.png",
        "metrics.png",
    ]
    assert sorted(path.name for path in (out_dir / "figures").iterdir()) == [
        "fit_time.png",
        "metrics.png",
    ]
    assert "**ridge** with rmse = 53.8500" in markdown


def test_html_report_escapes_text(tmp_path: Path) -> None:
    """Text from params (title, names, reasons) shows as text, never as markup."""
    inputs = report_inputs("classification", title="Churn <draft> & friends")

    _, html, _ = render_report(tmp_path, inputs)

    assert "<title>Churn &lt;draft&gt; &amp; friends</title>" in html
    assert "<draft>" not in html


def test_clearml_section_shows_each_task_and_whether_clearml_agrees(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    first, second, third = inputs.results
    inputs.clearml = ClearmlSection(
        project="mlrig",
        server="https://app.clearml.example",
        tasks=[
            ClearmlTask(
                experiment=first.name,
                train_task="t-1",
                evaluate_task="e-1",
                link="https://app.clearml.example/projects/*/experiments/e-1",
                values=first.metrics,
                agrees=True,
            ),
            ClearmlTask(
                experiment=second.name,
                train_task="t-2",
                evaluate_task="e-2",
                link=None,
                values=None,
                agrees=None,
            ),
            ClearmlTask(
                experiment=third.name,
                train_task="t-3",
                evaluate_task="e-3",
                link=None,
                values={**third.metrics, "f1": 0.1},
                agrees=False,
            ),
        ],
    )
    markdown, html, _ = render_report(tmp_path, inputs)

    rows = markdown_table(markdown, "experiment | train task")
    assert rows[0][:3] == ["experiment", "train task", "evaluate task"]
    assert rows[2][2] == "[e-1](https://app.clearml.example/projects/*/experiments/e-1)"
    assert rows[2][3 + CLASSIFICATION.index("f1")] == "0.9774"
    assert [row[-1] for row in rows[2:]] == ["yes", "not readable here", "**no**"]
    assert rows[3][3] == "-"  # no value where ClearML could not be read
    (table,) = [t for t in HtmlReport(html).tables if t[0][:2] == ["experiment", "train task"]]
    assert [row[-1] for row in table[1:]] == ["yes", "not readable here", "no"]
    assert "on https://app.clearml.example" in markdown


def test_an_offline_clearml_section_says_how_to_upload(tmp_path: Path) -> None:
    inputs = report_inputs("regression")
    inputs.clearml = ClearmlSection(project="mlrig", server=None, tasks=[])
    markdown, _, _ = render_report(tmp_path, inputs)
    assert "as offline sessions (`mlrig clearml import` uploads them" in markdown
