"""Report step: report.md plus a self-contained report.html comparing every experiment."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from matplotlib import pyplot

from mlrig.experiments.results import Champion, ExperimentResult, Margin, TrainRecord
from mlrig.experiments.tables import TableMeta
from mlrig.tracking.tuned import TunedSearch
from steps.report import ReportInputs, build_figures, render
from steps.report.data import DataSection, data_section
from steps.report.figures import png_bytes
from steps.report.report import ClearmlSection, ClearmlTask, PerClass, read_per_class

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION = ("rmse", "mae", "r2")
HEADERS = [f"{metric} {'↓' if metric == 'log_loss' else '↑'}" for metric in CLASSIFICATION]


class HtmlReport(HTMLParser):
    """Collects the report's tables (rows of cell texts), image sources and resource links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str | None]] = []
        self.resources: list[str] = []  # src/href that a browser would fetch to show the page
        self.best_rows: list[list[str]] = []  # the best experiment's row in the main table
        self._cell: list[str] | None = None
        self._best_row = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
            self._best_row = attributes.get("class") == "best"
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
        elif tag == "tr" and self._best_row:
            self.best_rows.append(self.tables[-1][-1])

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


def experiments_table(html: str) -> list[list[str]]:
    """The HTML report's table of experiments, as rows of cell texts."""
    tables = HtmlReport(html).tables
    (table,) = [t for t in tables if t[0][:2] == ["experiment", "model: family and params"]]
    return table


