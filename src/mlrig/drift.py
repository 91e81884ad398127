"""`mlrig drift`: new data against the champion's training split, with Evidently's data drift
preset.

The reference is the very file the champion was trained on: its run's `mlrig.data.md5` tag names
the training split's MD5, and the DVC data version holding it (`mlrig.dvc.versions`) gives that
file and its meta.json back. Each feature column (and the target, when the new data has it) is
tested with the method Evidently picks for its type and size; the share of drifted columns is
logged to MLflow and the data counts as drifted when it reaches `drift.threshold`. Evidently's
HTML report goes to reports/drift/, beside the main report, which lists the champion's latest
checks (`mlrig.tracking.drift_checks` reads them back).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from mlrig.dvc.versions import fetch_version_file, find_data_version
from mlrig.errors import EXIT_FAILED, DataError, MlrigError
from mlrig.experiments.params import PARAMS_FILE, DriftParams, load_section
from mlrig.experiments.tables import TableMeta
from mlrig.settings import Settings
from mlrig.tracking.drift_checks import (
    DRIFT_REPORTS_DIR,
    METRIC_DRIFTED_COLUMNS,
    METRIC_SHARE,
    PARAM_THRESHOLD,
    TAG_CHECKED,
    TAG_DATA,
    TAG_DRIFTED,
    TAG_MODEL,
    TAG_MODEL_VERSION,
    TAG_REPORT,
    drift_experiment_name,
)
from mlrig.tracking.registered import (
    SPLIT_DIR,
    SPLIT_META_FILE,
    ModelLineage,
    model_lineage,
)

if TYPE_CHECKING:
    import pandas as pd

#: the latest check, as tags of the model version it tested (with TAG_DRIFTED and TAG_CHECKED)
TAG_DRIFT_SHARE = "mlrig.drift.share"
TAG_DRIFT_RUN = "mlrig.drift.run_id"
#: a report's name: `<model>-v<version>-<when, UTC>.html`, one per check
REPORT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
VALUE_DRIFT_METRIC = "evidently:metric_v2:ValueDrift"
DRIFTED_COUNT_METRIC = "evidently:metric_v2:DriftedColumnsCount"
FAILED = "FAIL"
READABLE_SUFFIXES = (".csv", ".parquet")


class ColumnDrift(BaseModel):
    """One column's test: the method Evidently chose, its score and whether it drifted."""

    column: str
    method: str  # e.g. `K-S p_value`, `chi-square p_value`, `Wasserstein distance (normed)`
    score: float  # a p-value (drifted below the threshold) or a distance (drifted above it)
    threshold: float
    drifted: bool


class DriftResult(BaseModel):
    """What `mlrig drift` found: per column, the share drifted, and where it was recorded."""

    model: str  # `<name> version <n>`
    reference: str  # the training split, as found: file, MD5 and data version
    data: str
    reference_rows: int
    rows: int
    columns: list[ColumnDrift]
    share: float
    threshold: float
    drifted: bool  # the share reached the threshold
    report: str  # the HTML report, relative to the project's root
    checked: str  # when, UTC, ISO 8601 to the second
    mlflow_run_id: str | None = None


def drift_params(settings: Settings) -> DriftParams:
    return load_section(settings.root / PARAMS_FILE, "drift", DriftParams)


def allow_pandas_31() -> None:
    """Let Evidently 0.7 import under pandas 3.1, which removed `infer_dtype_from_object`.

    Evidently imports it at module level for a legacy column-type test that `mlrig drift` does
    not run; the drift tests never call it. Without the name, `import evidently` fails.
    """
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):

        def removed(*_: Any, **__: Any) -> Any:
            raise NotImplementedError("infer_dtype_from_object was removed in pandas 3.1")

        common.infer_dtype_from_object = removed  # type: ignore[attr-defined]


def tested_columns(meta: TableMeta, data: pd.DataFrame) -> list[str]:
    """The model's features, and the target when the new data has it (labelled data)."""
    return [*meta.features, *([meta.target] if meta.target in data.columns else [])]


