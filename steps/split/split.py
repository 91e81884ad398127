"""Split: a seeded train/test split, stratified by class for classification.

Feature scaling and imputation are not done here but inside each model's pipeline (see the
train step), so the model MLflow serves takes the raw feature columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.errors import DataError, exits_cleanly
from mlrig.experiments.params import load_section
from mlrig.experiments.tables import TABLE_FILE, TableMeta, read_meta, read_parquet, write_meta
from steps.split.params import SplitParams

if TYPE_CHECKING:
    import pandas as pd

TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"


def split_table(
    table: pd.DataFrame, meta: TableMeta, params: SplitParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into train and test tables.

    Args:
        table: the validated table.
        meta: its description (target and task).
        params: the `split` section of params.yaml.

    Returns:
        `(train_table, test_table)`; for classification every class is in both.

    Raises:
        DataError: the classes are too many or too small for `split.test_size` (every class
            must land in both sets, or the held-out metrics are meaningless).
    """
    from sklearn.model_selection import train_test_split

    stratify = table[meta.target] if meta.task == "classification" else None
    try:
        train_table, test_table = train_test_split(
            table, test_size=params.test_size, random_state=params.seed, stratify=stratify
        )
    except ValueError as error:
        raise DataError(
            f"Cannot split {len(table)} rows with split.test_size = {params.test_size}: {error} "
            "Raise split.test_size or provide more rows per class."
        ) from None
    if stratify is not None:
        missing = sorted(set(map(str, table[meta.target])) - set(map(str, test_table[meta.target])))
        if missing:
            raise DataError(
                f"With split.test_size = {params.test_size} no test row is left for class(es) "
                f"{', '.join(missing)}: too few rows. Raise split.test_size, add rows, or raise "
                "validate.min_rows_per_class to reject such data."
            )
    return train_table.reset_index(drop=True), test_table.reset_index(drop=True)


def class_balance(
    train_table: pd.DataFrame, test_table: pd.DataFrame, meta: TableMeta
) -> dict[str, dict[str, int]]:
    """Rows per class in each set (classification; empty for regression), in class order."""
    if meta.task != "classification":
        return {}
    return {
        name: {
            label: int(count)
            for label, count in sorted(part[meta.target].astype(str).value_counts().items())
        }
        for name, part in (("train", train_table), ("test", test_table))
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
    train_table, test_table = split_table(read_parquet(table_dir / TABLE_FILE), meta, section)
    with tracked_step(load_settings(), "split", "split") as run:
        out_dir.mkdir(parents=True, exist_ok=True)
        train_table.to_parquet(out_dir / TRAIN_FILE, index=False)
        test_table.to_parquet(out_dir / TEST_FILE, index=False)
        balance = class_balance(train_table, test_table, meta)
        write_meta(meta.model_copy(update={"class_balance": balance}), out_dir)
        run.log_params(section.model_dump())
        run.log_metrics(
            {"train_rows": float(len(train_table)), "test_rows": float(len(test_table))}
        )
    typer.echo(f"split: {len(train_table)} train rows, {len(test_table)} test rows")
