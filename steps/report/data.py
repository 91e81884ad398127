"""The report's data section: what each column is (as ingest recorded it in meta.json) and how
the target is spread over the train and test splits.

The column facts are ingest's (`TableMeta.columns`: each column's role and why, its type, its
missing share, its distinct values and a categorical column's most frequent values) and the
task inference's reason (`TableMeta.task_reason`). A meta.json written before columns had roles
has none: the section then lists the features and the target by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlrig.experiments.tables import ColumnInfo, TableMeta
from mlrig.text import natural_order
from steps.split import TEST_FILE, TRAIN_FILE

if TYPE_CHECKING:
    import pandas as pd

#: how many of a categorical column's most frequent values the report lists
TOP_VALUES_SHOWN = 5


class ColumnFacts(BaseModel):
    """One column of the table as the report shows it (unknown facts are None)."""

    name: str
    role: str | None = None  # numeric, boolean, categorical, datetime, text, dropped
    reason: str | None = None  # why it has its role: inferred, or `ingest.columns`
    dtype: str | None = None
    missing_share: float | None = None  # 0.0 to 1.0
    distinct: int | None = None
    top_values: list[tuple[str, int]] = []  # the most frequent values with their counts

    @classmethod
    def of(cls, column: ColumnInfo) -> ColumnFacts:
        top = [(entry.value, entry.count) for entry in column.top_values[:TOP_VALUES_SHOWN]]
        return cls(**column.model_dump(exclude={"top_values"}), top_values=top)


class ClassCount(BaseModel):
    """How many rows of a class each split holds."""

    label: str
    train: int
    test: int


class TargetSummary(BaseModel):
    """A regression target's spread in one split."""

    mean: float
    std: float
    min: float
    max: float


class DataSection(BaseModel):
    columns: list[ColumnFacts]
    task_reason: str | None
    train_rows: int
    test_rows: int
    classes: list[ClassCount]  # classification
    targets: dict[str, TargetSummary]  # regression: by split

    @property
    def has_facts(self) -> bool:
        """True when meta.json says more of its columns than their names."""
        return any(column.role or column.dtype for column in self.columns)


def column_facts(meta: TableMeta) -> list[ColumnFacts]:
    """Each column's facts, the target first, then the others in the source's order."""
    if meta.columns:
        columns = [ColumnFacts.of(column) for column in meta.columns]
    else:
        columns = [ColumnFacts(name=name) for name in (meta.target, *meta.features)]
    return sorted(columns, key=lambda column: column.name != meta.target)


def class_counts(train_target: pd.Series, test_target: pd.Series) -> list[ClassCount]:
    """Rows per class in each split, the classes in natural order (`2` before `10`)."""
    train, test = train_target.astype(str).value_counts(), test_target.astype(str).value_counts()
    labels = natural_order(set(train.index) | set(test.index))
    return [
        ClassCount(label=label, train=int(train.get(label, 0)), test=int(test.get(label, 0)))
        for label in labels
    ]


def target_summary(target: pd.Series) -> TargetSummary:
    return TargetSummary(
        mean=float(target.mean()),
        std=float(target.std()),
        min=float(target.min()),
        max=float(target.max()),
    )


def data_section(split_dir: Path, meta: TableMeta) -> DataSection:
    """The data section from the split step's outputs: meta.json and the two splits' targets."""
    import pandas as pd

    train_target = pd.read_parquet(split_dir / TRAIN_FILE, columns=[meta.target])[meta.target]
    test_target = pd.read_parquet(split_dir / TEST_FILE, columns=[meta.target])[meta.target]
    classification = meta.task == "classification"
    return DataSection(
        columns=column_facts(meta),
        task_reason=meta.task_reason or None,
        train_rows=len(train_target),
        test_rows=len(test_target),
        classes=class_counts(train_target, test_target) if classification else [],
        targets={}
        if classification
        else {"train": target_summary(train_target), "test": target_summary(test_target)},
    )