def data_definition(meta: TableMeta, columns: list[str]) -> Any:
    """Evidently's column types from the roles ingest gave the columns (meta.json)."""
    from evidently import DataDefinition

    def of(*roles: str) -> list[str]:
        return [name for name in columns if meta.role_of(name) in roles]

    target_categorical = meta.task == "classification"
    numeric = [name for name in of("numeric") if name != meta.target or not target_categorical]
    categorical = [name for name in of("categorical", "boolean") if name != meta.target]
    if meta.target in columns and target_categorical:
        categorical.append(meta.target)
    return DataDefinition(
        numerical_columns=numeric,
        categorical_columns=categorical,
        datetime_columns=of("datetime"),
    )


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, meta: TableMeta, threshold: float
) -> tuple[list[ColumnDrift], float, bool, Any]:
    """Evidently's data drift preset on the tested columns of both tables.

    Returns:
        `(columns, share, drifted, evaluation)`: each column's test, the share of drifted
        columns, whether it reached `threshold`, and Evidently's evaluation (its HTML).
    """
    allow_pandas_31()
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = tested_columns(meta, current)
    definition = data_definition(meta, columns)
    datasets = [
        Dataset.from_pandas(table[columns].copy(), data_definition=definition)
        for table in (current, reference)
    ]
    report = Report([DataDriftPreset(columns=columns, drift_share=threshold)], include_tests=True)
    evaluation = report.run(*datasets)
    tested, share, drifted = read_evaluation(evaluation.dict())
    return tested, share, drifted, evaluation


def read_evaluation(result: dict[str, Any]) -> tuple[list[ColumnDrift], float, bool]:
    """Each column's test, the drifted share and its verdict, from Evidently's result."""
    failed = {
        test["metric_config"]["metric_id"] for test in result["tests"] if test["status"] == FAILED
    }
    columns, share, drifted = [], 0.0, False
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"] == VALUE_DRIFT_METRIC:
            columns.append(
                ColumnDrift(
                    column=config["column"],
                    method=config["method"],
                    score=float(metric["value"]),
                    threshold=float(config["threshold"]),
                    drifted=metric["id"] in failed,
                )
            )
        elif config["type"] == DRIFTED_COUNT_METRIC:
            share, drifted = float(metric["value"]["share"]), metric["id"] in failed
    return columns, share, drifted


def read_new_data(path: Path) -> pd.DataFrame:
    """The new data: a CSV or Parquet file.

    Raises:
        DataError: it is missing, of another format, or cannot be parsed.
    """
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path} does not exist: pass the new data as a CSV or Parquet file.")
    if path.suffix.lower() not in READABLE_SUFFIXES:
        raise DataError(
            f"{path} is neither a .csv nor a .parquet file: mlrig drift reads those two."
        )
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path} cannot be read as {path.suffix[1:]}: {first}.") from None


def conform(
    data: pd.DataFrame, reference: pd.DataFrame, meta: TableMeta, path: Path | str
) -> pd.DataFrame:
    """The new data's tested columns in the types of the training split.

    Raises:
        DataError: a feature is missing, or a column's values are not of its role's type.
    """
    missing = [name for name in meta.features if name not in data.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} that the champion takes as "
            f"features ({len(meta.features)}: {', '.join(meta.features)}). Add them; a column "
            "the model does not take may stay."
        )
    conformed = data.copy()
    for name in tested_columns(meta, data):
        conformed[name] = conform_column(data[name], reference[name], meta, path)
    return conformed


def conform_column(
    values: pd.Series, reference: pd.Series, meta: TableMeta, path: Path | str
) -> pd.Series:
    """One column in its role's type: numbers for numeric, text for categorical/boolean."""
    import pandas as pd

    role = meta.role_of(str(values.name))
    if role == "datetime":
        parsed = pd.to_datetime(values, errors="coerce")
    elif role == "numeric" and not (values.name == meta.target and meta.task == "classification"):
        parsed = pd.to_numeric(values, errors="coerce")
    else:  # categories compare by their text: 1 and "1" are one class
        return values.astype("string").where(values.notna())
    unparsed = values[parsed.isna() & values.notna()]
    if len(unparsed):
        examples = ", ".join(repr(value) for value in unparsed.astype(str).unique()[:3])
        raise DataError(
            f"Column {values.name!r} of {path} holds {len(unparsed)} value(s) that are not "
            f"{role} as in the champion's training data ({reference.dtype}), e.g. {examples}. "
            "Fix or drop those rows."
        )
    return parsed


