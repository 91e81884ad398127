"""A registered model version and the lineage its run recorded: what `mlrig drift` and
`mlrig reproduce` start from. Reading only: nothing here changes the registry.

The train step's MLflow run carries the lineage as tags (`mlrig.lineage`, `step_run`): the git
commit it ran at, the MD5 of the training split's file, the step image it ran in; register gives
the model version the run's id and the experiment's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlrig.errors import EXIT_FAILED, MlrigError
from mlrig.experiments.results import read_champion
from mlrig.settings import Settings
from mlrig.tracking.recorded import CHAMPION_ALIAS, REGISTER_DIR
from mlrig.tracking.step_run import (
    TAG_DATA_MD5,
    TAG_EXPERIMENT,
    TAG_GIT_COMMIT,
    TAG_IMAGE,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

#: the split as dvc.yaml's split stage writes it: the folder and its files
SPLIT_DIR = "outputs/split"
TRAIN_SPLIT_FILE = "train.parquet"
TEST_SPLIT_FILE = "test.parquet"
SPLIT_META_FILE = "meta.json"
#: `models:/<name>/<version>` or `models:/<name>@<alias>`
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


@dataclass(frozen=True)
class ModelLineage:
    """A registered model version and the links its training run recorded (None: missing)."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    experiment: str | None
    family: str | None
    data_md5: str | None
    commit: str | None
    image: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: the image evaluate ran in, tagged on the run it resumed (`mlrig.image.evaluate`)
    evaluate_image: str | None = None

    @property
    def label(self) -> str:
        """`mlrig-breast_cancer version 3`."""
        return f"{self.name} version {self.version}"

    @property
    def split_train_path(self) -> str:
        return f"{SPLIT_DIR}/{TRAIN_SPLIT_FILE}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`(name, version, alias)` of `models:/<name>/<version>` or `models:/<name>@<alias>`.

    Raises:
        MlrigError: it is neither form.
    """
    match = MODEL_URI.fullmatch(uri.strip())
    if not match:
        raise MlrigError(
            f"{uri!r} names no registered model version: write models:/<name>/<version> "
            f"(e.g. models:/mlrig-breast_cancer/3) or models:/<name>@{CHAMPION_ALIAS}."
        )
    return match["name"], match["version"], match["alias"]


def champion_uri(settings: Settings, name: str | None) -> str:
    """`models:/<name>@champion`: of `name`, else of the model register last decided about.

    Raises:
        MlrigError: no name was given and the project has no register output to take it from.
    """
    if name is None:
        champion = read_champion(settings.root / REGISTER_DIR)
        if champion is None:
            raise MlrigError(
                f"No registered model named and {REGISTER_DIR}/champion.json is missing: pass "
                "--model <registered model name>, or run the pipeline first (mlrig run)."
            )
        name = champion.registered_model
    return f"models:/{name}@{CHAMPION_ALIAS}"


def model_lineage(settings: Settings, uri: str) -> ModelLineage:
    """The version a model URI names, with its run's lineage, params and metrics.

    Raises:
        MlrigError: the URI is malformed (exit 2), or the store has no such version or run, or
            does not answer (exit 1).
    """
    from mlflow import MlflowClient

    name, version, alias = parse_model_uri(uri)
    client = MlflowClient(settings.tracking_uri)
    model_version = fetch_version(client, name, version, alias, settings)
    run = fetch_run(client, model_version.run_id, settings)
    tags = run.data.tags
    return ModelLineage(
        name=name,
        version=str(model_version.version),
        run_id=model_version.run_id,
        model_uri=f"models:/{name}/{model_version.version}",
        experiment=tags.get(TAG_EXPERIMENT) or model_version.tags.get(TAG_EXPERIMENT),
        family=run.data.params.get("family"),
        data_md5=tags.get(TAG_DATA_MD5) or model_version.tags.get(TAG_DATA_MD5),
        commit=tags.get(TAG_GIT_COMMIT),
        image=tags.get(TAG_IMAGE),
        evaluate_image=tags.get(f"{TAG_IMAGE}.evaluate"),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )


def fetch_version(
    client: MlflowClient, name: str, version: str | None, alias: str | None, settings: Settings
) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    what = f"version {version}" if version else f"alias @{alias}"
    try:
        if version:
            return client.get_model_version(name, version)
        return client.get_model_version_by_alias(name, alias or CHAMPION_ALIAS)
    except MlflowException as error:
        raise MlrigError(
            f"The model registry at {settings.tracking_uri} has no {what} of {name!r} "
            f"({str(error).splitlines()[0]}). List its versions in the MLflow UI, or check "
            "MLFLOW_TRACKING_URI.",
            exit_code=EXIT_FAILED,
        ) from None
    except OSError as error:  # requests' network errors
        raise MlrigError(
            f"MLflow at {settings.tracking_uri} did not answer ({error}); check it (mlrig doctor).",
            exit_code=EXIT_FAILED,
        ) from None


def fetch_run(client: MlflowClient, run_id: str, settings: Settings) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except (MlflowException, OSError) as error:
        raise MlrigError(
            f"The run {run_id} of the model version is not in MLflow at {settings.tracking_uri} "
            f"({str(error).splitlines()[0]}): its lineage is lost.",
            exit_code=EXIT_FAILED,
        ) from None
