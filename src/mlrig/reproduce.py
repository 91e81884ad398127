"""`mlrig reproduce`: train a registered model again from its lineage, and compare.

The model version's training run recorded every link: the git commit (`mlrig.git_commit`), the
training split's MD5 (`mlrig.data.md5`, found again in a DVC data version), the step image
(`mlrig.image`, when it ran in one) and its params. In a scratch git worktree at that commit, the
split of that data version is fetched (DVC cache or remote) and the model's train and evaluate
stages run again, tracked in a throwaway MLflow store inside the worktree: the configured store
and its registry are only read. They run in the step images they ran in when the run recorded
them and the container engine has them (`choose_image`; the containers executor's way,
`mlrig.executors.rerun`), else locally with `dvc repro`, saying why. The new metrics and the new
model's predictions on the test split are compared with the registered ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from mlrig.dvc.commands import dvc_command, dvc_environment
from mlrig.dvc.versions import DataVersion, fetch_version_file, find_data_version
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.images.engine import Engine, find_engine
from mlrig.settings import Settings
from mlrig.tracking.registered import (
    SPLIT_DIR,
    SPLIT_META_FILE,
    TEST_SPLIT_FILE,
    TRAIN_SPLIT_FILE,
    ModelLineage,
    model_lineage,
)
from mlrig.tracking.step_run import TAG_EXPERIMENT, TAG_IMAGE, TAG_STEP

if TYPE_CHECKING:
    from mlflow.entities import Run

#: how far a reproduced metric or prediction may be from the registered one, relative to its
#: size (at least 1): sklearn's families are seeded and exact on one machine; xgboost and
#: lightgbm sum in threads, whose order changes the last bits; a team's own class may be neither
EXACT = 1e-9
TOLERANCES = {"xgboost": 1e-6, "lightgbm": 1e-6, "estimator": 1e-6}
#: the MLflow experiment of the rerun, in the worktree's own SQLite store
RERUN_EXPERIMENT = "mlrig-reproduce"
RERUN_STORE = ".mlrig/reproduce.db"
#: the artifacts and log of the MLflow server a rerun in step images logs through
RERUN_ARTIFACTS = ".mlrig/reproduce-artifacts"
RERUN_SERVER_LOG = ".mlrig/reproduce-mlflow.log"
SERVER_START_SECONDS = 120.0
SERVER_STOP_SECONDS = 10.0
TRAIN_OUTPUTS = "outputs/train"
EVALUATE_OUTPUTS = "outputs/evaluate"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
#: what the rerun must not inherit: the caller's tracking and pipeline settings
INHERITED_SETTINGS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLRIG_PARENT_RUN_ID",
    "MLRIG_PIPELINE_RUN_ID",
    "MLRIG_IMAGE",
    "MLRIG_EXPERIMENT",
    "MLRIG_PROJECT_DIR",
    "CLEARML_API_HOST",
    "CLEARML_TASK_ID",
    "CLEARML_PROC_MASTER_ID",
    "TRAINS_PROC_MASTER_ID",
)

LinkName = Literal["commit", "data", "image", "params", "experiment"]
LinkState = Literal["ok", "missing", "not checked", "differs"]


class Link(BaseModel):
    """One link of the lineage: what the run recorded and what became of it."""

    name: LinkName
    recorded: str | None
    state: LinkState
    note: str = ""


class Difference(BaseModel):
    """A metric or the predictions, registered against reproduced."""

    what: str  # `f1`, or `predictions`
    registered: str
    reproduced: str
    equal: bool


class Reproduction(BaseModel):
    """What `mlrig reproduce` found."""

    model: str
    experiment: str | None
    tolerance: float
    links: list[Link]
    compared: list[Difference] = []
    rerun_tracking: str = "none: no stage ran"
    log: str | None = None  # the rerun's output, kept when it failed
    notice: str | None = None  # why a recorded image was not used

    @property
    def reproduced(self) -> bool:
        """Every link held and everything compared is equal within the tolerance."""
        links_held = all(link.state in ("ok", "not checked") for link in self.links)
        return links_held and bool(self.compared) and all(item.equal for item in self.compared)


def tolerance_of(family: str | None, tolerance: float | None) -> float:
    return tolerance if tolerance is not None else TOLERANCES.get(family or "", EXACT)


def commit_link(root: Path, commit: str | None) -> tuple[Link, str | None]:
    """The recorded commit, and the commit to check out (None: there is none)."""
    if not commit or commit == "unknown":
        return Link(
            name="commit", recorded=commit, state="missing", note="no commit recorded"
        ), None
    base = commit.removesuffix("-dirty")
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{base}^{{commit}}"], cwd=root, capture_output=True
    )
    if known.returncode != 0:
        note = f"{base[:12]} is not in this repository (fetch it, or run in the clone that has it)"
        return Link(name="commit", recorded=commit, state="missing", note=note), None
    if commit.endswith("-dirty"):
        note = "the run had uncommitted changes to tracked files: rerun at the commit without them"
        return Link(name="commit", recorded=commit, state="differs", note=note), base
    return Link(name="commit", recorded=commit, state="ok"), base


def data_link(root: Path, lineage: ModelLineage) -> tuple[Link, DataVersion | None]:
    if not lineage.data_md5:
        link = Link(name="data", recorded=None, state="missing", note="no mlrig.data.md5 tag")
        return link, None
    version = find_data_version(root, lineage.split_train_path, lineage.data_md5)
    if version is None:
        note = (
            f"no DVC data version (the workspace's dvc.lock or a committed one) holds "
            f"{lineage.split_train_path} with this MD5"
        )
        return Link(name="data", recorded=lineage.data_md5, state="missing", note=note), None
    note = f"{lineage.split_train_path} as dvc.lock of {version.where} records it"
    return Link(name="data", recorded=lineage.data_md5, state="ok", note=note), version


@dataclass(frozen=True)
class ImageChoice:
    """Where the stages run again: in the recorded step images (`engine` set), else locally."""

    link: Link
    engine: Engine | None = None
    images: dict[str, str] = field(default_factory=dict)  # step -> its recorded image
    notice: str | None = None  # one line: why a recorded image is not used

    @property
    def in_image(self) -> bool:
        return self.engine is not None


def locally(recorded: str, why: str) -> ImageChoice:
    """The local rerun of stages that ran in an image: the link is not checked, and why."""
    note = f"{why}: the stages ran locally, with this checkout's libraries"
    link = Link(name="image", recorded=recorded, state="not checked", note=note)
    return ImageChoice(link=link, notice=f"The recorded image {recorded} is not used ({note}).")


def choose_image(settings: Settings, lineage: ModelLineage, *, local: bool) -> ImageChoice:
    """Whether train and evaluate run again in the images they ran in: only when both are
    recorded, `--local` was not given, a container engine is here and has the images (or
    pulls them)."""
    if not lineage.image:
        return ImageChoice(
            link=Link(name="image", recorded=None, state="ok", note="none recorded: it ran locally")
        )
    if local:
        return locally(lineage.image, "--local")
    if not lineage.evaluate_image:
        return locally(lineage.image, f"evaluate's image is not recorded ({TAG_IMAGE}.evaluate)")
    try:
        engine = find_engine(settings)
    except ConfigError as error:
        return locally(lineage.image, f"no container engine ({str(error).split('. ')[0]})")
    images = {"train": lineage.image, "evaluate": lineage.evaluate_image}
    for image in dict.fromkeys(images.values()):
        why_not = None if engine.image_exists(image) else engine.pull(image)
        if why_not is not None:
            return locally(lineage.image, f"{image} is not here and was not pulled: {why_not}")
    note = f"train and evaluate ran in their recorded images ({engine.name})"
    link = Link(name="image", recorded=lineage.image, state="ok", note=note)
    return ImageChoice(link=link, engine=engine, images=images)


def experiment_link(lineage: ModelLineage) -> Link:
    if lineage.experiment:
        return Link(name="experiment", recorded=lineage.experiment, state="ok")
    return Link(name="experiment", recorded=None, state="missing", note="no mlrig.experiment tag")


@contextmanager
def scratch_worktree(root: Path, commit: str) -> Iterator[Path]:
    """A detached git worktree of `root` at `commit`, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="mlrig-reproduce-"))
    worktree = folder / "checkout"
    try:
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(worktree), commit],
            cwd=root,
            check=True,
            capture_output=True,
        )
        yield worktree
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(worktree)], cwd=root, capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def place_split(version: DataVersion, worktree: Path) -> None:
    """The data version's split (train, test, meta.json) in the worktree's outputs/split."""
    for name in (TRAIN_SPLIT_FILE, TEST_SPLIT_FILE, SPLIT_META_FILE):
        fetch_version_file(version, f"{SPLIT_DIR}/{name}", worktree / SPLIT_DIR / name)


