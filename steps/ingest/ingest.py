"""Ingest: turn the configured source into a Parquet table with a meta.json.

Sources (param `ingest.source`): `builtin:<breast_cancer|wine|diabetes>` (scikit-learn's bundled
datasets), `synthetic:<rows>` (a generated classification table of mixed types: 15 numeric and
5 categorical features), or a CSV/Parquet path whose target column is `ingest.target`.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.errors import DataError, exits_cleanly
from mlrig.experiments.params import load_section
from mlrig.experiments.tables import TABLE_FILE, TableMeta, write_meta
from mlrig.progress import phase
from steps.ingest.columns import describe_columns, describe_target, infer_task
from steps.ingest.params import BUILTIN_DATASETS, GENERATED_TARGET, IngestParams

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

SYNTHETIC_FEATURES = 20
#: of the synthetic features, these are categorical: text labels (`c0_a`, ...) binned from
#: generated numbers, so they carry signal; their levels grow column by column
SYNTHETIC_CATEGORY_LEVELS = (3, 5, 8, 12, 20)


def load_builtin(name: str) -> pd.DataFrame:
    """Load one of scikit-learn's bundled datasets with its target as column `target`."""
    from sklearn import datasets

    if name not in BUILTIN_DATASETS:
        choices = ", ".join(f"builtin:{known}" for known in BUILTIN_DATASETS)
        raise DataError(
            f"Unknown builtin dataset builtin:{name} (ingest.source). Choose one of {choices}."
        )
    loader = getattr(datasets, f"load_{name}")
    return loader(as_frame=True).frame


def synthetic_rows(spec: str) -> int:
    """The row count of `synthetic:<rows>` (`_` allowed).

    Raises:
        DataError: it is no whole number of at least 2.
    """
    try:
        rows = int(spec.replace("_", ""))
    except ValueError:
        rows = 0
    if rows < 2:
        raise DataError(
            f"ingest.source synthetic:{spec} needs a row count of at least 2, "
            "e.g. synthetic:100000."
        )
    return rows


def binned_category(values: np.ndarray, levels: int, prefix: str) -> pd.Categorical:
    """`values` cut at their quantiles into `levels` text labels, as a pandas categorical
    (codes plus labels: no text object per row, however many rows)."""
    import numpy as np
    import pandas as pd

    edges = np.quantile(values, np.linspace(0, 1, levels + 1)[1:-1])
    codes = np.searchsorted(edges, values).astype(np.int8)
    labels = [f"{prefix}_{chr(ord('a') + level)}" for level in range(levels)]
    return pd.Categorical.from_codes(codes, categories=labels)


def make_synthetic(spec: str, seed: int) -> pd.DataFrame:
    """Generate a classification table of `spec` rows (`synthetic:<rows>`): 20 features, the
    first 15 numeric (`x00`...), the last 5 categorical (`c0`... with 3 to 20 text labels)."""
    import pandas as pd
    from sklearn.datasets import make_classification

    rows = synthetic_rows(spec)
    features, target = make_classification(
        n_samples=rows,
        n_features=SYNTHETIC_FEATURES,
        n_informative=SYNTHETIC_FEATURES // 2,
        random_state=seed,
    )
    numeric = SYNTHETIC_FEATURES - len(SYNTHETIC_CATEGORY_LEVELS)
    columns: dict[str, object] = {f"x{i:02d}": features[:, i] for i in range(numeric)}
    for i, levels in enumerate(SYNTHETIC_CATEGORY_LEVELS):
        columns[f"c{i}"] = binned_category(features[:, numeric + i], levels, f"c{i}")
    columns[GENERATED_TARGET] = target
    return pd.DataFrame(columns)


def duplicate_csv_columns(path: Path, encoding: str = "utf-8") -> list[str]:
    """Header names that appear twice (pandas would silently rename them to `name.1`)."""
    with path.open(newline="", encoding=encoding, errors="replace") as stream:
        header = next(csv.reader(stream), [])
    return sorted(name for name, count in Counter(header).items() if count > 1)


def first_undecodable(path: Path, encoding: str) -> tuple[int, int, bytes] | None:
    """Where a text file first fails to decode: line, column (both from 1) and the bytes."""
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as error:
                column = len(line[: error.start].decode(encoding, errors="replace")) + 1
                return number, column, error.object[error.start : error.end]
    return None


def encoding_error(path: Path, where: str, encoding: str) -> DataError:
    """The error for a CSV that is not in `encoding`: where, and the two ways to fix it."""
    found = first_undecodable(path, encoding)
    place = f" at line {found[0]}, column {found[1]} (byte {found[2].hex(' ', 1)})" if found else ""
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return DataError(
        f"Data file {where} cannot be parsed: it is not valid {encoding} text "
        f"(ingest.encoding){place}. If it is in another encoding, name it, e.g. "
        "-S ingest.encoding=latin-1 (or cp1252, ...), or re-encode it to UTF-8 and point "
        f"ingest.source at the copy: iconv -f latin1 -t utf-8 {path} > {converted}"
    )


