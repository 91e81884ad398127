"""The report's drift section: the champion version's latest `mlrig drift` checks from a real
local MLflow store, linked to their HTML reports; no section when there is no check."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlrig.settings import Settings
from steps.report import ReportInputs, render
from steps.report.drift import drift_section
from steps.report.tests.test_report import HtmlReport, markdown_table, report_inputs
from tests.support.drift_checks import local_store, record_check, registered_versions

#: the champion of report_inputs: version 2 of this model
MODEL = "mlrig-breast_cancer"
HEADER = [
    "checked",
    "new data",
    "drifted columns",
    "share",
    "drift.threshold",
    "verdict",
    "report",
    "MLflow run",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Version 2 (the champion) checked twice, version 1 once, version 3 never."""
    settings = local_store(tmp_path_factory.mktemp("project"))
    first, champion, _ = registered_versions(settings, MODEL, 3)
    record_check(settings, first, 0.9, datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    record_check(settings, champion, 0.1, datetime(2026, 12, 1, 9, 30, 5, tzinfo=UTC))
    record_check(settings, champion, 0.6, datetime(2026, 12, 2, 10, 45, 0, tzinfo=UTC))
    return settings


def with_drift(settings: Settings, report_dir: Path, version: str = "2") -> ReportInputs:
    inputs = report_inputs("classification")
    assert inputs.champion is not None
    champion = inputs.champion.model_copy(update={"version": version})
    section = drift_section(settings, champion, report_dir)
    return inputs.model_copy(update={"champion": champion, "drift": section})


def render_texts(inputs: ReportInputs, out_dir: Path) -> tuple[str, str]:
    markdown_path, html_path = render(inputs, {}, out_dir)
    return markdown_path.read_text(), html_path.read_text()


def test_the_champions_latest_checks_are_listed_newest_first_with_links(store: Any) -> None:
    report_dir = store.root / "reports"

    markdown, html = render_texts(with_drift(store, report_dir), report_dir)

    rows = markdown_table(markdown, "checked")
    assert rows[0] == HEADER
    newest, oldest = rows[2], rows[3]
    assert len(rows) == 4  # version 1's check is not the champion's
    assert newest[:6] == [
        "2026-12-02 10:45:00 UTC",  # when it was checked (MLflow), not when the report was made
        "`new.csv`",
        "0",
        "0.6000",
        "0.5",
        "**drifted**",
    ]
    assert newest[6] == "[drift/2-104500.html](drift/2-104500.html)"
    assert oldest[:6] == ["2026-12-01 09:30:05 UTC", "`new.csv`", "0", "0.1000", "0.5", "no drift"]
    assert "## Drift" in markdown and f"champion `{MODEL}` version 2" in markdown
    (table,) = [t for t in HtmlReport(html).tables if t[0] == HEADER]
    assert [row[:6] for row in table[1:]] == [
        ["2026-12-02 10:45:00 UTC", "new.csv", "0", "0.6000", "0.5", "drifted"],
        ["2026-12-01 09:30:05 UTC", "new.csv", "0", "0.1000", "0.5", "no drift"],
    ]
    links = [link for link in hrefs(html) if link.startswith("drift/")]
    assert links == ["drift/2-104500.html", "drift/2-093005.html"]
    assert all((report_dir / link).is_file() for link in links)  # relative to the report


def test_links_are_relative_to_where_the_report_goes(store: Any) -> None:
    section = drift_section(store, with_drift(store, store.root).champion, store.root / "site")

    assert section is not None
    assert [check.link for check in section.checks] == [
        "../reports/drift/2-104500.html",
        "../reports/drift/2-093005.html",
    ]


def test_without_a_check_of_the_champion_there_is_no_drift_section(
    store: Any, tmp_path: Path
) -> None:
    never_checked = with_drift(store, store.root / "reports", version="3")
    assert never_checked.drift is None
    assert drift_section(store, None, store.root / "reports") is None
    unregistered = never_checked.champion.model_copy(update={"version": None})  # type: ignore[union-attr]
    assert drift_section(store, unregistered, store.root / "reports") is None

    markdown, html = render_texts(never_checked, tmp_path / "with")
    plain = report_inputs("classification").model_copy(update={"champion": never_checked.champion})

    assert "Drift" not in markdown and 'id="drift"' not in html
    assert (markdown, html) == render_texts(plain, tmp_path / "without")  # not a byte more


def test_the_same_store_gives_the_same_report_bytes(store: Any, tmp_path: Path) -> None:
    report_dir = store.root / "reports"

    first = render_texts(with_drift(store, report_dir), tmp_path / "first")
    second = render_texts(with_drift(store, report_dir), tmp_path / "second")

    assert first == second


def hrefs(html: str) -> list[str]:
    import re

    return re.findall(r'<a href="([^"]+)"', html)
