"""Validate: each expectation fails on a table crafted to break it, naming the column or param."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlrig.errors import DataError
from mlrig.experiments.tables import TableMeta
from steps.ingest.ingest import ingest
from steps.ingest.params import IngestParams
from steps.validate.params import ValidateParams
from steps.validate.validate import raise_for_failures, validate_table

DEFAULTS = ValidateParams()  # min_rows 20, min_rows_per_class 2, max_classes 100, missing 20%
CLASSIFICATION_CHECKS = [
    "enough rows",
    "features",
    "text columns",
    "feature types",
    "parsed values",
    "categories",
    "missing values",
    "finite values",
    "target complete",
    "target not constant",
    "classes",
    "rows per class",
]


def classified(labels: list, **features: list) -> tuple[pd.DataFrame, TableMeta]:
    """A classification table: the given feature columns (default: one numeric) and labels."""
    columns = features or {"x": list(np.linspace(0.0, 1.0, len(labels)))}
    table = pd.DataFrame({**columns, "label": labels})
    meta = TableMeta(
        dataset="crafted",
        source="data/crafted.csv",
        target="label",
        task="classification",
        features=list(columns),
        rows=len(table),
        classes=sorted({str(label) for label in labels if label == label}),
    )
    return table, meta


def regressed(values: list) -> tuple[pd.DataFrame, TableMeta]:
    """A regression table with one numeric feature."""
    table = pd.DataFrame({"x": np.arange(len(values), dtype=float), "price": values})
    meta = TableMeta(
        dataset="crafted",
        source="data/crafted.csv",
        target="price",
        task="regression",
        features=["x"],
        rows=len(table),
    )
    return table, meta


def failed(table: pd.DataFrame, meta: TableMeta, params: ValidateParams = DEFAULTS) -> dict:
    """Name -> detail of every failed check."""
    report = validate_table(table, meta, params)
    return {check.name: check.detail for check in report.failures()}


def test_good_classification_table_passes() -> None:
    table, meta = classified(["a", "b"] * 15)

    report = validate_table(table, meta, DEFAULTS)

    assert report.passed
    assert [check.name for check in report.checks] == CLASSIFICATION_CHECKS
    assert report.failures() == []
    assert (report.dataset, report.rows, report.features) == ("crafted", 30, 1)


def test_good_regression_table_passes_without_class_checks() -> None:
    table, meta = regressed(list(np.linspace(1.0, 9.0, 25)))

    report = validate_table(table, meta, DEFAULTS)

    assert report.passed
    checks = [check.name for check in report.checks]
    assert checks == [*CLASSIFICATION_CHECKS[:-2], "numeric target"]


def test_ingested_builtin_table_passes(tmp_path: Path) -> None:
    table, meta = ingest(IngestParams(source="builtin:wine"), tmp_path)

    report = validate_table(table, meta, DEFAULTS)

    assert report.passed
    assert report.rows == 178


def test_too_few_rows() -> None:
    table, meta = classified(["a", "b"] * 5)

    assert failed(table, meta) == {"enough rows": "10 rows (validate.min_rows = 20)"}


def test_min_rows_is_inclusive() -> None:
    table, meta = classified(["a", "b"] * 10)

    assert failed(table, meta) == {}


def test_an_undescribed_text_feature_is_named() -> None:
    """A meta.json without column roles (a step's own, or one from before roles) holds numbers:
    text there is refused, naming the column and how to describe the table."""
    table, meta = classified(
        ["a", "b"] * 15, size=list(range(30)), colour=["red", "green", "blue"] * 10
    )

    failures = failed(table, meta)

    assert list(failures) == ["feature types"]
    assert failures["feature types"].startswith(
        "not of their role's type: colour (str, described as numeric)"
    )
    assert "describe_columns" in failures["feature types"]


def test_table_without_features_fails() -> None:
    table = pd.DataFrame({"label": ["a", "b"] * 15})
    meta = TableMeta(
        dataset="crafted",
        source="s",
        target="label",
        task="classification",
        features=[],
        rows=30,
        classes=["a", "b"],
    )

    assert failed(table, meta)["features"] == "the table has no feature columns"


def test_too_many_missing_values_names_the_column_and_param() -> None:
    labels = ["a", "b"] * 10
    sparse = [np.nan] * 6 + [1.0] * 14  # 30% missing
    allowed = [np.nan] * 4 + [1.0] * 16  # 20% missing, exactly the limit
    table, meta = classified(labels, sparse=sparse, allowed=allowed)

    failures = failed(table, meta)

    assert failures == {
        "missing values": "columns over validate.max_missing_fraction = 20%: sparse (30%)"
    }


def test_missing_fraction_follows_the_param() -> None:
    table, meta = classified(["a", "b"] * 10, sparse=[np.nan] * 6 + [1.0] * 14)

    assert failed(table, meta, ValidateParams(max_missing_fraction=0.3)) == {}
    strict = failed(table, meta, ValidateParams(max_missing_fraction=0.1))
    assert strict["missing values"].endswith("= 10%: sparse (30%)")


def test_infinite_features_are_named_with_their_count() -> None:
    table, meta = classified(
        ["a", "b"] * 15,
        x=[float("inf"), float("-inf"), *range(28)],
        y=[*range(29), float("inf")],
        z=list(range(30)),
    )

    assert failed(table, meta) == {
        "finite values": "infinite values (inf or -inf) in x (2 rows), y (1 row); "
        "replace them with a number or leave the cells empty"
    }


def test_infinite_regression_target_is_named() -> None:
    table, meta = regressed([*np.linspace(1.0, 9.0, 24), np.inf])

    assert "target price (1 row)" in failed(table, meta)["finite values"]


def test_infinity_read_from_a_csv_fails_validation(tmp_path: Path) -> None:
    """pandas reads `inf` in a CSV as a float: the table ingests, validation must stop it."""
    path = tmp_path / "data" / "spiky.csv"
    path.parent.mkdir()
    path.write_text(
        "a,b,target\n" + "".join(f"{i},{'inf' if i == 3 else i},{i % 2}\n" for i in range(30))
    )
    table, meta = ingest(IngestParams(source="data/spiky.csv"), tmp_path)

    with pytest.raises(DataError, match=r"b \(1 row\)"):
        raise_for_failures(validate_table(table, meta, DEFAULTS), meta.source)


def test_target_with_missing_values() -> None:
    table, meta = regressed([1.5, np.nan, 2.5, np.nan, *np.linspace(3.0, 9.0, 20)])

    assert failed(table, meta) == {
        "target complete": "2 rows have no value in target column 'price'"
    }


def test_constant_regression_target() -> None:
    table, meta = regressed([3.0] * 25)

    assert failed(table, meta) == {
        "target not constant": "target column 'price' has 1 distinct value(s)"
    }


def test_single_class() -> None:
    table, meta = classified(["spam"] * 25)

    failures = failed(table, meta)

    assert failures == {
        "target not constant": "target column 'label' has 1 distinct value(s)",
        "classes": "1 classes (need 2 to validate.max_classes = 100)",
    }


def test_class_below_min_rows_per_class() -> None:
    table, meta = classified(["common"] * 20 + ["rare"])

    assert failed(table, meta) == {
        "rows per class": "classes below validate.min_rows_per_class = 2, too rare to split "
        "into train and test: 'rare' (1 row)"
    }


def test_min_rows_per_class_follows_the_param() -> None:
    table, meta = classified(["a"] * 20 + ["b"] * 3)

    assert failed(table, meta) == {}
    assert failed(table, meta, ValidateParams(min_rows_per_class=4)) == {
        "rows per class": "classes below validate.min_rows_per_class = 4, too rare to split "
        "into train and test: 'b' (3 rows)"
    }


def test_too_many_classes() -> None:
    table, meta = classified(["a", "b", "c", "d"] * 6)

    failures = failed(table, meta, ValidateParams(max_classes=3))

    assert failures == {"classes": "4 classes (need 2 to validate.max_classes = 3)"}


def test_text_target_of_a_regression_fails() -> None:
    table, meta = regressed(["low", "high", "mid", "high", "low"] * 5)

    assert "price" in " ".join(failed(table, meta).values())


def test_raise_for_failures_lists_every_failed_check() -> None:
    table, meta = classified(["a"] * 9 + ["b"], colour=["red"] * 10)
    report = validate_table(table, meta, DEFAULTS)

    with pytest.raises(DataError) as caught:
        raise_for_failures(report, meta.source)

    message = str(caught.value)
    assert message.startswith("The data from data/crafted.csv failed validation:\n")
    assert "  enough rows: 10 rows (validate.min_rows = 20)\n" in message
    assert "  feature types: not of their role's type: colour (str, described as" in message
    assert "  rows per class: classes below validate.min_rows_per_class = 2, too rare" in message
    assert "missing values" not in message
    assert "target complete" not in message
    assert message.count("\n  ") == 3


def test_raise_for_failures_is_silent_on_a_passing_report() -> None:
    table, meta = classified(["a", "b"] * 15)
    report = validate_table(table, meta, DEFAULTS)

    assert raise_for_failures(report, meta.source) is None
