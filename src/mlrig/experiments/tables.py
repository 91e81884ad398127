"""Tables between steps: a Parquet file plus a `meta.json` saying what its columns are.

Each column has a role (`ColumnInfo.role`), inferred at ingest and overridable with
`ingest.columns`: numeric, boolean, categorical, datetime, text (an ID or free text, which
cannot be a feature) or dropped. The features are every column but the target whose role is
neither text nor dropped; the model pipeline encodes each by its role.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel

from mlrig.errors import DataError
from mlrig.experiments.params import TaskKind

if TYPE_CHECKING:
    import pandas as pd

TABLE_FILE = "table.parquet"
META_FILE = "meta.json"

Role = Literal["numeric", "boolean", "categorical", "datetime", "text", "dropped"]
#: the roles a model can take as input; `text` (an ID or free text) and `dropped` it cannot
FEATURE_ROLES: tuple[Role, ...] = ("numeric", "boolean", "categorical", "datetime")


class ValueCount(BaseModel):
    """One value of a column and how many rows hold it."""

    value: str
    count: int


class ColumnInfo(BaseModel):
    """What one column is: its role, its type in table.parquet and the facts a reader checks."""

    name: str
    role: Role
    #: the pandas dtype of the column in table.parquet (what the model's signature is made from)
    dtype: str
    #: share of rows with no value in the source (values that did not parse are counted apart)
    missing_share: float
    distinct: int
    #: why the column has its role: what was inferred, or the `ingest.columns` override
    reason: str
    #: categorical columns: the most frequent values with their counts, most frequent first
    top_values: list[ValueCount] = []
    #: values present in the source that do not parse as the role's type (validate refuses them)
    unparsed: int = 0
    unparsed_examples: list[str] = []


class TableMeta(BaseModel):
    """What a table is: where it came from, its target and task, its columns and features.

    `features` are the columns a model takes, in order: every column but the target whose role
    is not `text` or `dropped`. A meta.json written before columns had roles has no `columns`:
    its features are all numeric (`role_of`).
    """

    dataset: str
    source: str
    target: str
    task: TaskKind
    features: list[str]
    rows: int
    classes: list[str] = []
    #: why the task is what it is (inferred from the target, or `ingest.task`)
    task_reason: str = ""
    #: every column of the source, the target and dropped ones included, in the source's order
    columns: list[ColumnInfo] = []
    #: classification, written by split: rows per class in `train` and `test`
    class_balance: dict[str, dict[str, int]] = {}

    def column(self, name: str) -> ColumnInfo | None:
        """The description of a column, if the meta has one."""
        return next((column for column in self.columns if column.name == name), None)

    def role_of(self, name: str) -> Role:
        """A column's role; a column the meta does not describe is numeric (as before roles)."""
        described = self.column(name)
        return described.role if described else "numeric"

    def features_with_role(self, *roles: Role) -> list[str]:
        """The features of the given roles, in feature order."""
        return [name for name in self.features if self.role_of(name) in roles]


class CheckedTable(NamedTuple):
    """A table and its meta as a step's preflight returns them for the steps after it."""

    table: pd.DataFrame
    meta: TableMeta


def write_meta(meta: BaseModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).write_text(meta.model_dump_json(indent=2) + "\n")


def require_output(path: Path) -> Path:
    """The path of a file an upstream step wrote.

    Raises:
        DataError: it is missing (run the pipeline from the start).
    """
    if not path.is_file():
        raise DataError(f"{path} is missing: run the upstream steps first (mlrig run).")
    return path


def read_output(path: Path) -> str:
    """The text of a file an upstream step wrote (DataError when it is missing)."""
    return require_output(path).read_text()


def read_meta(folder: Path) -> TableMeta:
    """Read the meta.json an upstream step wrote.

    Raises:
        DataError: the upstream output is missing (run the pipeline from the start).
    """
    return TableMeta.model_validate_json(read_output(folder / META_FILE))


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet table an upstream step wrote."""
    import pandas as pd

    return pd.read_parquet(require_output(path))