def training_split(
    lineage: ModelLineage, settings: Settings, folder: Path
) -> tuple[Path, Path, str]:
    """The champion's training split file and its meta.json, copied to `folder`.

    Returns:
        `(train file, meta.json, description)`.

    Raises:
        MlrigError: the lineage names no training data, or no DVC data version holds it.
    """
    if not lineage.data_md5:
        raise MlrigError(
            f"The run {lineage.run_id} of {lineage.label} records no training data (no "
            "mlrig.data.md5 tag): drift needs the split it was trained on.",
            exit_code=EXIT_FAILED,
        )
    version = find_data_version(settings.root, lineage.split_train_path, lineage.data_md5)
    if version is None:
        raise MlrigError(
            f"No DVC data version of {settings.root} holds {lineage.split_train_path} with the "
            f"MD5 {lineage.data_md5} that {lineage.label} was trained on (neither the "
            "workspace's dvc.lock nor any committed one). Run drift in the checkout that trained "
            "it, or check out and pull the commit whose dvc.lock records it.",
            exit_code=EXIT_FAILED,
        )
    train = fetch_version_file(version, version.path, folder / "train.parquet")
    meta = fetch_version_file(version, f"{SPLIT_DIR}/{SPLIT_META_FILE}", folder / SPLIT_META_FILE)
    return train, meta, f"{version.path} (MD5 {version.md5}, dvc.lock of {version.where})"


def new_data_file(data: str | Path, scratch: Path) -> Path:
    """The new data as a local file: `data` itself, or what an s3:// URL names, fetched into
    `scratch`: a .csv or .parquet object, or else a prefix of the scoring server's request log
    (every line under it, as one table).

    Raises:
        ConfigError: a malformed s3:// URL.
        DataError: S3 refuses it, or the prefix holds no logged request.
    """
    from mlrig.serving.request_log import fetch_s3_object, read_request_log

    text = str(data)
    if not text.startswith("s3://"):
        return Path(data)
    if text.lower().endswith(READABLE_SUFFIXES):
        return fetch_s3_object(text, scratch / Path(text).name)
    path = scratch / "requests.parquet"
    read_request_log(text).to_parquet(path, index=False)
    return path


def check_drift(
    settings: Settings, data: str | Path, model_uri: str, record: bool = True
) -> DriftResult:
    """Compare the new data with the training split of the model version `model_uri` names,
    write the HTML report and, with `record`, log the result to MLflow.

    Args:
        data: a CSV or Parquet file, or an s3:// URL: of such a file, or a prefix of the
            scoring server's request log (MLRIG_SERVE_REQUEST_LOG).
        record: log a drift run and tag the model version (False: only read MLflow, as a
            read-only identity can).

    Raises:
        DataError: the new data cannot be read or lacks a column or a type (exit 2).
        MlrigError: the model version or its training split cannot be found.
    """
    threshold = drift_params(settings).threshold
    with tempfile.TemporaryDirectory(prefix="mlrig-drift-") as scratch:
        data_path = new_data_file(data, Path(scratch))
        new_data = read_new_data(data_path)
        lineage = model_lineage(settings, model_uri)
        reference, meta, described = read_training_split(lineage, settings, Path(scratch))
        current = conform(new_data, reference, meta, data)
        columns, share, drifted, evaluation = compare(reference, current, meta, threshold)
        checked = datetime.now(UTC).replace(microsecond=0)
        report = write_report(settings, lineage, evaluation, checked)
        result = DriftResult(
            model=lineage.label,
            reference=described,
            data=str(data),
            reference_rows=len(reference),
            rows=len(current),
            columns=columns,
            share=share,
            threshold=threshold,
            drifted=drifted,
            report=report.relative_to(settings.root).as_posix(),
            checked=checked.isoformat(),
        )
        if record:
            result.mlflow_run_id = log_drift(settings, lineage, result, data_path, report)
    return result