def experiment_result(name: str, family: str, params: dict, metrics: dict) -> ExperimentResult:
    record = TrainRecord(
        experiment=name,
        family=family,
        params=params,
        task="classification" if "f1" in metrics else "regression",
        dataset="d",
        train_md5="0" * 32,
        model_md5="1" * 32,
        fit_seconds=7.7777,
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


def margin(versus: str, value: float, versus_value: float, low: float, high: float) -> Margin:
    return Margin(
        versus=versus,
        metric="f1",
        value=value,
        versus_value=versus_value,
        difference=value - versus_value,
        low=low,
        high=high,
        confidence=0.95,
        resamples=1000,
        rows=143,
        seed=42,
    )


#: the champion of an earlier run, beaten beyond noise; the runner-up within noise
VERSUS_CHAMPION = margin("champion version 1", 0.97738, 0.9, 0.041, 0.118)
VERSUS_RUNNER_UP = margin("random_forest", 0.97738, 0.95472, -0.0051, 0.0518)
TWO_CLASSES = DataSection(
    columns=[],
    task_reason=None,
    train_rows=426,
    test_rows=143,
    classes=[{"label": "0", "train": 159, "test": 53}, {"label": "1", "train": 267, "test": 90}],
    targets={},
)
PER_CLASS = {
    "linear_c0_1": PerClass(
        labels=["0", "1"],
        confusion_matrix=[[51, 2], [1, 89]],
        classes={
            "0": {"precision": 0.98077, "recall": 0.96226, "f1": 0.97143, "support": 53},
            "1": {"precision": 0.97802, "recall": 0.98889, "f1": 0.98343, "support": 90},
        },
    )
}


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
        registered_model=f"mlrig-{meta.dataset}",
        registered=True,
        is_champion=True,
        version="2",
        previous_version="1",
        reason=f"{metric} {winner.metrics[metric]:.4f} beats champion version 1 (0.9000 on the "
        "same 143 test rows): difference +0.0774, 95% interval +0.0410 to +0.1180",
        incumbent_experiment="baseline_v0",
        versus_champion=VERSUS_CHAMPION if classification else None,
        versus_runner_up=VERSUS_RUNNER_UP if classification else None,
    )
    return ReportInputs(
        title=title,
        meta=meta,
        results=results,
        champion=champion,
        data_versions={"ingest/table.parquet": "a" * 32, "split/train.parquet": "b" * 32},
        validation={"rows": meta.rows, "checks": [{"name": "enough rows", "passed": True}]},
        experiment_id="1",
        mlflow_server=None,
        mlflow_ui_command="cd /p && .venv/bin/mlflow ui --backend-store-uri sqlite:///.mlrig/mlflow.db",
        code_date="2026-12-07 12:00 UTC",
        git_commit="0bdfc57a1b2c3d4e5f60718293a4b5c6d7e8f901",
        data=TWO_CLASSES if classification else None,
        per_class=PER_CLASS if classification else {},
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
        "margins.png",
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
    assert sorted(links) == [
        "figures/margins.png",
        "figures/metrics.png",
        "figures/roc.png",
    ]
    for link in links:
        assert (out_dir / link).read_bytes().startswith(PNG_MAGIC)


def test_table_lists_every_experiment_with_its_metrics(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    markdown, html, _ = render_report(tmp_path, inputs)

    header, separator, *rows = markdown_table(markdown, "experiment | family")
    assert header[:3] == ["experiment", "family", "params"]
    assert header[3:9] == HEADERS
    assert header[9:] == []  # a local store has no server to link to
    assert len(separator) == len(header)
    assert all(len(row) == len(header) for row in rows)
    html_header, *html_rows = experiments_table(html)
    # the page is narrower than the Markdown table: family and params share a column
    assert html_header == ["experiment", "model: family and params", *header[3:]]
    assert len(rows) == len(html_rows) == len(inputs.results)
    for result, row, html_row in zip(inputs.results, rows, html_rows, strict=True):
        expected_metrics = [f"{result.metrics[metric]:.4f}" for metric in CLASSIFICATION]
        assert result.name in row[0]
        assert row[1] == result.record.family
        assert row[3:9] == expected_metrics
        assert html_row[0].startswith(result.name)
        assert html_row[1] == result.record.family + row[2]
        assert html_row[2:8] == expected_metrics
        # what a run adds is MLflow's: a fresh run of the same inputs writes the same report
        for added in (result.record.mlflow_run_id, result.record.clearml_task_id, "7.77"):
            assert added not in markdown and added not in html
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
        assert "version 2" in text and "replacing version 1" in text
        assert "mlrig-breast_cancer" in text
    assert f"**{champion.experiment}** is the champion: registered as" in markdown
    assert f"**{champion.experiment}** with f1 = 0.9774" in markdown
    assert f"<strong>{champion.experiment}</strong> with f1 = 0.9774" in html
    (best_row,) = HtmlReport(html).best_rows
    assert best_row[0] == f"{champion.experiment}champion"  # the badge
    rows = markdown_table(markdown, "experiment | family")[2:]
    assert [row[0] for row in rows if "🏆" in row[0]] == [f"**{champion.experiment}** 🏆"]
    assert [row[0] for row in rows if "runner-up" in row[0]] == ["random_forest (runner-up)"]


def test_the_decision_gives_each_margin_with_its_interval(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    markdown, html, _ = render_report(tmp_path, inputs)

    header, _, *rows = markdown_table(markdown, "linear_c0_1 compared with")
    assert header[1:5] == ["its f1", "other's f1", "difference", "95% interval"]
    assert rows == [
        [
            "vs champion version 1 (baseline_v0)",
            "0.9774",
            "0.9000",
            "+0.0774",
            "+0.0410 to +0.1180",
            "better beyond noise",
        ],
        [
            "vs runner-up random_forest",
            "0.9774",
            "0.9547",
            "+0.0227",
            "-0.0051 to +0.0518",
            "within noise",
        ],
    ]
    (table,) = [t for t in HtmlReport(html).tables if t[0][0] == "linear_c0_1 compared with"]
    assert table[1:] == rows
    for text in (markdown, html):
        assert "runner-up" in text and "1000 resamples of the 143 test rows (seed 42)" in text
    assert "`compare.min_improvement` = 0 and the whole 95% interval" in markdown
    assert "<code>compare.min_improvement</code> = 0 and the whole 95% interval" in html


def test_a_champion_that_stayed_is_named_with_this_runs_best(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    assert inputs.champion is not None
    kept = margin("champion version 4", 0.97738, 0.9771, -0.0105, 0.0110)
    inputs.champion = inputs.champion.model_copy(
        update={
            "registered": False,
            "is_champion": False,
            "version": "4",
            "previous_version": None,
            "incumbent_experiment": "gradient_boosting",
            "versus_champion": kept,
            "reason": "f1 0.9774 does not beat champion version 4 (0.9771 on the same 143 test "
            "rows) beyond noise: difference +0.0003, 95% interval -0.0105 to +0.0110 includes zero",
        }
    )

    markdown, html, _ = render_report(tmp_path, inputs)

    assert (
        "The champion stays `mlrig-breast_cancer` version 4 (gradient_boosting, from an earlier "
        "run): this run's best, **linear_c0_1**, did not replace it."
    ) in markdown
    assert "this run's best, <strong>linear_c0_1</strong>, did not replace it." in html
    assert "| vs champion version 4 (gradient_boosting) | 0.9774 | 0.9771 | +0.0003 |" in markdown
    assert "-0.0105 to +0.0110 | within noise |" in markdown
    rows = markdown_table(markdown, "experiment | family")[2:]
    assert rows[0][0] == "**linear_c0_1** (best, not champion)"
    assert "🏆" not in markdown


def test_the_top_says_when_from_which_commit_and_data(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    markdown, html, _ = render_report(tmp_path, inputs)

    top = "git commit `0bdfc57a1b2c` of 2026-12-07 12:00 UTC · data version `aaaaaaaa`"
    assert markdown.splitlines()[2].startswith(top)
    assert "git commit <code>0bdfc57a1b2c</code> of 2026-12-07 12:00 UTC" in html
    dirty = inputs.model_copy(update={"git_commit": "0bdfc57a1b2c3d4e-dirty"})
    markdown, _, _ = render_report(tmp_path / "dirty", dirty)
    assert "git commit `0bdfc57a1b2c (uncommitted changes)`" in markdown


def test_confusion_matrices_and_per_class_metrics(tmp_path: Path) -> None:
    markdown, html, _ = render_report(tmp_path, report_inputs("classification"))

    matrix = markdown_table(markdown, "true \\ predicted")
    assert matrix[0] == ["true \\ predicted", "0", "1"]
    assert matrix[2:] == [["**0**", "51", "2"], ["**1**", "1", "89"]]
    per_class = markdown_table(markdown, "class | precision")
    assert per_class[2:] == [
        ["0", "0.9808", "0.9623", "0.9714", "53"],
        ["1", "0.9780", "0.9889", "0.9834", "90"],
    ]
    (html_matrix,) = [t for t in HtmlReport(html).tables if t[0][0] == "true \\ predicted"]
    assert html_matrix == [["true \\ predicted", "0", "1"], ["0", "51", "2"], ["1", "1", "89"]]
    assert "<summary>linear_c0_1 (best of this run)</summary>" in html


def test_per_class_results_are_read_from_what_evaluate_wrote(tmp_path: Path) -> None:
    for name, recorded in (("a", PER_CLASS["linear_c0_1"].model_dump()), ("b", {})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_class.json").write_text(json.dumps(recorded))

    per_class = read_per_class(tmp_path, ["a", "b", "c"])  # b is a regression's, c has none

    assert per_class == {"a": PER_CLASS["linear_c0_1"]}


def test_report_without_champion_says_so(tmp_path: Path) -> None:
    inputs = report_inputs("classification").model_copy(update={"champion": None})

    markdown, html, _ = render_report(tmp_path, inputs)

    assert "No champion was chosen." in markdown
    assert "No champion was chosen." in html
    assert HtmlReport(html).best_rows == []


def test_regression_report_has_its_metrics_and_no_roc_figure(tmp_path: Path) -> None:
    markdown, html, out_dir = render_report(tmp_path, report_inputs("regression"))

    header = markdown_table(markdown, "experiment | family")[0]
    assert header[3:6] == ["rmse ↓", "mae ↓", "r2 ↑"]
    assert not {name.split()[0] for name in header} & set(CLASSIFICATION)
    assert "roc" not in markdown.lower()
    assert sorted(image["alt"] or "" for image in HtmlReport(html).images) == ["metrics.png"]
    assert sorted(path.name for path in (out_dir / "figures").iterdir()) == ["metrics.png"]
    assert "**ridge** with rmse = 53.8500" in markdown
    assert "Per class" not in markdown


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

    rows = markdown_table(markdown, "experiment | evaluate task")
    assert rows[0][:2] == ["experiment", "evaluate task"]
    assert rows[2][1] == "[open](https://app.clearml.example/projects/*/experiments/e-1)"
    assert rows[2][2 + CLASSIFICATION.index("f1")] == "0.9774"
    assert [row[-1] for row in rows[2:]] == ["yes", "not readable here", "**no**"]
    assert rows[3][2] == "-"  # no value where ClearML could not be read
    assert "t-1" not in markdown  # a task id is the tracker's, not the report's
    (table,) = [t for t in HtmlReport(html).tables if t[0][:2] == ["experiment", "evaluate task"]]
    assert [row[-1] for row in table[1:]] == ["yes", "not readable here", "no"]
    assert "on https://app.clearml.example" in markdown


def test_an_offline_clearml_section_says_how_to_upload(tmp_path: Path) -> None:
    inputs = report_inputs("regression")
    inputs.clearml = ClearmlSection(project="mlrig", server=None, tasks=[])
    markdown, _, _ = render_report(tmp_path, inputs)
    assert "as offline sessions (`mlrig clearml import` uploads them" in markdown


#: meta.json as ingest writes it with the column facts (interface 1 of issue 18)
META_WITH_COLUMNS = {
    "dataset": "churn",
    "source": "data/churn.csv",
    "target": "plan",
    "task": "classification",
    "features": ["city", "tenure", "signed_up", "active"],
    "rows": 52,
    "classes": [str(label) for label in sorted(range(13), key=str)],  # as text: 0, 1, 10, ...
    "task_reason": "integer target with 13 distinct values (at most 20): classification",
    "columns": [
        {"name": "customer_id", "role": "dropped", "dtype": "object", "missing_share": 0.0,
         "distinct": 52, "reason": "ingest.columns.customer_id = drop"},
        {"name": "city", "role": "categorical", "dtype": "object", "missing_share": 0.0577,
         "distinct": 3, "reason": "text with repeated values",
         "top_values": [{"value": "Lyon", "count": 30}, {"value": "Nantes", "count": 15},
                        {"value": "Paris", "count": 4}]},
        {"name": "tenure", "role": "numeric", "dtype": "float64", "missing_share": 0.0,
         "distinct": 40, "reason": "numbers"},
        {"name": "signed_up", "role": "datetime", "dtype": "datetime64[ns]",
         "missing_share": 0.25, "distinct": 39, "reason": "dates"},
        {"name": "active", "role": "boolean", "dtype": "bool", "missing_share": 0.0,
         "distinct": 2, "reason": "true/false"},
        {"name": "plan", "role": "categorical", "dtype": "int64", "missing_share": 0.0,
         "distinct": 13, "reason": "the target: 13 whole numbers",
         "top_values": [{"value": "3", "count": 9}, {"value": "10", "count": 6}]},
    ],
}  # fmt: skip


def write_split(folder: Path, meta: dict, train_labels: list, test_labels: list) -> TableMeta:
    """What the split step leaves: meta.json and the two tables (their target is what counts)."""
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(meta))
    pd.DataFrame({meta["target"]: train_labels}).to_parquet(folder / "train.parquet")
    pd.DataFrame({meta["target"]: test_labels}).to_parquet(folder / "test.parquet")
    return TableMeta.model_validate(meta)


def test_the_data_section_shows_each_column_as_ingest_found_it(tmp_path: Path) -> None:
    train_labels = [label for label in range(13) for _ in range(3)]  # 3 rows of each class
    test_labels = [*range(13)]
    meta = write_split(tmp_path / "split", META_WITH_COLUMNS, train_labels, test_labels)
    inputs = report_inputs("classification")
    inputs.meta, inputs.data = meta, data_section(tmp_path / "split", meta)

    markdown, html, _ = render_report(tmp_path, inputs)

    columns = markdown_table(markdown, "column | role")
    assert columns[0] == ["column", "role", "type", "missing", "distinct", "top values (rows)"]
    assert columns[2] == [
        "`plan` (target)", "categorical: the target: 13 whole numbers", "int64", "0.0%", "13",
        "3 (9), 10 (6)",
    ]  # fmt: skip
    assert columns[3] == [
        "`customer_id`", "dropped: ingest.columns.customer_id = drop", "object", "0.0%", "52", ""
    ]  # fmt: skip
    assert columns[4] == [
        "`city`", "categorical: text with repeated values", "object", "5.8%", "3",
        "Lyon (30), Nantes (15), Paris (4)",
    ]  # fmt: skip
    assert columns[6][:4] == ["`signed_up`", "datetime: dates", "datetime64[ns]", "25.0%"]
    assert "(integer target with 13 distinct values (at most 20): classification)" in markdown
    # classes in natural order, not as text sorts them (0, 1, 10, 11, 12, 2, ...)
    balance = markdown_table(markdown, "class | train rows")
    assert [row[0] for row in balance[2:]] == [str(label) for label in range(13)]
    assert balance[2] == ["0", "3", "7.7%", "1", "7.7%"]
    assert "with classes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12." in markdown
    (html_columns,) = [t for t in HtmlReport(html).tables if t[0][:2] == ["column", "role"]]
    assert html_columns[1][:3] == ["plantarget", "categoricalthe target: 13 whole numbers", "int64"]
    assert html_columns[2][1] == "droppedingest.columns.customer_id = drop"


def test_a_meta_json_without_column_facts_lists_the_features(tmp_path: Path) -> None:
    meta = TableMeta(
        dataset="d", source="x.csv", target="y", task="classification",
        features=["a", "b"], rows=6, classes=["no", "yes"],
    )  # fmt: skip
    write_split(tmp_path / "split", meta.model_dump(), ["yes", "no", "yes", "yes"], ["no", "yes"])
    inputs = report_inputs("classification")
    inputs.meta, inputs.data = meta, data_section(tmp_path / "split", meta)

    markdown, html, _ = render_report(tmp_path, inputs)

    assert "Target `y`; 2 features: `a`, `b`." in markdown
    assert "column | role" not in markdown
    balance = markdown_table(markdown, "class | train rows")
    assert balance[2:] == [["no", "1", "25.0%", "1", "50.0%"], ["yes", "3", "75.0%", "1", "50.0%"]]
    assert "4 to train on, 2 held out for the test" in html


def test_a_regression_target_is_summed_up_per_split(tmp_path: Path) -> None:
    meta = TableMeta(
        dataset="d", source="x.csv", target="y", task="regression", features=["a"], rows=6
    )
    write_split(tmp_path / "split", meta.model_dump(), [1.0, 2.0, 3.0, 6.0], [10.0, 20.0])

    data = data_section(tmp_path / "split", meta)

    assert data.classes == []
    assert (data.targets["train"].mean, data.targets["train"].max) == (3.0, 6.0)
    assert (data.targets["test"].min, data.targets["test"].std) == (
        10.0,
        pytest.approx(7.0711, abs=1e-4),
    )


def hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', html)


def test_a_local_store_gets_the_command_that_opens_the_ui_not_a_dead_link(
    tmp_path: Path,
) -> None:
    inputs = report_inputs("classification")  # mlflow_server None: a SQLite store
    markdown, html, _ = render_report(tmp_path, inputs)

    assert not [link for link in hrefs(html) if link.startswith("http")]
    assert "](http" not in markdown
    for text, command in (
        (html, escape(inputs.mlflow_ui_command)),
        (markdown, inputs.mlflow_ui_command),
    ):
        assert ":5000" not in text.replace(command, "")
        assert command in text
        assert "which has no server to link to" in text
    assert "filter the runs by the tag `mlrig.experiment`" in markdown


def test_a_server_gets_links_to_each_experiments_runs(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    inputs.mlflow_server = "https://mlflow.example:8443"
    markdown, html, _ = render_report(tmp_path, inputs)

    header = markdown_table(markdown, "experiment | family")[0]
    assert header[-1] == "MLflow"
    search = "tags.%60mlrig.experiment%60%20%3D%20%27linear_c0_1%27"
    link = f"https://mlflow.example:8443/#/experiments/1?searchFilter={search}"
    assert link in hrefs(html)
    assert f"[runs]({link})" in markdown
    assert "mlflow ui" not in html


def tuned(experiment: str, **best: str) -> TunedSearch:
    return TunedSearch(
        experiment=experiment,
        family="linear",
        metric="f1",
        direction="maximize",
        trials=20,
        cv_folds=5,
        best_trial=7,
        best_score=0.9712,
        best_score_std=0.0123,
        best_params=best,
        mlflow_run_id="t" * 32,
        mlflow_experiment_id="2",
        started=0,
    )


def test_the_tuning_section_shows_each_best_trial_when_a_search_ran(tmp_path: Path) -> None:
    inputs = report_inputs("classification")
    markdown, _, _ = render_report(tmp_path, inputs)
    assert "## Tuning" not in markdown  # no search ran

    inputs.tuning = [
        tuned("linear_c0_1", C="0.1"),
        tuned("random_forest", n_estimators="50", max_features="0.12345678"),
    ]
    markdown, html, _ = render_report(tmp_path / "tuned", inputs)

    rows = markdown_table(markdown, "experiment | trials")
    assert rows[0][3] == "best cv f1"
    assert rows[2] == [
        "linear_c0_1", "20 (5-fold CV)", "7", "0.9712 ± 0.0123", "C=0.1", "yes", "`tttttttt`"
    ]  # fmt: skip
    assert rows[3][4:6] == [
        "n_estimators=50, max_features=0.1235",
        "no (mlrig tune --apply writes them)",
    ]
    assert "<h2>Tuning</h2>" in html
