"""Validate: check the ingested table against the expectations in params.

A table that fails any check stops the pipeline here, with every failed check named, and no
report is written (so nothing downstream can run on it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel

from mlrig.errors import DataError, exits_cleanly
from mlrig.experiments.params import load_section
from mlrig.experiments.tables import TABLE_FILE, TableMeta, read_meta, read_parquet
from mlrig.progress import phase
from mlrig.text import counted
from steps.validate.params import ValidateParams

if TYPE_CHECKING:
    import pandas as pd

REPORT_FILE = "report.json"


class Check(BaseModel):
    name: str
    passed: bool
    detail: str


class ValidationReport(BaseModel):
    dataset: str
    rows: int
    features: int
    passed: bool
    checks: list[Check]

    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


def _listed(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (
        f" and {len(names) - limit} more" if len(names) > limit else ""
    )


def check_rows(table: pd.DataFrame, params: ValidateParams) -> Check:
    return Check(
        name="enough rows",
        passed=len(table) >= params.min_rows,
        detail=f"{len(table)} rows (validate.min_rows = {params.min_rows})",
    )


def check_features(meta: TableMeta) -> Check:
    return Check(
        name="features",
        passed=bool(meta.features),
        detail=f"{len(meta.features)} feature columns"
        if meta.features
        else "the table has no feature columns",
    )


def check_text(meta: TableMeta) -> Check:
    """Text that is an ID or free text cannot be a feature: refused unless it is dropped."""
    text = [column for column in meta.columns if column.role == "text"]
    if not text:
        return Check(name="text columns", passed=True, detail="no ID or free-text column")
    named = [f"{column.name} ({column.distinct} distinct values)" for column in text]
    dropped = ", ".join(f"{column.name}: drop" for column in text)
    return Check(
        name="text columns",
        passed=False,
        detail=(
            f"{_listed(named)}: nearly every value distinct, an ID or free text, which cannot "
            f"be a feature; drop it in params.yaml with ingest.columns: {{{dropped}}} "
            f"(or -S ingest.columns.{text[0].name}=drop)"
        ),
    )


def type_fits(values: pd.Series, role: str) -> bool:
    """Whether a column's type in the table is one its role takes."""
    from pandas.api import types

    boolean = types.is_bool_dtype(values)
    if role == "numeric":
        return types.is_numeric_dtype(values) and not boolean
    if role == "boolean":
        return boolean
    if role == "datetime":
        return types.is_datetime64_any_dtype(values)
    return not types.is_datetime64_any_dtype(values)  # categorical: text, numbers, booleans


def check_types(table: pd.DataFrame, meta: TableMeta) -> Check:
    """Each feature is in the table, in a type its role takes (a step that changed the table
    must describe it again: steps.ingest.columns.describe_columns)."""
    absent = [name for name in meta.features if name not in table.columns]
    wrong = [
        f"{name} ({table[name].dtype}, described as {meta.role_of(name)})"
        for name in meta.features
        if name in table.columns and not type_fits(table[name], meta.role_of(name))
    ]
    problems = [f"missing from the table: {_listed(absent)}"] if absent else []
    if wrong:
        problems.append(
            f"not of their role's type: {_listed(wrong)} (describe the table again in the step "
            "that changed it, with steps.ingest.columns.describe_columns)"
        )
    return Check(
        name="feature types",
        passed=not problems,
        detail="; ".join(problems) or "every feature is of its role's type",
    )


def check_parsed(meta: TableMeta) -> Check:
    """Values present in the source that did not parse as their column's role (a date that is
    no date, a declared number or boolean that is none)."""
    unparsed = [
        f"{column.name} ({column.role}): {counted(column.unparsed, 'value')}, e.g. "
        + ", ".join(repr(value) for value in column.unparsed_examples)
        for column in meta.columns
        if column.unparsed and column.name in meta.features
    ]
    return Check(
        name="parsed values",
        passed=not unparsed,
        detail=(
            f"values that do not parse as their column's type: {_listed(unparsed)}; fix them "
            "or empty those cells, or give the column another role with ingest.columns"
            if unparsed
            else "every value parses as its column's type"
        ),
    )


def check_categories(meta: TableMeta, params: ValidateParams) -> Check:
    too_many = [
        f"{column.name} ({column.distinct} values)"
        for column in meta.columns
        if column.role == "categorical"
        and column.name in meta.features
        and column.distinct > params.max_categories
    ]
    return Check(
        name="categories",
        passed=not too_many,
        detail=(
            f"categorical columns with more values than validate.max_categories = "
            f"{params.max_categories}: {_listed(too_many)}; drop them (ingest.columns: "
            "{<column>: drop}) or raise validate.max_categories"
            if too_many
            else f"no categorical column has over {params.max_categories} values"
        ),
    )


def check_missing(table: pd.DataFrame, meta: TableMeta, params: ValidateParams) -> Check:
    present = [name for name in meta.features if name in table.columns]
    fractions = table[present].isna().mean()
    too_sparse = [
        f"{name} ({fraction:.0%})"
        for name, fraction in fractions.items()
        if fraction > params.max_missing_fraction
    ]
    return Check(
        name="missing values",
        passed=not too_sparse,
        detail=(
            f"columns over validate.max_missing_fraction = {params.max_missing_fraction:.0%}: "
            f"{_listed(too_sparse)}"
            if too_sparse
            else f"no column misses more than {params.max_missing_fraction:.0%}"
        ),
    )


