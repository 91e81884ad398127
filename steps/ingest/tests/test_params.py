"""Ingest's section of params.yaml (steps/ingest/params.py): a generated source's target, and
a file source only where DVC watches it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig.errors import EXIT_BAD_INPUT, DataError, ParamsError
from mlrig.experiments.params import load_section
from steps.ingest.params import IngestParams, check_source_tracked


def load_ingest(tmp_path: Path, **section: str) -> IngestParams:
    """The ingest section as the step reads it from a params.yaml holding `section`."""
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"ingest": section}))  # JSON is YAML
    return load_section(path, "ingest", IngestParams)


@pytest.mark.parametrize("source", ["builtin:breast_cancer", "synthetic:100"])
def test_a_target_other_than_a_generated_sources_own_is_refused(
    tmp_path: Path, source: str
) -> None:
    with pytest.raises(ParamsError) as caught:
        load_ingest(tmp_path, source=source, target="nope")

    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"ingest.source {source} has its target in column 'target'" in message
    assert "so ingest.target must be 'target' (got 'nope')" in message


def test_a_file_source_takes_any_target(tmp_path: Path) -> None:
    section = load_ingest(tmp_path, source="data/flowers.csv", target="species")

    assert section.target == "species"


@pytest.mark.parametrize(
    ("source", "copy"),
    [
        ("/srv/exports/table.csv", "data/table.csv"),
        ("exports/table.parquet", "data/table.parquet"),
        ("table.csv", "data/table.csv"),
        ("data/../table.csv", "data/table.csv"),
    ],
)
def test_a_file_source_outside_data_is_refused_with_the_commands_that_bring_it_in(
    source: str, copy: str
) -> None:
    with pytest.raises(DataError) as caught:
        check_source_tracked(source)

    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"dvc import-url {source} {copy}" in message
    assert f"cp {source} data/" in message
    assert f"-S ingest.source={copy}" in message


@pytest.mark.parametrize(
    "source", ["data/flowers.csv", "./data/sub/flowers.parquet", "builtin:wine", "synthetic:50"]
)
def test_sources_under_data_and_generated_ones_are_accepted(source: str) -> None:
    check_source_tracked(source)