def rerun_environment(worktree: Path, commit: str) -> dict[str, str]:
    """The stages' environment: the worktree's code first, a throwaway store, offline ClearML."""
    environment = {key: value for key, value in os.environ.items() if key not in INHERITED_SETTINGS}
    python_path = [str(worktree / "src"), str(worktree), environment.get("PYTHONPATH", "")]
    environment.update(
        PYTHONPATH=os.pathsep.join(filter(None, python_path)),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
        MLFLOW_TRACKING_URI=f"sqlite:///{worktree / RERUN_STORE}",
        MLRIG_EXPERIMENT=RERUN_EXPERIMENT,
        MLRIG_PROJECT_DIR=str(worktree),
        MLRIG_GIT_COMMIT=commit,
        CLEARML_OFFLINE_MODE="1",
    )
    return environment


def rerun_stages(worktree: Path, experiment: str, commit: str) -> str | None:
    """`dvc repro` of the experiment's train and evaluate stages in the worktree.

    Returns:
        None when both ran, else the output of the one that failed.
    """
    (worktree / RERUN_STORE).parent.mkdir(parents=True, exist_ok=True)
    environment = rerun_environment(worktree, commit)
    for stage in (f"train@{experiment}", f"evaluate@{experiment}"):
        done = subprocess.run(
            dvc_command(["repro", "--single-item", "--force", stage]),
            cwd=worktree,
            env=dvc_environment(environment),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return f"dvc repro {stage} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    return None


@contextmanager
def rerun_mlflow_server(worktree: Path) -> Iterator[str]:
    """An MLflow server on 127.0.0.1 over the rerun's throwaway SQLite store (a step container
    logs through a server; its image has no SQLite store), stopped afterwards.

    Yields:
        Its URI.

    Raises:
        StackError: it did not start.
    """
    from mlrig import stopping
    from mlrig.stacks.local.processes import free_port, wait_until

    uri = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{worktree / RERUN_STORE}",
        "--artifacts-destination", str(worktree / RERUN_ARTIFACTS),
        "--host", "127.0.0.1", "--port", uri.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if key not in INHERITED_SETTINGS}
    log_path = worktree / RERUN_SERVER_LOG
    with log_path.open("w") as log:
        server = stopping.start(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    try:
        wait_until(lambda: answers(uri), SERVER_START_SECONDS, "The rerun's MLflow server",
                   log_path, server.pid)  # fmt: skip
        yield uri
    finally:
        stopping.stop_groups([server.pid], SERVER_STOP_SECONDS, {server.pid: server})
        server.wait()
        stopping.GROUPS.forget(server.pid)


def answers(uri: str) -> bool:
    import requests

    try:
        return requests.get(f"{uri}/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def rerun_stages_in_images(
    choice: ImageChoice, worktree: Path, experiment: str, commit: str
) -> str | None:
    """The experiment's train and evaluate stages in their recorded images, the way the
    containers executor runs a stage (`mlrig.executors.rerun`), tracked by a throwaway server
    over the rerun's store; their outputs come back into the worktree.

    Returns:
        None when both ran, else what failed.
    """
    from mlrig.errors import MlrigError
    from mlrig.executors.rerun import Rerun, rerun_in_images

    assert choice.engine is not None
    (worktree / RERUN_STORE).parent.mkdir(parents=True, exist_ok=True)
    given = {
        f"{SPLIT_DIR}/{name}": worktree / SPLIT_DIR / name
        for name in (TRAIN_SPLIT_FILE, TEST_SPLIT_FILE, SPLIT_META_FILE)
    }
    try:
        with rerun_mlflow_server(worktree) as tracking_uri:
            rerun = Rerun(
                engine=choice.engine,
                images=choice.images,
                source=worktree,
                given=given,
                environment={
                    "MLFLOW_TRACKING_URI": tracking_uri,
                    "MLRIG_EXPERIMENT": RERUN_EXPERIMENT,
                    "MLRIG_GIT_COMMIT": commit,
                },
                run_dir=worktree.parent / "containers",
            )
            return rerun_in_images(rerun, [f"train@{experiment}", f"evaluate@{experiment}"])
    except MlrigError as error:  # the server did not start
        return str(error)


def close(registered: float, reproduced: float, tolerance: float) -> bool:
    return abs(registered - reproduced) <= tolerance * max(1.0, abs(registered))


def compare_metrics(
    lineage: ModelLineage, metrics_path: Path, tolerance: float
) -> list[Difference]:
    """Each metric evaluate wrote again against the value the registered run holds."""
    reproduced = json.loads(metrics_path.read_text())
    compared = []
    for name, value in sorted(reproduced.items()):
        registered = lineage.metrics.get(name)
        compared.append(
            Difference(
                what=name,
                registered="-" if registered is None else f"{registered:.10g}",
                reproduced=f"{value:.10g}",
                equal=registered is not None and close(registered, value, tolerance),
            )
        )
    return compared


def compare_predictions(
    settings: Settings, lineage: ModelLineage, worktree: Path, experiment: str, tolerance: float
) -> Difference:
    """The registered model's and the reproduced model's predictions on the test split."""
    import mlflow
    import numpy as np
    import pandas as pd

    from mlrig.experiments.tables import TableMeta

    meta = TableMeta.model_validate_json((worktree / SPLIT_DIR / SPLIT_META_FILE).read_text())
    features = pd.read_parquet(worktree / SPLIT_DIR / TEST_SPLIT_FILE)[meta.features]
    mlflow.set_tracking_uri(settings.tracking_uri)  # the registry, read only
    registered = np.asarray(mlflow.pyfunc.load_model(lineage.model_uri).predict(features))
    model_dir = worktree / TRAIN_OUTPUTS / experiment / MODEL_DIR
    reproduced = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(features))
    if registered.shape != reproduced.shape:
        differing = len(features)
    elif np.issubdtype(registered.dtype, np.number) and np.issubdtype(reproduced.dtype, np.number):
        bound = tolerance * np.maximum(1.0, np.abs(registered))
        differing = int(np.sum(np.abs(registered - reproduced) > bound))
    else:
        differing = int(np.sum(registered.astype(str) != reproduced.astype(str)))
    rows = len(features)
    return Difference(
        what=f"predictions on the {rows} test rows",
        registered=f"{rows} rows",
        reproduced="the same" if not differing else f"{differing} of {rows} rows differ",
        equal=differing == 0,
    )


