"""What ingest takes: the schema of its section of params.yaml, and where a file source may be.

`mlrig run` checks the section against `SECTION` before any stage runs, so an unknown key or
a wrong type is named up front.
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from mlrig.errors import DataError
from mlrig.experiments.params import Section

BUILTIN_DATASETS = ("breast_cancer", "wine", "diabetes")
#: The folder the ingest stage depends on in dvc.yaml: a file source must live under it.
DATA_DIR = "data"
#: sources whose table mlrig makes (builtin:<name>, synthetic:<rows>), and their target column
GENERATED_SOURCES = ("builtin", "synthetic")
GENERATED_TARGET = "target"
#: what `ingest.columns` may make of a column: drop it, or give it a role
COLUMN_OVERRIDES = ("drop", "numeric", "boolean", "categorical", "datetime")


def _known_override(value: str) -> str:
    from difflib import get_close_matches

    if value in COLUMN_OVERRIDES:
        return value
    close = get_close_matches(str(value), COLUMN_OVERRIDES, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]}? " if close else ""
    roles = ", ".join(COLUMN_OVERRIDES)
    raise ValueError(f"{value!r} is no column role; {guess}use one of {roles}")


ColumnOverride = Annotated[str, AfterValidator(_known_override)]


class IngestParams(Section):
    """Where the table comes from and what its target is."""

    source: str = Field(
        "builtin:breast_cancer",
        description="builtin:<name>, synthetic:<rows>, or a CSV/Parquet path",
    )
    target: str = Field("target", description="name of the target column in a file source")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto infers it from the target column (see max_class_levels)"
    )
    max_class_levels: int = Field(
        10,
        ge=2,
        description="task auto: an integer target with more distinct values is a regression",
    )
    max_integer_levels: int = Field(
        10,
        ge=0,
        description="an integer feature with at most this many distinct values is categorical",
    )
    columns: dict[str, ColumnOverride] = Field(
        default_factory=dict,
        description="a column's role instead of the inferred one: drop, numeric, boolean, "
        "categorical or datetime",
    )
    seed: int = Field(42, description="seed of the synthetic generator")
    encoding: str = Field(
        "utf-8", description="text encoding of a CSV source, e.g. latin-1 or cp1252"
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {value!r}; use a name Python knows, e.g. utf-8, "
                "latin-1 or cp1252"
            ) from None
        return value

    @model_validator(mode="after")
    def _target_of_a_generated_source(self) -> IngestParams:
        # a builtin or synthetic table names its target itself: another name would be
        # saved and recorded though the pipeline never reads it
        kind = self.source.partition(":")[0]
        if kind in GENERATED_SOURCES and self.target != GENERATED_TARGET:
            raise ValueError(
                f"ingest.source {self.source} has its target in column {GENERATED_TARGET!r}, "
                f"so ingest.target must be {GENERATED_TARGET!r} (got {self.target!r}); "
                "ingest.target names the target column of a CSV or Parquet source"
            )
        return self


def check_source_tracked(source: str) -> None:
    """Refuse a file source outside `data/`, the folder the ingest stage depends on.

    DVC would not see such a file change (the next run would keep stale results), and a step
    container or pod could not read it. Paths are judged as written, relative to the project.
    Not a validator of `IngestParams`: the step itself reads any path it is given (its tests
    do); a run refuses one in ingest's preflight, before any stage starts.

    Raises:
        DataError: naming the source and the commands that bring it under `data/`.
    """
    kind, _, _ = source.partition(":")
    if kind in GENERATED_SOURCES:
        return
    path = PurePosixPath(source)
    parts = PurePosixPath(posixpath.normpath(source)).parts
    if not path.is_absolute() and len(parts) > 1 and parts[0] == DATA_DIR:
        return
    copy = f"{DATA_DIR}/{path.name or 'table.csv'}"
    raise DataError(
        f"ingest.source {source} is outside the project's {DATA_DIR}/ folder, the one "
        f"dependency DVC watches for the ingest stage: a change to the file would go unseen "
        f"and the next run would keep stale results (and a step container could not read "
        f"it). Bring it in, then run on the copy: `dvc import-url {source} {copy}` (DVC "
        f"records where it came from; `dvc update {copy}.dvc` takes a new version) or "
        f"`cp {source} {DATA_DIR}/`; then mlrig run -S ingest.source={copy}"
    )


SECTION = IngestParams
