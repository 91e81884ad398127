"""Split: sizes follow split.test_size, the seed fixes the split, classes keep their shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlrig.errors import DataError
from mlrig.experiments.tables import TableMeta
from steps.split.params import SplitParams
from steps.split.split import class_balance, split_file, split_table
from steps.validate.params import ValidateParams
from steps.validate.validate import validate_table


def classified(labels: list[str]) -> tuple[pd.DataFrame, TableMeta]:
    """A classification table whose `row_id` column tells the rows apart."""
    table = pd.DataFrame(
        {"row_id": np.arange(len(labels)), "x": np.linspace(0, 1, len(labels)), "label": labels}
    )
    meta = TableMeta(
        dataset="crafted",
        source="s",
        target="label",
        task="classification",
        features=["row_id", "x"],
        rows=len(table),
        classes=sorted(set(labels)),
    )
    return table, meta


def regressed(rows: int) -> tuple[pd.DataFrame, TableMeta]:
    """A regression table with a continuous target (every value distinct)."""
    generator = np.random.default_rng(0)
    table = pd.DataFrame({"row_id": np.arange(rows), "price": generator.normal(100.0, 15.0, rows)})
    meta = TableMeta(
        dataset="crafted",
        source="s",
        target="price",
        task="regression",
        features=["row_id"],
        rows=rows,
    )
    return table, meta


@pytest.mark.parametrize(("test_size", "train_rows", "test_rows"), [(0.25, 75, 25), (0.3, 70, 30)])
def test_sizes_follow_test_size(test_size: float, train_rows: int, test_rows: int) -> None:
    table, meta = classified(["a", "b"] * 50)

    train_table, test_table = split_table(table, meta, SplitParams(test_size=test_size))

    assert (len(train_table), len(test_table)) == (train_rows, test_rows)
    train_ids, test_ids = set(train_table["row_id"]), set(test_table["row_id"])
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(100))


def test_split_tables_have_a_fresh_index() -> None:
    table, meta = classified(["a", "b"] * 50)

    train_table, test_table = split_table(table, meta, SplitParams())

    assert train_table.index.tolist() == list(range(75))
    assert test_table.index.tolist() == list(range(25))
    assert list(train_table.columns) == ["row_id", "x", "label"]


def test_same_seed_gives_the_same_split() -> None:
    table, meta = classified(["a", "b"] * 50)

    first = split_table(table, meta, SplitParams(seed=7))
    again = split_table(table, meta, SplitParams(seed=7))

    pd.testing.assert_frame_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])


def test_different_seed_gives_a_different_split() -> None:
    table, meta = classified(["a", "b"] * 50)

    _, test_seven = split_table(table, meta, SplitParams(seed=7))
    _, test_eight = split_table(table, meta, SplitParams(seed=8))

    assert set(test_seven["row_id"]) != set(test_eight["row_id"])


def test_stratification_keeps_class_proportions() -> None:
    table, meta = classified(["major"] * 120 + ["minor"] * 80)

    train_table, test_table = split_table(table, meta, SplitParams(test_size=0.25))

    assert test_table["label"].value_counts().to_dict() == {"major": 30, "minor": 20}
    assert train_table["label"].value_counts().to_dict() == {"major": 90, "minor": 60}


def test_regression_splits_a_continuous_target() -> None:
    # stratifying on a target whose values are all distinct would raise; regression must not
    table, meta = regressed(40)

    train_table, test_table = split_table(table, meta, SplitParams(test_size=0.25, seed=3))

    assert (len(train_table), len(test_table)) == (30, 10)
    assert set(train_table["row_id"]) | set(test_table["row_id"]) == set(range(40))
    assert sorted([*train_table["price"], *test_table["price"]]) == sorted(table["price"])


def test_too_small_test_set_for_the_classes_is_a_data_error() -> None:
    table, meta = classified([label for label in "abcdefghij" for _ in range(2)])
    assert validate_table(table, meta, ValidateParams()).passed  # 20 rows, 2 per class

    with pytest.raises(DataError, match=r"split\.test_size"):
        split_table(table, meta, SplitParams(test_size=0.25))


def test_a_class_left_out_of_the_test_set_is_a_data_error() -> None:
    table, meta = classified(["rare"] * 2 + ["common"] * 98)
    assert validate_table(table, meta, ValidateParams()).passed

    outcomes = []
    for seed in range(5):
        try:
            train_table, test_table = split_table(table, meta, SplitParams(seed=seed))
        except DataError as error:
            assert "rare" in str(error) and "split.test_size" in str(error)
            outcomes.append("refused")
            continue
        assert set(test_table["label"]) == set(train_table["label"]) == {"rare", "common"}
        outcomes.append("split")
    assert "refused" in outcomes  # seed 0 leaves no rare row for the test set


def test_the_class_balance_counts_each_set_for_the_report() -> None:
    table, meta = classified(["a"] * 30 + ["b"] * 10)
    train_table, test_table = split_table(table, meta, SplitParams(test_size=0.25, seed=0))

    balance = class_balance(train_table, test_table, meta)

    assert balance == {"train": {"a": 22, "b": 8}, "test": {"a": 8, "b": 2}}
    assert class_balance(*split_table(*regressed(40), SplitParams()), regressed(40)[1]) == {}


def test_split_file_writes_the_in_memory_split_as_columns(tmp_path) -> None:
    """The Parquet split holds the same rows as the in-memory one; categories stay
    dictionary-encoded (codes, no text object per row) in train.parquet and test.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table, meta = classified(["a", "b", "c"] * 40)
    table["city"] = pd.Categorical(np.resize(["Oslo", "Lima", "Pune"], len(table)))
    table.to_parquet(tmp_path / "table.parquet", index=False)

    targets = split_file(tmp_path / "table.parquet", meta, SplitParams(seed=3), tmp_path / "out")

    expected_train, expected_test = split_table(table, meta, SplitParams(seed=3))
    for name, expected in (("train", expected_train), ("test", expected_test)):
        written = pq.read_table(tmp_path / "out" / f"{name}.parquet")
        assert pa.types.is_dictionary(written.schema.field("city").type)
        pd.testing.assert_frame_equal(written.to_pandas(), expected)
        assert targets[name].tolist() == expected["label"].tolist()
