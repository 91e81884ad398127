"""Column roles at ingest: each type inferred from a CSV's values, `ingest.columns` overriding
them, the facts meta.json keeps per column, and the task with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlrig.errors import ParamsError
from mlrig.experiments.params import load_section
from mlrig.experiments.tables import TableMeta, read_meta
from steps.ingest.columns import infer_role, infer_task
from steps.ingest.ingest import ingest, write_table
from steps.ingest.params import IngestParams
from tests.support.tables import mixed_table


def ingested(
    tmp_path: Path, table: pd.DataFrame, target: str = "outcome", **params: object
) -> tuple[pd.DataFrame, TableMeta]:
    """The table as ingest reads it back from a CSV under data/."""
    path = tmp_path / "data" / "customers.csv"
    path.parent.mkdir(exist_ok=True)
    table.to_csv(path, index=False)
    return ingest(
        IngestParams(source="data/customers.csv", target=target, **params),  # type: ignore[arg-type]
        tmp_path,
    )


def roles(meta: TableMeta) -> dict[str, str]:
    return {column.name: column.role for column in meta.columns}


def test_a_mixed_csv_gets_a_role_per_column(tmp_path: Path) -> None:
    table, meta = ingested(tmp_path, mixed_table())

    assert roles(meta) == {
        "outcome": "categorical",
        "customer_id": "text",
        "city": "categorical",
        "member": "boolean",
        "signup": "datetime",
        "amount": "numeric",
        "visits": "categorical",
    }
    # an ID cannot be a feature: it stays in the table for validate to refuse
    assert meta.features == ["city", "member", "signup", "amount", "visits"]
    assert str(table["member"].dtype) == "boolean"
    assert str(table["signup"].dtype) == "datetime64[ns]"
    assert table["signup"].min() >= pd.Timestamp("2022-01-01")


def test_each_column_keeps_its_facts(tmp_path: Path) -> None:
    source = mixed_table()
    _, meta = ingested(tmp_path, source)

    city = meta.column("city")
    assert city is not None
    assert city.dtype == "str"
    assert city.missing_share == pytest.approx(source["city"].isna().mean())
    assert city.distinct == 4
    counts = source["city"].value_counts()
    assert [(top.value, top.count) for top in city.top_values] == list(counts.items())
    assert meta.column("signup").reason == "dates (%Y-%m-%d)"  # type: ignore[union-attr]
    assert "C00000" not in str(meta.model_dump())  # an ID's values are not quoted


def test_the_meta_reads_back_with_its_columns(tmp_path: Path) -> None:
    table, meta = ingested(tmp_path, mixed_table())
    write_table(table, meta, tmp_path / "out")

    assert read_meta(tmp_path / "out") == meta
    read_back = pd.read_parquet(tmp_path / "out" / "table.parquet")
    assert dict(read_back.dtypes.astype(str)) == dict(table.dtypes.astype(str))


@pytest.mark.parametrize(
    ("values", "role"),
    [
        ([1.5, 2.25, np.nan, 4.0] * 5, "numeric"),
        (list(range(20)), "numeric"),  # whole numbers, but many levels
        ([0, 1, 2] * 7, "categorical"),
        ([1.0, 2.0, np.nan] * 7, "categorical"),  # whole numbers with gaps
        ([True, False] * 10, "boolean"),
        (["TRUE", "false", None] * 7, "boolean"),
        (["2024-03-05", "2023-12-31", None] * 7, "datetime"),
        (["03/05/2024", "12/31/2023"] * 10, "datetime"),
        (["Paris", "Lyon", None] * 7, "categorical"),
        ([f"note {number}" for number in range(20)], "text"),
    ],
)
def test_inferred_role(values: list, role: str) -> None:
    assert infer_role(pd.Series(values, name="c"), max_integer_levels=10)[0] == role


def test_whole_numbers_are_categories_up_to_the_param(tmp_path: Path) -> None:
    source = mixed_table()

    _, default = ingested(tmp_path, source)
    _, strict = ingested(tmp_path, source, max_integer_levels=3)

    assert default.role_of("visits") == "categorical"
    assert strict.role_of("visits") == "numeric"
    assert "ingest.max_integer_levels = 10" in default.column("visits").reason  # type: ignore[union-attr]


def test_overrides_drop_and_retype_columns(tmp_path: Path) -> None:
    table, meta = ingested(
        tmp_path,
        mixed_table(),
        columns={"customer_id": "drop", "visits": "numeric", "member": "categorical"},
    )

    assert "customer_id" not in table.columns
    assert roles(meta)["customer_id"] == "dropped"
    assert meta.column("customer_id").reason == "ingest.columns.customer_id = drop"  # type: ignore[union-attr]
    assert meta.role_of("visits") == "numeric"
    assert meta.role_of("member") == "categorical"
    assert meta.features == ["city", "member", "signup", "amount", "visits"]


def test_a_declared_date_counts_what_does_not_parse(tmp_path: Path) -> None:
    source = mixed_table(rows=40)
    source.loc[3, "signup"] = "soon"
    source.loc[7, "signup"] = "2024-13-45"

    table, meta = ingested(tmp_path, source, columns={"signup": "datetime"})

    signup = meta.column("signup")
    assert signup is not None
    assert (signup.role, signup.unparsed) == ("datetime", 2)
    assert signup.unparsed_examples == ["soon", "2024-13-45"]
    assert table["signup"].isna().sum() == source["signup"].isna().sum() + 2


def test_a_declared_boolean_takes_yes_and_no(tmp_path: Path) -> None:
    source = mixed_table(rows=30)
    source["member"] = ["yes", "no", "maybe"] * 10

    table, meta = ingested(tmp_path, source, columns={"member": "boolean"})

    assert table["member"].tolist()[:3] == [True, False, pd.NA]
    assert meta.column("member").unparsed == 10  # type: ignore[union-attr]


def test_an_override_of_an_unknown_column_is_named_with_a_guess(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as caught:
        ingested(tmp_path, mixed_table(), columns={"custmer_id": "drop"})

    message = str(caught.value)
    assert "ingest.columns.custmer_id: data/customers.csv has no column 'custmer_id'" in message
    assert "did you mean customer_id?" in message
    assert "Its columns are: customer_id, city, member" in message


def test_an_override_of_the_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"ingest.columns.outcome: 'outcome' is the target"):
        ingested(tmp_path, mixed_table(), columns={"outcome": "categorical"})


def test_an_unknown_role_is_named_with_a_guess(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  columns:\n    zip: categorial\n")

    with pytest.raises(ParamsError) as caught:
        load_section(params, "ingest", IngestParams)

    assert "ingest.columns.zip: 'categorial' is no column role; did you mean categorical?" in str(
        caught.value
    )


# --- the task --------------------------------------------------------------------------------


def test_counts_with_many_levels_are_a_regression(tmp_path: Path) -> None:
    """Counts 0-12 were taken as a 13-class classification: past ingest.max_class_levels they
    are a regression, and the reason says so."""
    table = pd.DataFrame({"x": np.linspace(0, 1, 39), "visits": list(range(13)) * 3})

    _, meta = ingested(tmp_path, table, target="visits")

    assert meta.task == "regression"
    assert meta.task_reason == (
        "target 'visits' holds 13 distinct whole numbers, more than "
        "ingest.max_class_levels = 10 (ingest.task: classification makes them classes)"
    )
    assert meta.column("visits").role == "numeric"  # type: ignore[union-attr]


def test_the_task_param_and_override_win(tmp_path: Path) -> None:
    table = pd.DataFrame({"x": np.linspace(0, 1, 39), "visits": list(range(13)) * 3})

    _, wider = ingested(tmp_path, table, target="visits", max_class_levels=13)
    _, explicit = ingested(tmp_path, table, target="visits", task="classification")

    assert wider.task == explicit.task == "classification"
    assert "at most ingest.max_class_levels = 13" in wider.task_reason
    assert explicit.task_reason == "ingest.task = classification"
    assert len(explicit.classes) == 13


@pytest.mark.parametrize(
    ("values", "task", "reason"),
    [
        (["churn", "stay", "churn"], "classification", "holds text (2 labels)"),
        ([True, False, True], "classification", "holds true/false values"),
        ([0, 1, 2, 1], "classification", "3 distinct whole numbers, at most"),
        ([0.1, 0.7, 2.5], "regression", "holds numbers with fractions"),
    ],
)
def test_inferred_task_and_reason(values: list, task: str, reason: str) -> None:
    inferred, why = infer_task(pd.Series(values, name="y"), max_class_levels=10)

    assert inferred == task
    assert reason in why


def test_builtin_datasets_stay_numeric(tmp_path: Path) -> None:
    """The built-in tables are all numbers: their roles leave the models as they were."""
    for name in ("breast_cancer", "wine", "diabetes"):
        table, meta = ingest(IngestParams(source=f"builtin:{name}"), tmp_path)

        assert {meta.role_of(feature) for feature in meta.features} == {"numeric"}
        assert meta.features == [column for column in table.columns if column != "target"]
