"""What each column of a table is: its role inferred from its values, or set by `ingest.columns`.

The rules (`infer_role`), in order:

- **boolean**: a boolean column, or text whose values are all `true`/`false` (any case);
- **datetime**: a datetime column, or text whose values parse as dates in the format pandas
  guesses from them (at least `DATE_PARSED_SHARE` of them: the rest is counted as unparsed,
  which validate refuses);
- **categorical**: a categorical column (a Parquet dictionary column: kept as codes plus
  labels, no text object per row), text with repeated values, or integers (whole numbers, gaps
  allowed) with at most `ingest.max_integer_levels` distinct values;
- **text**: text whose values are nearly all distinct (`TEXT_DISTINCT_SHARE`), an ID or free
  text, which cannot be a feature: validate refuses it unless `ingest.columns` drops it;
- **numeric**: any other number.

Each column is then converted to its role's type (booleans as pandas' nullable `boolean`, dates
as `datetime64`, numbers from text with `to_numeric`), so table.parquet holds typed columns and
the model's MLflow signature says what a caller sends. A team's own step that changes the
columns describes its table again with `describe_columns`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from difflib import get_close_matches
from typing import TYPE_CHECKING

from mlrig.errors import ParamsError
from mlrig.experiments.params import TaskKind
from mlrig.experiments.tables import ColumnInfo, Role, ValueCount

if TYPE_CHECKING:
    import pandas as pd

    from steps.ingest.params import IngestParams

#: text with at least this share of distinct values (among those present) is an ID or free text
TEXT_DISTINCT_SHARE = 0.9
#: text is a date column when at least this share of its values parse as dates
DATE_PARSED_SHARE = 0.9
#: the values a format is guessed from (the most common guess wins)
DATE_GUESS_SAMPLE = 20
#: categorical columns list this many of their most frequent values in meta.json
TOP_VALUES = 10
#: the unparsed values meta.json quotes as examples
UNPARSED_EXAMPLES = 3
BOOLEAN_TEXT = {"true": True, "false": False}
#: what a column `ingest.columns` declares boolean may also hold
DECLARED_BOOLEAN_TEXT = BOOLEAN_TEXT | {
    "yes": True,
    "no": False,
    "y": True,
    "n": False,
    "t": True,
    "f": False,
    "1": True,
    "0": False,
}


def is_text(values: pd.Series) -> bool:
    from pandas.api import types

    return types.is_object_dtype(values) or types.is_string_dtype(values)


def is_integral(values: pd.Series) -> bool:
    """Whole numbers (an integer column, or floats without fractions: integers with gaps)."""
    from pandas.api import types

    if types.is_bool_dtype(values) or not types.is_numeric_dtype(values):
        return False
    present = values.dropna()
    return types.is_integer_dtype(values) or bool((present == present.round()).all())


def words_of(values: pd.Series) -> pd.Series:
    """The values as trimmed lower-case text (missing ones stay missing), column at a time."""
    return values.astype("str").str.strip().str.lower().where(values.notna())


def holds_date_objects(values: pd.Series) -> bool:
    """Python dates in an object column (what a Parquet date column reads as)."""
    present = values.dropna()
    return (
        values.dtype == object
        and not present.empty
        and bool(present.map(lambda value: isinstance(value, dt.date)).all())
    )


def guess_date_format(values: pd.Series) -> str | None:
    """The date format pandas guesses most often for the first values, if it names a month."""
    from pandas.tseries.api import guess_datetime_format

    sample = values.dropna().astype(str).drop_duplicates().head(DATE_GUESS_SAMPLE)
    guesses = Counter(guess_datetime_format(value) for value in sample.str.strip())
    guesses.pop(None, None)
    formats = [fmt for fmt, _ in guesses.most_common() if "%m" in fmt or "%b" in fmt.lower()]
    return formats[0] if formats else None


def parse_dates(values: pd.Series) -> pd.Series:
    """Dates from text (in the guessed format) or date objects; what does not parse is NaT.

    Time zones are converted to UTC and dropped: MLflow's signatures take naive datetimes.
    """
    import pandas as pd
    from pandas.api import types

    if types.is_datetime64_any_dtype(values):
        parsed = values
    elif holds_date_objects(values):
        parsed = pd.to_datetime(values, errors="coerce", utc=True)
    else:
        fmt = guess_date_format(values)
        text = values.astype("str").where(values.notna())
        parsed = pd.to_datetime(text, format=fmt or "mixed", errors="coerce", utc=True)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def infer_role(values: pd.Series, max_integer_levels: int) -> tuple[Role, str]:
    """A column's role from its values, and why (see the module's rules)."""
    import pandas as pd
    from pandas.api import types

    if types.is_bool_dtype(values):
        return "boolean", "true/false values"
    if types.is_datetime64_any_dtype(values):
        return "datetime", "datetime values"
    if isinstance(values.dtype, pd.CategoricalDtype):
        return "categorical", f"a categorical column with {values.nunique()} distinct values"
    # counting distinct values hashes the whole column: only where a rule needs it
    if types.is_numeric_dtype(values):
        if is_integral(values) and 0 < (distinct := values.nunique()) <= max_integer_levels:
            return "categorical", (
                f"{distinct} distinct whole numbers "
                f"(at most ingest.max_integer_levels = {max_integer_levels})"
            )
        return "numeric", "numbers"
    present = values.dropna()
    distinct = int(present.nunique())
    if present.empty:
        return "categorical", "no values"
    if words_of(present).isin(list(BOOLEAN_TEXT)).all():
        return "boolean", "true/false text"
    if (fmt := guess_date_format(present)) is not None or holds_date_objects(present):
        parsed = int(parse_dates(present).notna().sum())
        if parsed >= DATE_PARSED_SHARE * len(present):
            return "datetime", f"dates ({fmt})" if fmt else "dates"
    if distinct > 1 and distinct >= TEXT_DISTINCT_SHARE * len(present):
        return "text", (
            f"{distinct} distinct values in {len(present)} rows: an ID or free text, which "
            "cannot be a feature"
        )
    return "categorical", f"text with {distinct} distinct values"


def convert(values: pd.Series, role: Role) -> pd.Series:
    """The column in its role's type; a value that does not convert becomes missing."""
    import pandas as pd
    from pandas.api import types

    numbers = types.is_numeric_dtype(values) and not types.is_bool_dtype(values)
    if role == "numeric":
        if types.is_bool_dtype(values):
            return values.astype("float64")
        if numbers:
            return values
        return pd.to_numeric(values.astype("str").where(values.notna()), errors="coerce")
    if role == "boolean":
        if types.is_bool_dtype(values):
            return values.astype("boolean")
        if numbers:
            return values.map({1: True, 0: False}).astype("boolean")
        return words_of(values).map(DECLARED_BOOLEAN_TEXT).astype("boolean")
    if role == "datetime":
        return parse_dates(values)
    if role == "categorical" and isinstance(values.dtype, pd.CategoricalDtype):
        # kept as codes plus labels: a text object per row would cost ~60 bytes each
        return values.cat.rename_categories([str(label) for label in values.cat.categories])
    if role in ("categorical", "text") and not numbers:
        return values.astype("str").where(values.notna())
    return values


