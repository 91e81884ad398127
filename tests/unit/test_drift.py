"""`mlrig drift`'s library: Evidently's drift preset on tables, and bad new data refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlrig.drift import compare, conform, read_new_data, write_report
from mlrig.errors import DataError
from mlrig.experiments.tables import ColumnInfo, TableMeta
from mlrig.settings import Settings
from mlrig.tracking.registered import ModelLineage
from tests.support.dvc_project import dvc
from tests.support.project import REPO_ROOT

ROWS = 400


def column(name: str, role: str) -> ColumnInfo:
    return ColumnInfo(name=name, role=role, dtype="", missing_share=0.0, distinct=0, reason="")


META = TableMeta(
    dataset="toy",
    source="synthetic",
    target="target",
    task="classification",
    features=["height", "weight", "colour", "size"],
    rows=ROWS,
    classes=["0", "1"],
    columns=[
        column("height", "numeric"),
        column("weight", "numeric"),
        column("colour", "categorical"),
        column("size", "categorical"),
        column("target", "categorical"),
    ],
)


def table(seed: int, height_shift: float = 0.0, red_share: float = 1 / 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    other = (1 - red_share) / 2
    return pd.DataFrame(
        {
            "height": rng.normal(170, 10, ROWS) + height_shift,
            "weight": rng.normal(70, 8, ROWS),
            "colour": rng.choice(["red", "green", "blue"], ROWS, p=[red_share, other, other]),
            "size": rng.integers(0, 4, ROWS),
            "target": rng.integers(0, 2, ROWS),
        }
    )


def test_the_shifted_columns_drift_and_the_others_do_not() -> None:
    reference, shifted = table(seed=1), table(seed=2, height_shift=15, red_share=0.8)

    columns, share, drifted, _ = compare(reference, shifted, META, threshold=0.5)

    by_name = {result.column: result for result in columns}
    assert {name for name, result in by_name.items() if result.drifted} == {"height", "colour"}
    assert set(by_name) == {"height", "weight", "colour", "size", "target"}
    # the test Evidently chose by type, with its p-value
    assert by_name["height"].method.startswith("K-S")
    assert by_name["colour"].method.startswith("chi-square")
    assert by_name["height"].score < by_name["height"].threshold < by_name["weight"].score
    assert share == pytest.approx(2 / 5)
    assert not drifted  # 40% is under drift.threshold 0.5
    assert compare(reference, shifted, META, threshold=0.4)[2]  # and reaches 0.4


def test_the_same_distribution_does_not_drift() -> None:
    columns, share, drifted, _ = compare(table(seed=1), table(seed=3), META, threshold=0.5)

    assert not [result.column for result in columns if result.drifted]
    assert share == 0 and not drifted


def test_a_missing_feature_is_named(tmp_path: Path) -> None:
    data = table(seed=2).drop(columns=["weight"])

    with pytest.raises(DataError, match=r"lacks the column\(s\) weight"):
        conform(data, table(seed=1), META, tmp_path / "new.csv")


def test_a_column_of_another_type_is_named_with_examples(tmp_path: Path) -> None:
    data = table(seed=2)
    data["height"] = data["height"].astype(object)
    data.loc[3, "height"] = "tall"

    with pytest.raises(DataError, match=r"Column 'height' .* 1 value\(s\) .* 'tall'"):
        conform(data, table(seed=1), META, tmp_path / "new.csv")


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "new.parquet"
    broken.write_text("not parquet")

    with pytest.raises(DataError, match="cannot be read as parquet"):
        read_new_data(broken)
    with pytest.raises(DataError, match="does not exist"):
        read_new_data(tmp_path / "absent.csv")
    (tmp_path / "new.json").write_text("{}")
    with pytest.raises(DataError, match=r"neither a \.csv nor a \.parquet"):
        read_new_data(tmp_path / "new.json")


def report_project(root: Path) -> Path:
    """A git + DVC project whose `report` stage has the outputs of this repository's report
    stage (dvc.yaml) and writes the files the report step writes; its .dvcignore too."""
    outs = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["report"]["outs"]
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    shutil.copy(REPO_ROOT / ".dvcignore", root / ".dvcignore")
    (root / "inputs.txt").write_text("the upstream outputs\n")
    written = ("report.md", "report.html", "figures/metrics.png")
    stage = {
        "cmd": "mkdir -p reports/figures && "
        + " && ".join(f"cp inputs.txt reports/{name}" for name in written),
        "deps": ["inputs.txt"],
        "outs": outs,
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": stage}}))
    dvc(root, "repro", "-q")
    return root


def drift_report(root: Path) -> Path:
    """A real Evidently report written where `mlrig drift` writes it."""
    lineage = ModelLineage(
        name="mlrig-toy",
        version="3",
        run_id="0" * 32,
        model_uri="models:/mlrig-toy/3",
        experiment="toy",
        family="linear",
        data_md5=None,
        commit=None,
        image=None,
    )
    *_, evaluation = compare(table(seed=1), table(seed=2, height_shift=15), META, 0.5)
    checked = datetime(2026, 12, 7, 17, 46, 9, tzinfo=UTC)
    return write_report(Settings(project_dir=root), lineage, evaluation, checked)


def test_a_drift_report_in_reports_is_no_change_of_the_report_stage(tmp_path: Path) -> None:
    """reports/drift/ is beside the report stage's outputs, not in them: `dvc status` stays
    clean, and neither a re-run of the stage nor a checkout deletes the report."""
    root = report_project(tmp_path / "project")

    report = drift_report(root)

    assert report == root / "reports/drift/mlrig-toy-v3-20261207T174609Z.html"
    assert report.read_text().lstrip().lower().startswith("<!doctype html>")
    assert json.loads(dvc(root, "status", "--json", "report")) == {}
    dvc(root, "repro", "-q", "--force", "report")
    dvc(root, "checkout", "-q", "--force", "report")
    assert report.is_file()
    assert json.loads(dvc(root, "status", "--json", "report")) == {}


def test_a_second_check_in_the_same_second_keeps_the_first_report(tmp_path: Path) -> None:
    root = tmp_path / "project"

    first, second = drift_report(root), drift_report(root)

    assert first.is_file() and second == first.with_name(f"{first.stem}-2.html")
