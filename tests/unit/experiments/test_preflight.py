"""`mlrig run`'s preflight (mlrig.experiments.preflight.preflight): each step's own check, found by
name.

The repository's steps take part with steps/<name>/preflight.py (ingest, validate, split); the
library imports none of them (import-linter's contract in pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlrig.dvc.dag import pipeline_view
from mlrig.errors import DataError, ParamsError
from mlrig.experiments.params import Params, apply_overrides, read_params_file, validate_params
from mlrig.experiments.preflight import preflight, table_dir_of
from tests.support.project import REPO_ROOT, copy_repository
from tests.support.tables import mixed_table


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
    assert with_check == ["ingest", "split", "train", "validate"]


# --- the checks follow the pipeline ---------------------------------------------------------

MIXED_SOURCE = ("ingest.source=data/customers.csv", "ingest.target=outcome")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository whose data is a customer table with an ID column."""
    root = tmp_path_factory.mktemp("scratch")
    copy_repository(root)
    mixed_table().to_csv(root / "data" / "customers.csv", index=False)
    return root


def params_of(root: Path, *overrides: str) -> Params:
    document = apply_overrides(read_params_file(root / "params.yaml"), list(overrides))
    return validate_params(document, "params.yaml", root)


def with_featurize_step(root: Path) -> None:
    """dvc.yaml with a team's own step between ingest and validate: validate and split read
    its table (outputs/featurize) instead of ingest's."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    stages = pipeline["stages"]
    featurize = {
        "cmd": "python -m steps.featurize --table-dir outputs/ingest --out-dir outputs/featurize",
        "deps": ["steps/featurize", "outputs/ingest"],
        "outs": ["outputs/featurize"],
    }
    pipeline["stages"] = {"ingest": stages.pop("ingest"), "featurize": featurize, **stages}
    for name in ("validate", "split"):
        stage = pipeline["stages"][name]
        stage["cmd"] = stage["cmd"].replace(
            "--table-dir outputs/ingest", "--table-dir outputs/featurize"
        )
        stage["deps"] = [
            "outputs/featurize" if dep == "outputs/ingest" else dep for dep in stage["deps"]
        ]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def test_the_checks_read_the_table_ingest_makes_in_the_default_pipeline(scratch: Path) -> None:
    pipeline = pipeline_view(scratch)

    assert table_dir_of(pipeline, "validate") == "outputs/ingest"
    assert pipeline.producer_of("outputs/ingest") == "ingest"
    with pytest.raises(DataError, match=r"text columns: customer_id \(200 distinct values\)"):
        preflight(params_of(scratch, *MIXED_SOURCE), scratch)


def test_dropping_the_id_lets_the_mixed_table_pass(scratch: Path) -> None:
    dropped = params_of(scratch, *MIXED_SOURCE, "ingest.columns.customer_id=drop")

    assert preflight(dropped, scratch) == []


def test_a_teams_step_before_validate_defers_its_checks_to_the_stage(tmp_path: Path) -> None:
    """Validate reads what the team's featurize step makes, which does not exist before the run:
    the ID column ingest keeps is not refused up front, and the run says where it is checked."""
    copy_repository(tmp_path)
    mixed_table().to_csv(tmp_path / "data" / "customers.csv", index=False)
    with_featurize_step(tmp_path)

    notes = preflight(params_of(tmp_path, *MIXED_SOURCE), tmp_path)

    assert notes == [
        f"{stage} reads outputs/featurize, made by stage featurize, which has not run on this "
        f"data and these params yet: the {stage} stage checks it itself when it runs, before "
        "the stages after it"
        for stage in ("validate", "split")
    ]
    assert table_dir_of(pipeline_view(tmp_path), "split") == "outputs/featurize"