def top_values(values: pd.Series) -> list[ValueCount]:
    counts = values.value_counts().head(TOP_VALUES)
    return [ValueCount(value=str(value), count=int(count)) for value, count in counts.items()]


def describe_column(
    values: pd.Series, override: str | None, max_integer_levels: int
) -> tuple[pd.Series, ColumnInfo]:
    """The column in its role's type, and its description.

    Args:
        values: the column as read.
        override: its `ingest.columns` entry, if any (`drop` or a role).
        max_integer_levels: `ingest.max_integer_levels`.
    """
    name = str(values.name)
    if override is None:
        role, reason = infer_role(values, max_integer_levels)
    elif override == "drop":
        role, reason = "dropped", f"ingest.columns.{name} = drop"
    else:
        role, reason = override, f"ingest.columns.{name} = {override}"  # type: ignore[assignment]
    converted = values if role == "dropped" else convert(values, role)
    unparsed = values.notna() & converted.isna()
    return converted, ColumnInfo(
        name=name,
        role=role,
        dtype=str(converted.dtype),
        missing_share=round(float(values.isna().mean()), 6) if len(values) else 0.0,
        distinct=int(converted.nunique()),
        reason=reason,
        top_values=top_values(converted) if role == "categorical" else [],
        unparsed=int(unparsed.sum()),
        unparsed_examples=[str(value) for value in values[unparsed].unique()[:UNPARSED_EXAMPLES]],
    )


