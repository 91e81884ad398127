"""Ingest: every source kind, task inference, and a named DataError for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlrig.errors import EXIT_BAD_INPUT, DataError
from mlrig.experiments.tables import META_FILE, TABLE_FILE, read_meta
from mlrig.settings import Settings
from steps.ingest.columns import infer_task
from steps.ingest.ingest import ingest, write_table
from steps.ingest.params import IngestParams

MAX_CLASS_LEVELS = IngestParams().max_class_levels

SPECIES = ["setosa", "versicolor", "virginica"]


def flower_table(rows: int = 30) -> pd.DataFrame:
    """A small table with two numeric features and a text class label."""
    generator = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "petal_length": generator.normal(4.0, 1.0, rows).round(2),
            "petal_width": generator.normal(1.2, 0.4, rows).round(2),
            "species": [SPECIES[i % len(SPECIES)] for i in range(rows)],
        }
    )


def ingest_file(path: Path, target: str = "target", task: str = "auto"):
    return ingest(IngestParams(source=str(path), target=target, task=task), path.parent)


def data_error(path: Path, target: str = "target") -> str:
    """Ingest `path`, expecting a DataError; return its message."""
    with pytest.raises(DataError) as caught:
        ingest_file(path, target=target)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


# --- builtin and synthetic sources -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "task", "rows", "features", "classes"),
    [
        ("breast_cancer", "classification", 569, 30, ["0", "1"]),
        ("wine", "classification", 178, 13, ["0", "1", "2"]),
        ("diabetes", "regression", 442, 10, []),
    ],
)
def test_builtin_dataset(
    tmp_path: Path, name: str, task: str, rows: int, features: int, classes: list[str]
) -> None:
    table, meta = ingest(IngestParams(source=f"builtin:{name}"), tmp_path)

    assert table.shape == (rows, features + 1)
    assert meta.dataset == name
    assert meta.source == f"builtin:{name}"
    assert meta.target == "target"
    assert meta.task == task
    assert meta.rows == rows
    assert meta.classes == classes
    assert meta.features == [column for column in table.columns if column != "target"]
    assert len(meta.features) == features


def test_synthetic_source_has_the_requested_rows(tmp_path: Path) -> None:
    table, meta = ingest(IngestParams(source="synthetic:150"), tmp_path)

    assert len(table) == 150
    assert meta.rows == 150
    assert meta.dataset == "synthetic_150"
    assert meta.task == "classification"
    assert meta.classes == ["0", "1"]
    assert meta.features == [f"x{i:02d}" for i in range(15)] + [f"c{i}" for i in range(5)]


def test_synthetic_table_has_mixed_types(tmp_path: Path) -> None:
    table, meta = ingest(IngestParams(source="synthetic:2000"), tmp_path)

    roles = {column.name: column.role for column in meta.columns if column.name != "target"}
    assert list(roles.values()).count("numeric") == 15
    assert [name for name, role in roles.items() if role == "categorical"] == [
        f"c{i}" for i in range(5)
    ]
    assert [table[f"c{i}"].nunique() for i in range(5)] == [3, 5, 8, 12, 20]
    assert set(table["c0"].astype(str)) == {"c0_a", "c0_b", "c0_c"}
    # the categories carry signal: the target's share differs between a column's labels
    spreads = [table.groupby(f"c{i}", observed=True)["target"].mean().agg(np.ptp) for i in range(5)]
    assert max(spreads) > 0.2


def test_synthetic_categories_stay_codes_through_parquet(tmp_path: Path) -> None:
    """No text object per row, in memory or read back: a categorical column holds codes."""
    table, meta = ingest(IngestParams(source="synthetic:500"), tmp_path)
    write_table(table, meta, tmp_path / "out")

    read_back = pd.read_parquet(tmp_path / "out" / TABLE_FILE)
    for name in ("c0", "c4"):
        assert isinstance(table[name].dtype, pd.CategoricalDtype)
        assert isinstance(read_back[name].dtype, pd.CategoricalDtype)
    assert "object" not in {str(dtype) for dtype in read_back.dtypes}
    assert read_meta(tmp_path / "out").column("c2").dtype == "category"


def test_synthetic_row_count_may_use_underscores(tmp_path: Path) -> None:
    table, meta = ingest(IngestParams(source="synthetic:1_000"), tmp_path)

    assert len(table) == 1000
    assert meta.rows == 1000


def test_synthetic_table_follows_the_seed(tmp_path: Path) -> None:
    first, _ = ingest(IngestParams(source="synthetic:50", seed=1), tmp_path)
    again, _ = ingest(IngestParams(source="synthetic:50", seed=1), tmp_path)
    other, _ = ingest(IngestParams(source="synthetic:50", seed=2), tmp_path)

    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["x00"], other["x00"])


@pytest.mark.parametrize("count", ["abc", "1", "0", "-5", "", "1.5", "1e3"])
def test_synthetic_rejects_a_bad_row_count(tmp_path: Path, count: str) -> None:
    with pytest.raises(DataError) as caught:
        ingest(IngestParams(source=f"synthetic:{count}"), tmp_path)

    message = str(caught.value)
    assert f"ingest.source synthetic:{count} " in message
    assert "at least 2" in message


def test_unknown_builtin_names_the_param_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        ingest(IngestParams(source="builtin:iris"), tmp_path)

    message = str(caught.value)
    assert "builtin:iris (ingest.source)" in message
    assert "ingest.source" in message
    assert "builtin:breast_cancer, builtin:wine, builtin:diabetes" in message


# --- file sources ----------------------------------------------------------------------------


def test_csv_with_text_labels_is_classification(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    flower_table().to_csv(tmp_path / "data" / "flowers.csv", index=False)

    # a relative source is resolved against the project folder
    table, meta = ingest(IngestParams(source="data/flowers.csv", target="species"), tmp_path)

    assert meta.dataset == "flowers"
    assert meta.task == "classification"
    assert meta.classes == SPECIES
    assert meta.target == "species"
    assert meta.features == ["petal_length", "petal_width"]
    assert meta.rows == 30
    assert table["species"].tolist()[:4] == ["setosa", "versicolor", "virginica", "setosa"]


def test_parquet_with_text_labels_is_classification(tmp_path: Path) -> None:
    flower_table(24).to_parquet(tmp_path / "flowers.parquet", index=False)

    table, meta = ingest_file(tmp_path / "flowers.parquet", target="species")

    assert meta.dataset == "flowers"
    assert meta.task == "classification"
    assert meta.classes == SPECIES
    assert meta.rows == 24
    assert table["species"].value_counts().to_dict() == {name: 8 for name in SPECIES}


def test_float_target_is_regression(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    pd.DataFrame({"area": [50, 70, 90, 120], "price": [1.5, 2.25, 3.1, 4.75]}).to_csv(
        path, index=False
    )

    _, meta = ingest_file(path, target="price")

    assert meta.task == "regression"
    assert meta.classes == []
    assert meta.features == ["area"]


def test_few_integer_levels_are_classification(tmp_path: Path) -> None:
    path = tmp_path / "grades.csv"
    pd.DataFrame({"score": range(12), "grade": [1, 2, 3] * 4}).to_csv(path, index=False)

    _, meta = ingest_file(path, target="grade")

    assert meta.task == "classification"
    assert meta.classes == ["1", "2", "3"]


def test_explicit_task_overrides_inference(tmp_path: Path) -> None:
    path = tmp_path / "grades.csv"
    pd.DataFrame({"score": range(12), "grade": [1, 2, 3] * 4}).to_csv(path, index=False)

    _, as_regression = ingest_file(path, target="grade", task="regression")
    _, inferred = ingest_file(path, target="grade")

    assert inferred.task == "classification"
    assert as_regression.task == "regression"
    assert as_regression.classes == []


def test_explicit_classification_of_a_float_target(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    pd.DataFrame({"x": range(6), "rating": [0.5, 1.5, 0.5, 1.5, 0.5, 1.5]}).to_csv(
        path, index=False
    )

    _, inferred = ingest_file(path, target="rating")
    _, explicit = ingest_file(path, target="rating", task="classification")

    assert inferred.task == "regression"
    assert explicit.task == "classification"
    assert explicit.classes == ["0.5", "1.5"]


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["cat", "dog", "cat"], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 2, 1, 0], "classification"),
        ([1.0, 2.0, 1.0], "classification"),
        (list(range(MAX_CLASS_LEVELS)), "classification"),
        (list(range(MAX_CLASS_LEVELS + 1)), "regression"),
        ([0.1, 0.7, 2.5], "regression"),
        ([1.0, 2.0, np.nan, 1.5], "regression"),
    ],
)
def test_infer_task(values: list, task: str) -> None:
    assert infer_task(pd.Series(values, name="y"), MAX_CLASS_LEVELS)[0] == task


def test_written_table_reads_back(tmp_path: Path) -> None:
    table, meta = ingest(IngestParams(source="builtin:wine"), tmp_path)
    out_dir = tmp_path / "outputs" / "ingest"

    write_table(table, meta, out_dir)

    assert sorted(path.name for path in out_dir.iterdir()) == [META_FILE, TABLE_FILE]
    pd.testing.assert_frame_equal(pd.read_parquet(out_dir / TABLE_FILE), table)
    assert read_meta(out_dir) == meta


# --- bad inputs: each a DataError naming the file, param or column ---------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"

    message = data_error(path)

    assert f"{path} (ingest.source) does not exist" in message


def test_folder_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "tables.csv"
    path.mkdir()

    message = data_error(path)

    assert f"{path} (ingest.source) is a folder" in message


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.touch()

    message = data_error(path)

    assert f"{path} (ingest.source) is empty" in message


def test_blank_lines_only_csv_has_no_columns(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")

    message = data_error(path)

    assert f"{path} (ingest.source) has no columns" in message


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b,target\n")

    message = data_error(path)

    assert f"{path} (ingest.source) has no rows" in message


def test_garbage_csv_cannot_be_parsed(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)

    message = data_error(path)

    assert f"{path} (ingest.source) cannot be parsed" in message


def test_binary_csv_cannot_be_parsed(tmp_path: Path) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)))

    message = data_error(path)

    assert f"{path} (ingest.source) cannot be parsed" in message
    assert "utf-8" in message


def test_a_latin1_csv_is_named_with_line_column_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "cafes.csv"
    path.write_bytes("name,size,target\nabc,1,0\ncafé,2,1\n".encode("latin-1"))

    message = data_error(path)

    assert f"{path} (ingest.source) cannot be parsed: it is not valid utf-8 text" in message
    assert "at line 3, column 4 (byte e9)" in message
    assert f"iconv -f latin1 -t utf-8 {path} > {tmp_path / 'cafes.utf8.csv'}" in message
    assert "-S ingest.encoding=latin-1" in message


def test_a_declared_encoding_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cafes.csv"
    path.write_bytes("nom,taille,target\nabc,1,0\ncafé,2,1\n".encode("latin-1"))

    table, meta = ingest(IngestParams(source=str(path), encoding="latin-1"), tmp_path)

    assert list(table["nom"]) == ["abc", "café"] and meta.rows == 2


def test_an_unknown_encoding_is_a_params_error() -> None:
    with pytest.raises(ValueError, match="unknown text encoding 'latin-9x'"):
        IngestParams(encoding="latin-9x")


def test_text_named_parquet_cannot_be_parsed(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    path.write_text("a,b,target\n1,2,0\n")

    message = data_error(path)

    assert f"{path} (ingest.source) cannot be parsed" in message
    assert "magic bytes" in message


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text('{"a": [1, 2], "target": [0, 1]}')

    message = data_error(path)

    assert f"{path} (ingest.source) has suffix '.json'" in message
    assert ".csv and .parquet" in message


def test_duplicate_csv_column_names(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("x,b,x,b,c,target\n1,2,3,4,5,0\n")

    message = data_error(path)

    assert f"{path} (ingest.source) has duplicate column names: b, x." in message


def test_missing_target_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("a,b,c\n1,2,3\n")

    message = data_error(path, target="label")

    assert "Target column 'label' (ingest.target)" in message
    assert "Its columns are: a, b, c." in message


def test_missing_target_column_shows_at_most_20_columns(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    columns = [f"c{i}" for i in range(25)]
    pd.DataFrame([range(25)], columns=columns).to_csv(path, index=False)

    message = data_error(path)

    assert f"Its columns are: {', '.join(columns[:20])} ..." in message
    assert "c20" not in message


def test_ragged_csv_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,target\n1,2,3,4\n5,6\n")

    message = data_error(path)

    assert str(path) in message


def test_parse_error_message_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)

    message = data_error(path)

    assert "\n" not in message


# --- the CLI, end to end in a throwaway project ----------------------------------------------


def run_ingest_cli(project: Path, out_dir: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}  # ClearML writes a session file under ~/.clearml
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "steps.ingest", "--out-dir", out_dir],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_table_and_records_a_clearml_session(
    project_settings: Settings, tmp_path: Path
) -> None:
    project = project_settings.root
    (project / "data").mkdir()
    flower_table(30).to_csv(project / "data" / "flowers.csv", index=False)
    (project / "params.yaml").write_text("ingest:\n  source: data/flowers.csv\n  target: species\n")

    result = run_ingest_cli(project, "outputs/ingest", tmp_path / "home")

    assert result.returncode == 0, result.stderr
    assert "ingest: 30 rows, 2 features, classification (flowers)" in result.stdout
    out_dir = project / "outputs" / "ingest"
    assert len(pd.read_parquet(out_dir / TABLE_FILE)) == 30
    meta = json.loads((out_dir / META_FILE).read_text())
    assert meta["classes"] == SPECIES
    assert meta["source"] == "data/flowers.csv"
    sessions = list((project / ".mlrig" / "clearml" / "offline").glob("offline-*.zip"))
    assert len(sessions) == 1
    with zipfile.ZipFile(sessions[0]) as session:
        task = json.loads(session.read("task.json"))
    assert task["name"] == "ingest"
    assert "step:ingest" in task["tags"]
    assert task["hyperparams"]["params"]["source"]["value"] == "data/flowers.csv"


def test_cli_bad_source_exits_2_with_a_one_line_error(
    project_settings: Settings, tmp_path: Path
) -> None:
    project = project_settings.root
    (project / "params.yaml").write_text("ingest:\n  source: data/missing.csv\n")

    result = run_ingest_cli(project, "outputs/ingest", tmp_path / "home")

    assert result.returncode == 2
    assert result.stderr.startswith("error: Data file ")
    assert str(project / "data" / "missing.csv") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "outputs").exists()