def read_training_split(
    lineage: ModelLineage, settings: Settings, scratch: Path
) -> tuple[pd.DataFrame, TableMeta, str]:
    """The champion's training split, its meta.json and where it was found."""
    import pandas as pd

    train_path, meta_path, described = training_split(lineage, settings, scratch)
    reference = pd.read_parquet(train_path)
    return reference, TableMeta.model_validate_json(meta_path.read_text()), described


def report_path(settings: Settings, lineage: ModelLineage, checked: datetime) -> Path:
    """`reports/drift/<model>-v<version>-<when>.html`: one file per check, an earlier one kept
    (two checks in one second get `-2`, `-3`...)."""
    folder = settings.root / DRIFT_REPORTS_DIR
    stem = f"{lineage.name}-v{lineage.version}-{checked.strftime(REPORT_TIME_FORMAT)}"
    path, count = folder / f"{stem}.html", 1
    while path.exists():
        count += 1
        path = folder / f"{stem}-{count}.html"
    return path


def write_report(
    settings: Settings, lineage: ModelLineage, evaluation: Any, checked: datetime
) -> Path:
    """Evidently's HTML report in reports/drift/, named by the model version and the time.

    reports/ is the folder of the main report, which links it; dvc.yaml lists the report
    stage's outputs file by file, so DVC neither takes this file for a change of that stage
    nor deletes it when the stage runs again.
    """
    path = report_path(settings, lineage, checked)
    path.parent.mkdir(parents=True, exist_ok=True)
    evaluation.save_html(str(path))
    return path


def log_drift(
    settings: Settings, lineage: ModelLineage, result: DriftResult, data: Path, report: Path
) -> str:
    """A run in the `<experiment>-drift` experiment (share, columns, verdict, time, the HTML
    and the per column results), and the latest share as tags of the model version.

    Returns:
        The run's id.
    """
    from mlflow import MlflowClient

    from mlrig.lineage import file_md5

    client = MlflowClient(settings.tracking_uri)
    experiment_id = drift_experiment(client, settings)
    drifted = json.dumps(result.drifted)
    run = client.create_run(
        experiment_id,
        run_name=f"drift {lineage.label}",
        tags={
            TAG_MODEL: lineage.name,
            TAG_MODEL_VERSION: lineage.version,
            TAG_DATA: result.data if "://" in result.data else data.name,
            "mlrig.drift.data_md5": file_md5(data),
            TAG_DRIFTED: drifted,
            TAG_CHECKED: result.checked,
            TAG_REPORT: result.report,
        },
    )
    run_id = run.info.run_id
    client.log_param(run_id, PARAM_THRESHOLD, result.threshold)
    client.log_metric(run_id, METRIC_SHARE, result.share)
    client.log_metric(
        run_id, METRIC_DRIFTED_COLUMNS, sum(column.drifted for column in result.columns)
    )
    client.log_text(run_id, result.model_dump_json(indent=2), "drift.json")
    client.log_artifact(run_id, str(report))
    client.set_terminated(run_id)
    tags = {
        TAG_DRIFT_SHARE: f"{result.share:.4f}",
        TAG_DRIFTED: drifted,
        TAG_DRIFT_RUN: run_id,
        TAG_CHECKED: result.checked,
    }
    for key, value in tags.items():
        client.set_model_version_tag(lineage.name, lineage.version, key, value)
    return run_id


def drift_experiment(client: Any, settings: Settings) -> str:
    """The drift checks' experiment; a local store keeps its artifacts in the project's."""
    name = drift_experiment_name(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = settings.artifact_root.as_uri() if settings.uses_local_mlflow else None
    return str(client.create_experiment(name, artifact_location=location))