def read_file(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV (in `encoding`) or Parquet file, turning every way it can fail into a
    `DataError`."""
    import pandas as pd
    import pyarrow

    where = f"{path} (ingest.source)"
    if not path.exists():
        raise DataError(
            f"Data file {where} does not exist. Check the path, relative to the project."
        )
    if path.is_dir():
        raise DataError(f"{where} is a folder; point ingest.source at a .csv or .parquet file.")
    if path.stat().st_size == 0:
        raise DataError(f"Data file {where} is empty. Export the table again.")
    suffix = path.suffix.lower()
    try:
        if suffix in {".csv", ".txt"}:
            if duplicates := duplicate_csv_columns(path, encoding):
                raise DataError(
                    f"{where} has duplicate column names: {', '.join(duplicates)}. "
                    "Rename them so every column is unique."
                )
            with warnings.catch_warnings():
                # a row longer than the header would silently become the index: refuse it
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, index_col=False, encoding=encoding)
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
    except PermissionError:
        raise DataError(f"Data file {where} is not readable: permission denied.") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"Data file {where} has no columns. Export the table again.") from None
    except UnicodeDecodeError:
        raise encoding_error(path, where, encoding) from None
    except (
        pd.errors.ParserError,
        pd.errors.ParserWarning,
        pyarrow.ArrowException,
        OSError,
    ) as error:
        reason = str(error).strip().rstrip(".")
        raise DataError(f"Data file {where} cannot be parsed: {reason}.") from None
    raise DataError(f"{where} has suffix {suffix!r}; mlrig reads .csv and .parquet files.")


def load_source(params: IngestParams, root: Path) -> tuple[pd.DataFrame, str, str]:
    """Return the raw table, its target column and a dataset name for the configured source."""
    kind, _, rest = params.source.partition(":")
    if kind == "builtin":
        return load_builtin(rest), GENERATED_TARGET, rest
    if kind == "synthetic":
        return make_synthetic(rest, params.seed), GENERATED_TARGET, f"synthetic_{rest}"
    path = Path(params.source)
    table = read_file(path if path.is_absolute() else root / path, params.encoding)
    return table, params.target, path.stem


def ingest(params: IngestParams, root: Path) -> tuple[pd.DataFrame, TableMeta]:
    """Load the configured source and describe it.

    Args:
        params: the `ingest` section of params.yaml.
        root: the project folder; relative source paths are resolved against it.

    Returns:
        The table (column names as text, each column in its role's type, dropped ones left
        out) and its `TableMeta`: each column's role and facts, the task and why.

    Raises:
        DataError: the source is unknown, missing, unreadable, empty or lacks the target column.
        ParamsError: `ingest.columns` names a column the source lacks, or its target.
    """
    phase(f"reading {params.source}")
    table, target, dataset = load_source(params, root)
    phase(f"typing and describing {table.shape[1]} columns of {len(table)} rows")
    table.columns = [str(column) for column in table.columns]
    if duplicated := sorted(set(table.columns[table.columns.duplicated()])):
        raise DataError(f"{params.source} has duplicate columns: {', '.join(duplicated)}.")
    if table.empty:
        raise DataError(f"{params.source} (ingest.source) has no rows. Export the table again.")
    if target not in table.columns:
        shown = ", ".join(table.columns[:20]) + (" ..." if len(table.columns) > 20 else "")
        raise DataError(
            f"Target column {target!r} (ingest.target) is not in {params.source}. "
            f"Its columns are: {shown}. Set -S ingest.target=<column>."
        )
    task, reason = (
        infer_task(table[target], params.max_class_levels)
        if params.task == "auto"
        else (params.task, f"ingest.task = {params.task}")
    )
    if task == "classification" and table[target].dtype == object:
        table[target] = table[target].astype(str)
    table, columns = describe_columns(table, target, params)
    meta = TableMeta(
        dataset=dataset,
        source=params.source,
        target=target,
        task=task,
        task_reason=reason,
        features=[info.name for info in columns if info.role not in ("text", "dropped")],
        rows=len(table),
        classes=sorted(map(str, table[target].dropna().unique()))
        if task == "classification"
        else [],
        columns=[describe_target(table[target], task, reason), *columns],
    )
    return table, meta


def write_table(table: pd.DataFrame, meta: TableMeta, out_dir: Path) -> None:
    """Write the table and its meta into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out_dir / TABLE_FILE, index=False)
    write_meta(meta, out_dir)


app = typer.Typer(add_completion=False, help="Ingest the configured source into a Parquet table.")


@app.command()
@exits_cleanly
def main(
    out_dir: Annotated[Path, typer.Option(help="folder for table.parquet and meta.json")],
    params: Annotated[Path, typer.Option(help="params.yaml; reads its `ingest` section")] = Path(
        "params.yaml"
    ),
) -> None:
    """Ingest the source named by `ingest.source`."""
    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import tracked_step

    settings = load_settings()
    section = load_section(params, "ingest", IngestParams)
    table, meta = ingest(section, settings.root)
    with tracked_step(settings, "ingest", "ingest") as run:
        phase(f"writing {out_dir / TABLE_FILE}")
        write_table(table, meta, out_dir)
        run.log_params(section.model_dump())
        run.log_metrics({"rows": float(meta.rows), "features": float(len(meta.features))})
    typer.echo(
        f"ingest: {meta.rows} rows, {len(meta.features)} features, {meta.task} ({meta.dataset}): "
        f"{meta.task_reason}"
    )