def check_finite(table: pd.DataFrame, meta: TableMeta) -> Check:
    """Infinity in a feature or a numeric target: scikit-learn refuses it only at training."""
    import numpy as np
    from pandas.api import types

    columns = [*meta.features, meta.target]
    numeric = [
        name
        for name in columns
        if name in table.columns
        if types.is_numeric_dtype(table[name]) and not types.is_bool_dtype(table[name])
    ]
    counts = {name: int(np.isinf(table[name].to_numpy(dtype=float)).sum()) for name in numeric}
    infinite = [
        f"{'target ' if name == meta.target else ''}{name} ({count} row{'s' if count > 1 else ''})"
        for name, count in counts.items()
        if count
    ]
    return Check(
        name="finite values",
        passed=not infinite,
        detail=(
            f"infinite values (inf or -inf) in {_listed(infinite)}; "
            "replace them with a number or leave the cells empty"
            if infinite
            else "no feature or target value is infinite"
        ),
    )


def check_target(table: pd.DataFrame, meta: TableMeta, params: ValidateParams) -> list[Check]:
    target = table[meta.target]
    missing = int(target.isna().sum())
    checks = [
        Check(
            name="target complete",
            passed=missing == 0,
            detail=f"{missing} rows have no value in target column {meta.target!r}",
        ),
        Check(
            name="target not constant",
            passed=target.nunique() > 1,
            detail=f"target column {meta.target!r} has {target.nunique()} distinct value(s)",
        ),
    ]
    if meta.task == "regression":
        from pandas.api import types

        numeric = types.is_numeric_dtype(target) and not types.is_bool_dtype(target)
        checks.append(
            Check(
                name="numeric target",
                passed=numeric,
                detail=f"regression needs a numeric target; {meta.target!r} is {target.dtype}",
            )
        )
    if meta.task == "classification":
        counts = target.value_counts()
        rare = [
            f"{label!r} ({counted(int(count), 'row')})"
            for label, count in counts.items()
            if count < params.min_rows_per_class
        ]
        checks += [
            Check(
                name="classes",
                passed=2 <= len(counts) <= params.max_classes,
                detail=(
                    f"{len(counts)} classes (need 2 to validate.max_classes = {params.max_classes})"
                ),
            ),
            Check(
                name="rows per class",
                passed=not rare,
                detail=(
                    f"classes below validate.min_rows_per_class = {params.min_rows_per_class}, "
                    f"too rare to split into train and test: {_listed(rare)}"
                    if rare
                    else f"every class has at least {params.min_rows_per_class} rows"
                ),
            ),
        ]
    return checks


def validate_table(
    table: pd.DataFrame, meta: TableMeta, params: ValidateParams
) -> ValidationReport:
    """Run every check on the table.

    Args:
        table: the ingested table.
        meta: what its columns are.
        params: the `validate` section of params.yaml.

    Returns:
        The report; `passed` is False when any check failed.
    """
    checks = [
        check_rows(table, params),
        check_features(meta),
        check_text(meta),
        check_types(table, meta),
        check_parsed(meta),
        check_categories(meta, params),
        check_missing(table, meta, params),
        check_finite(table, meta),
        *check_target(table, meta, params),
    ]
    return ValidationReport(
        dataset=meta.dataset,
        rows=len(table),
        features=len(meta.features),
        passed=all(check.passed for check in checks),
        checks=checks,
    )


def raise_for_failures(report: ValidationReport, source: str) -> None:
    """Raise one `DataError` that lists every failed check.

    Raises:
        DataError: when the report did not pass.
    """
    if report.passed:
        return
    lines = "\n".join(f"  {check.name}: {check.detail}" for check in report.failures())
    raise DataError(
        f"The data from {source} failed validation:\n{lines}\n"
        "Fix the data or the expectations in params.yaml (validate section); nothing was changed."
    )


app = typer.Typer(add_completion=False, help="Check the ingested table against the expectations.")


@app.command()
@exits_cleanly
def main(
    table_dir: Annotated[Path, typer.Option(help="folder with the ingested table.parquet")],
    out_dir: Annotated[Path, typer.Option(help="folder for the validation report.json")],
    params: Annotated[Path, typer.Option(help="params.yaml; reads its `validate` section")] = Path(
        "params.yaml"
    ),
) -> None:
    """Validate the ingested table; exit non-zero, naming each failed check, on bad data."""
    from mlrig.settings import load_settings
    from mlrig.tracking.step_run import tracked_step

    section = load_section(params, "validate", ValidateParams)
    meta = read_meta(table_dir)
    phase(f"reading {table_dir / TABLE_FILE}")
    table = read_parquet(table_dir / TABLE_FILE)
    phase(f"checking {len(table)} rows")
    report = validate_table(table, meta, section)
    raise_for_failures(report, meta.source)
    with tracked_step(load_settings(), "validate", "validate") as run:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / REPORT_FILE).write_text(json.dumps(report.model_dump(), indent=2) + "\n")
        run.log_params(section.model_dump())
        run.log_metrics({"rows": float(report.rows), "checks_passed": float(len(report.checks))})
    typer.echo(f"validate: {len(report.checks)} checks passed on {report.rows} rows")