def check_overrides(columns: list[str], target: str, params: IngestParams) -> None:
    """Refuse an `ingest.columns` entry for a column the table lacks, or for its target.

    Raises:
        ParamsError: naming the entry, with a did-you-mean and the table's columns.
    """
    problems = []
    for name in params.columns:
        if name == target:
            problems.append(
                f"ingest.columns.{name}: {name!r} is the target (ingest.target); its type "
                "comes from the task (ingest.task)"
            )
        elif name not in columns:
            close = get_close_matches(name, columns, n=1, cutoff=0.6)
            guess = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"ingest.columns.{name}: {params.source} has no column {name!r}{guess}")
    if problems:
        shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
        raise ParamsError(
            "\n".join(problems) + f"\nIts columns are: {shown}. Fix ingest.columns in params.yaml."
        )


def describe_columns(
    table: pd.DataFrame, target: str, params: IngestParams
) -> tuple[pd.DataFrame, list[ColumnInfo]]:
    """Every column but the target typed by its role, dropped ones left out, and each described.

    Returns:
        The typed table (the target as it was) and the descriptions of the features' columns,
        dropped ones included, in the table's order.

    Raises:
        ParamsError: `ingest.columns` names a column the table lacks, or the target.
    """
    check_overrides(list(table.columns), target, params)
    typed: dict[str, pd.Series] = {}
    described: list[ColumnInfo] = []
    for name in table.columns:
        if name == target:
            typed[name] = table[name]
            continue
        converted, info = describe_column(
            table[name], params.columns.get(name), params.max_integer_levels
        )
        described.append(info)
        if info.role != "dropped":
            typed[name] = converted
    import pandas as pd

    return pd.DataFrame(typed, index=table.index), described


def infer_task(target: pd.Series, max_class_levels: int) -> tuple[TaskKind, str]:
    """Classification for labels (text, booleans, few whole numbers), regression otherwise;
    and why, in words a run summary can show."""
    from pandas.api import types

    name = str(target.name)
    if types.is_bool_dtype(target):
        return "classification", f"target {name!r} holds true/false values"
    if not types.is_numeric_dtype(target):
        return "classification", f"target {name!r} holds text ({target.nunique()} labels)"
    if not is_integral(target):
        return "regression", f"target {name!r} holds numbers with fractions"
    levels = int(target.nunique())
    if levels <= max_class_levels:
        return "classification", (
            f"target {name!r} holds {levels} distinct whole numbers, at most "
            f"ingest.max_class_levels = {max_class_levels}"
        )
    return "regression", (
        f"target {name!r} holds {levels} distinct whole numbers, more than "
        f"ingest.max_class_levels = {max_class_levels} (ingest.task: classification makes "
        "them classes)"
    )


def describe_target(target: pd.Series, task: TaskKind, reason: str) -> ColumnInfo:
    """The target's description: its classes are categories, a regression's values numbers."""
    present = target.dropna()
    return ColumnInfo(
        name=str(target.name),
        role="categorical" if task == "classification" else "numeric",
        dtype=str(target.dtype),
        missing_share=round(float(target.isna().mean()), 6) if len(target) else 0.0,
        distinct=int(present.nunique()),
        reason=f"the target: {reason}",
        top_values=top_values(target) if task == "classification" else [],
    )
