"""`mlrig run`'s preflight (mlrig.experiments.preflight.preflight): each step's own check, found by
name.

The repository's steps take part with steps/<name>/preflight.py (ingest, validate, split); the
library imports none of them (import-linter's contract in pyproject.toml).
"""

from __future__ import annotations

import pytest

from mlrig.errors import DataError, ParamsError
from mlrig.experiments.params import Params, apply_overrides, read_params_file, validate_params
from mlrig.experiments.preflight import preflight
from tests.support.project import REPO_ROOT


def repository_params(*overrides: str) -> Params:
    document = apply_overrides(read_params_file(REPO_ROOT / "params.yaml"), list(overrides))
    return validate_params(document, "params.yaml", REPO_ROOT)


def test_the_repositorys_params_and_data_pass() -> None:
    preflight(repository_params(), REPO_ROOT)


def test_ingests_check_refuses_a_file_source_dvc_does_not_watch() -> None:
    """A file outside data/ is refused before it is read: it need not even exist."""
    with pytest.raises(DataError, match=r"dvc import-url /srv/exports/table.csv data/table.csv"):
        preflight(repository_params("ingest.source=/srv/exports/table.csv"), REPO_ROOT)


def test_validates_check_refuses_a_table_too_small() -> None:
    with pytest.raises(DataError, match="min_rows"):
        preflight(repository_params("validate.min_rows=1000000"), REPO_ROOT)


def test_ingests_check_refuses_a_metric_the_task_lacks() -> None:
    """breast_cancer is a classification: rmse is a regression metric."""
    with pytest.raises(ParamsError, match="rmse"):
        preflight(repository_params("compare.metric=rmse"), REPO_ROOT)


def test_splits_check_runs_on_the_table_ingest_read() -> None:
    with pytest.raises(DataError):
        preflight(repository_params("split.test_size=0.999"), REPO_ROOT)


def test_only_the_steps_with_a_preflight_take_part() -> None:
    with_check = sorted(path.parent.name for path in (REPO_ROOT / "steps").glob("*/preflight.py"))
    assert with_check == ["ingest", "split", "validate"]
