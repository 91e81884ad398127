"""Drift checks in a real local MLflow store, logged by `mlrig drift`'s own writer: a registered
model's versions and checks of them, for the tests of the reader and of the report's section."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from mlrig.drift import DriftResult, log_drift
from mlrig.settings import Settings
from mlrig.tracking.drift_checks import DRIFT_REPORTS_DIR
from mlrig.tracking.registered import ModelLineage


def local_store(root: Path) -> Settings:
    """The settings of a project in `root` with its local SQLite MLflow store."""
    settings = Settings(project_dir=root, mlflow_experiment="mlrig", mlflow_tracking_uri=None)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return settings


def registered_versions(settings: Settings, model: str, count: int) -> list[ModelLineage]:
    """`count` versions of `model` in the store, each from a training run of its own."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(
            settings.mlflow_experiment, artifact_location=settings.artifact_root.as_uri()
        )
    )
    client.create_registered_model(model)
    lineages = []
    for _ in range(count):
        run_id = client.create_run(experiment_id).info.run_id
        version = str(client.create_model_version(model, f"runs:/{run_id}/model", run_id).version)
        lineages.append(
            ModelLineage(
                name=model,
                version=version,
                run_id=run_id,
                model_uri=f"models:/{model}/{version}",
                experiment="toy",
                family="linear",
                data_md5=None,
                commit=None,
                image=None,
            )
        )
    return lineages


def record_check(
    settings: Settings, lineage: ModelLineage, share: float, checked: datetime
) -> DriftResult:
    """One check of `lineage` (drift.threshold 0.5) logged as `mlrig drift` logs it, with an
    HTML report in reports/drift/."""
    report = settings.root / DRIFT_REPORTS_DIR / f"{lineage.version}-{checked:%H%M%S}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html>Evidently's report</html>")
    data = settings.root / "new.csv"
    data.write_text("a,b\n1,2\n")
    result = DriftResult(
        model=lineage.label,
        reference="outputs/split/train.parquet",
        data=str(data),
        reference_rows=10,
        rows=1,
        columns=[],
        share=share,
        threshold=0.5,
        drifted=share >= 0.5,
        report=report.relative_to(settings.root).as_posix(),
        checked=checked.isoformat(),
    )
    result.mlflow_run_id = log_drift(settings, lineage, result, data, report)
    return result