def rerun_train_run(worktree: Path, experiment: str) -> Run | None:
    """The rerun's train run of the experiment, in the throwaway store (which holds the
    rerun's runs only)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{worktree / RERUN_STORE}")
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.`{TAG_STEP}` = 'train' and tags.`{TAG_EXPERIMENT}` = '{experiment}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def ran_in_link(choice: ImageChoice, worktree: Path, experiment: str) -> Link:
    """The image link of a rerun in the images: held when the rerun's train run names the
    recorded image (what its step container set), as the registered run does."""
    run = rerun_train_run(worktree, experiment)
    ran_in = run.data.tags.get(TAG_IMAGE) if run else None
    if ran_in == choice.link.recorded:
        return choice.link
    note = f"the rerun's train run names {ran_in or 'no image'}"
    return choice.link.model_copy(update={"state": "differs", "note": note})


def params_link(lineage: ModelLineage, worktree: Path, experiment: str) -> Link:
    """The rerun's logged params against the registered run's."""
    run = rerun_train_run(worktree, experiment)
    rerun = run.data.params if run else {}
    keys = sorted(set(rerun) | set(lineage.params))
    changed = [key for key in keys if rerun.get(key) != lineage.params.get(key)]
    if not changed:
        return Link(name="params", recorded=f"{len(lineage.params)} params", state="ok")
    note = "; ".join(
        f"{key}: {lineage.params.get(key, '-')} -> {rerun.get(key, '-')}" for key in changed
    )
    return Link(name="params", recorded=f"{len(lineage.params)} params", state="differs", note=note)


def reproduce(
    settings: Settings,
    uri: str,
    tolerance: float | None = None,
    *,
    local: bool = False,
    on_notice: Callable[[str], None] = lambda line: None,
) -> Reproduction:
    """Train the model version `uri` names again from its lineage, and compare.

    The stages run again in the step images they ran in when the run recorded them and the
    engine has them (`choose_image`), else locally; `on_notice` is told, in one line, why a
    recorded image is not used.

    Args:
        settings: the project and the MLflow store holding the registry (only read).
        uri: `models:/<name>/<version>` or `models:/<name>@<alias>`.
        tolerance: the relative tolerance; default by the model's family (`TOLERANCES`).
        local: run the stages locally even when an image is recorded (`--local`).
        on_notice: told why a recorded image is not used.

    Raises:
        MlrigError: the URI is malformed or names no version the store has.
    """
    lineage = model_lineage(settings, uri)
    tolerance = tolerance_of(lineage.family, tolerance)
    commit, commit_to_use = commit_link(settings.root, lineage.commit)
    data, version = data_link(settings.root, lineage)
    links = [commit, data, experiment_link(lineage)]
    result = Reproduction(
        model=lineage.label, experiment=lineage.experiment, tolerance=tolerance, links=links
    )
    if commit_to_use is None or version is None or lineage.experiment is None:
        state = "not checked" if lineage.image else "ok"
        image = Link(name="image", recorded=lineage.image, state=state, note="nothing ran")
        result.links.insert(2, image)
        return result  # a link is missing: nothing to run
    choice = choose_image(settings, lineage, local=local)
    result.links.insert(2, choice.link)
    result.notice = choice.notice
    if choice.notice:
        on_notice(choice.notice)
    rerun_and_compare(settings, lineage, (version, commit_to_use), choice, result)
    return result


def rerun_and_compare(
    settings: Settings,
    lineage: ModelLineage,
    at: tuple[DataVersion, str],
    choice: ImageChoice,
    result: Reproduction,
) -> None:
    """In a scratch worktree at the commit, on the data version (`at`), run the experiment's
    stages again where `choice` says, and write the comparison into `result`."""
    version, commit = at
    experiment = lineage.experiment
    assert experiment is not None
    with scratch_worktree(settings.root, commit) as worktree:
        place_split(version, worktree)
        result.rerun_tracking = (
            f"a throwaway SQLite store in the scratch worktree ({RERUN_STORE}, experiment "
            f"{RERUN_EXPERIMENT}), deleted with it"
        )
        if choice.in_image:
            result.rerun_tracking += "; the step containers logged through an MLflow server over it"
            failure = rerun_stages_in_images(choice, worktree, experiment, commit)
        else:
            failure = rerun_stages(worktree, experiment, commit)
        if failure is not None:
            result.log = failure
            return
        if choice.in_image:
            result.links[2] = ran_in_link(choice, worktree, experiment)
        result.links.append(params_link(lineage, worktree, experiment))
        metrics = worktree / EVALUATE_OUTPUTS / experiment / METRICS_FILE
        result.compared = compare_metrics(lineage, metrics, tolerance=result.tolerance)
        result.compared.append(
            compare_predictions(settings, lineage, worktree, experiment, result.tolerance)
        )


def require_reproduced(result: Reproduction) -> None:
    """Raises MlrigError (exit 1) unless the model was reproduced."""
    if not result.reproduced:
        raise MlrigError(f"{result.model} was not reproduced (see above).", exit_code=EXIT_FAILED)


def describe_missing(result: Reproduction) -> list[str]:
    """One line per link that is missing or differs."""
    return [
        f"{link.name}: {link.state}{f' ({link.note})' if link.note else ''}"
        for link in result.links
        if link.state in ("missing", "differs")
    ]


def as_dict(result: Reproduction) -> dict[str, Any]:
    return {**result.model_dump(), "reproduced": result.reproduced}
