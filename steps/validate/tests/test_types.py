"""Validate on tables as teams have them: each kind of column it refuses, named with the fix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlrig.errors import DataError
from mlrig.experiments.tables import TableMeta
from steps.ingest.ingest import ingest
from steps.ingest.params import IngestParams
from steps.validate.params import ValidateParams
from steps.validate.validate import raise_for_failures, validate_table
from tests.support.tables import mixed_table

ID_DROPPED = {"customer_id": "drop"}


def ingested(
    tmp_path: Path, table: pd.DataFrame, **params: object
) -> tuple[pd.DataFrame, TableMeta]:
    path = tmp_path / "data" / "customers.csv"
    path.parent.mkdir(exist_ok=True)
    table.to_csv(path, index=False)
    return ingest(
        IngestParams(source="data/customers.csv", target="outcome", **params),  # type: ignore[arg-type]
        tmp_path,
    )


def failed(table: pd.DataFrame, meta: TableMeta, params: ValidateParams | None = None) -> dict:
    report = validate_table(table, meta, params or ValidateParams())
    return {check.name: check.detail for check in report.failures()}


def test_a_mixed_table_passes_once_its_id_is_dropped(tmp_path: Path) -> None:
    table, meta = ingested(tmp_path, mixed_table(), columns=ID_DROPPED)

    assert failed(table, meta) == {}


def test_an_id_column_is_refused_saying_how_to_drop_it(tmp_path: Path) -> None:
    table, meta = ingested(tmp_path, mixed_table())

    assert failed(table, meta) == {
        "text columns": "customer_id (200 distinct values): nearly every value distinct, an ID "
        "or free text, which cannot be a feature; drop it in params.yaml with ingest.columns: "
        "{customer_id: drop} (or -S ingest.columns.customer_id=drop)"
    }
    with pytest.raises(DataError, match="text columns: customer_id"):
        raise_for_failures(validate_table(table, meta, ValidateParams()), meta.source)


def test_free_text_is_refused_like_an_id(tmp_path: Path) -> None:
    source = mixed_table()
    source["comment"] = [f"called on day {day}, asked about the invoice" for day in range(200)]

    failures = failed(*ingested(tmp_path, source, columns=ID_DROPPED))

    assert failures["text columns"].startswith("comment (200 distinct values)")


def test_a_category_with_too_many_values_is_named_with_the_param(tmp_path: Path) -> None:
    source = mixed_table()
    source["street"] = [f"street {number % 60}" for number in range(200)]
    table, meta = ingested(tmp_path, source, columns=ID_DROPPED)

    assert failed(table, meta) == {}
    assert failed(table, meta, ValidateParams(max_categories=50)) == {
        "categories": "categorical columns with more values than validate.max_categories = 50: "
        "street (60 values); drop them (ingest.columns: {<column>: drop}) or raise "
        "validate.max_categories"
    }


def test_a_date_that_does_not_parse_is_named_with_examples(tmp_path: Path) -> None:
    source = mixed_table()
    source.loc[[3, 8, 9], "signup"] = ["soon", "2024-13-45", "soon"]
    table, meta = ingested(tmp_path, source, columns=ID_DROPPED)

    assert meta.role_of("signup") == "datetime"  # nearly all of it parses: a date column
    assert failed(table, meta) == {
        "parsed values": "values that do not parse as their column's type: signup (datetime): "
        "3 values, e.g. 'soon', '2024-13-45'; fix them or empty those cells, or give the column "
        "another role with ingest.columns"
    }


def test_a_class_too_rare_to_split_is_named(tmp_path: Path) -> None:
    source = mixed_table()
    source.loc[0, "outcome"] = "moved away"

    failures = failed(*ingested(tmp_path, source, columns=ID_DROPPED))

    assert failures == {
        "rows per class": "classes below validate.min_rows_per_class = 2, too rare to split "
        "into train and test: 'moved away' (1 row)"
    }


def test_infinity_in_a_mixed_table_is_still_refused(tmp_path: Path) -> None:
    source = mixed_table()
    source.loc[5, "amount"] = float("inf")

    failures = failed(*ingested(tmp_path, source, columns=ID_DROPPED))

    assert failures == {
        "finite values": "infinite values (inf or -inf) in amount (1 row); replace them with a "
        "number or leave the cells empty"
    }


def test_a_step_that_changed_a_column_without_describing_it_is_named(tmp_path: Path) -> None:
    """A team's step that turns a number into text but copies meta.json as it was."""
    table, meta = ingested(tmp_path, mixed_table(), columns=ID_DROPPED)
    table["amount"] = table["amount"].map(lambda value: f"{value} EUR")

    assert failed(table, meta)["feature types"].startswith(
        "not of their role's type: amount (str, described as numeric)"
    )
