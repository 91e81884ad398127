"""Split: a seeded train/test split, stratified by class for classification.

The split is columnar: the positions come from the target column alone, and the table is cut
into train.parquet and test.parquet as Arrow columns (`split_file`), so its size in memory is
the Parquet table's, whatever its types.

Feature scaling and imputation are not done here but inside each model's pipeline (see the
train step), so the model MLflow serves takes the raw feature columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.errors import DataError, exits_cleanly
from mlrig.experiments.params import load_section
from mlrig.experiments.tables import TABLE_FILE, TableMeta, read_meta, require_output, write_meta
from mlrig.progress import phase
from steps.split.params import SplitParams

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"


def split_positions(
    target: pd.Series, meta: TableMeta, params: SplitParams
) -> tuple[np.ndarray, np.ndarray]:
    """The row positions of the train and test sets: seeded, by class for classification.

    Only the target column is looked at, so a table of any width is split by its positions
    (pyarrow's `take`, column by column), never copied row by row.

    Raises:
        DataError: the classes are too many or too small for `split.test_size` (every class
            must land in both sets, or the held-out metrics are meaningless).
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    stratify = target.to_numpy() if meta.task == "classification" else None
    try:
        train_rows, test_rows = train_test_split(
            np.arange(len(target)),
            test_size=params.test_size,
            random_state=params.seed,
            stratify=stratify,
        )
    except ValueError as error:
        raise DataError(
            f"Cannot split {len(target)} rows with split.test_size = {params.test_size}: {error} "
            "Raise split.test_size or provide more rows per class."
        ) from None
    if stratify is not None:
        labels = target.astype(str)
        missing = sorted(set(labels.unique()) - set(labels.iloc[test_rows].unique()))
        if missing:
            raise DataError(
                f"With split.test_size = {params.test_size} no test row is left for class(es) "
                f"{', '.join(missing)}: too few rows. Raise split.test_size, add rows, or raise "
                "validate.min_rows_per_class to reject such data."
            )
    return train_rows, test_rows


def split_table(
    table: pd.DataFrame, meta: TableMeta, params: SplitParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table in memory into train and test tables (`split_positions`).

    Args:
        table: the validated table.
        meta: its description (target and task).
        params: the `split` section of params.yaml.

    Returns:
        `(train_table, test_table)`; for classification every class is in both.

    Raises:
        DataError: see `split_positions`.
    """
    train_rows, test_rows = split_positions(table[meta.target], meta, params)
    return (
        table.iloc[train_rows].reset_index(drop=True),
        table.iloc[test_rows].reset_index(drop=True),
    )


def split_file(
    table_path: Path, meta: TableMeta, params: SplitParams, out_dir: Path
) -> dict[str, pd.Series]:
    """Split the Parquet table at `table_path` into train.parquet and test.parquet in `out_dir`,
    as Arrow columns (categories stay dictionaries, numbers stay buffers: no pandas copy).

    Returns:
        The target column of each set (`train`, `test`), for the counts a run reports.

    Raises:
        DataError: see `split_positions`.
    """
    import pyarrow.parquet as pq

    phase(f"reading {table_path}")
    table = pq.read_table(require_output(table_path))
    target = table.column(meta.target).to_pandas()
    phase(f"choosing the test rows of {len(target)}")
    train_rows, test_rows = split_positions(target, meta, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in ((TRAIN_FILE, train_rows), (TEST_FILE, test_rows)):
        phase(f"writing {len(rows)} rows to {out_dir / name}")
        pq.write_table(table.take(rows), out_dir / name)
    return {
        "train": target.iloc[train_rows].reset_index(drop=True),
        "test": target.iloc[test_rows].reset_index(drop=True),
    }


def class_balance(
    train_table: pd.DataFrame, test_table: pd.DataFrame, meta: TableMeta
) -> dict[str, dict[str, int]]:
    """Rows per class in each set (classification; empty for regression), in class order."""
    return target_balance(
        {"train": train_table[meta.target], "test": test_table[meta.target]}, meta
    )


def target_balance(targets: dict[str, pd.Series], meta: TableMeta) -> dict[str, dict[str, int]]:
    """Rows per class of each set's target column (classification; empty for regression)."""
    if meta.task != "classification":
        return {}
    return {
        name: {
            label: int(count) for label, count in sorted(target.astype(str).value_counts().items())
        }
        for name, target in targets.items()
    }


app = typer.Typer(add_completion=False, help="Split the table into train and test sets.")


@app.command()
@exits_cleanly
def main(
    table_dir: Annotated[Path, typer.Option(help="folder with the ingested table.parquet")],
    out_dir: Annotated[Path, typer.Option(help="folder for train.parquet, test.parquet")],
    params: Annotated[Path, typer.Option(help="params.yaml; reads its `split` section")] = Path(
        "params.yaml"
    ),
) -> None:
    """Write the seeded train/test split."""
    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import tracked_step

    section = load_section(params, "split", SplitParams)
    meta = read_meta(table_dir)
    targets = split_file(table_dir / TABLE_FILE, meta, section, out_dir)  # bad input: no write
    with tracked_step(load_settings(), "split", "split") as run:
        write_meta(
            meta.model_copy(update={"class_balance": target_balance(targets, meta)}), out_dir
        )
        run.log_params(section.model_dump())
        train_rows, test_rows = len(targets["train"]), len(targets["test"])
        run.log_metrics({"train_rows": float(train_rows), "test_rows": float(test_rows)})
    typer.echo(f"split: {train_rows} train rows, {test_rows} test rows")
