"""Tables between steps: a Parquet file plus a `meta.json` saying what its columns are."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlrig.errors import DataError
from mlrig.experiments.params import TaskKind

if TYPE_CHECKING:
    import pandas as pd

TABLE_FILE = "table.parquet"
META_FILE = "meta.json"


class TableMeta(BaseModel):
    """What a table is: where it came from, its target and task, its features."""

    dataset: str
    source: str
    target: str
    task: TaskKind
    features: list[str]
    rows: int
    classes: list[str] = []


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


def features_and_target(table: pd.DataFrame, meta: TableMeta) -> tuple[pd.DataFrame, pd.Series]:
    """Split a table into its feature frame (in meta order) and its target series."""
    return table[meta.features], table[meta.target]
