"""The chart's own pods, started with `podman kube play` here: MLflow, SeaweedFS and PostgreSQL,
the hooks that make the buckets and the pipeline's MLflow user, the pipeline run with the
pipeline's identity (never an admin's), the serving pod on the champion it registered (its
read-only MLflow user made by the chart's hook from the Secret alone) and its rollout to the
next champion, and the pods the ClearML agent's glue makes from the chart's step pod template."""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from botocore.exceptions import ClientError

from mlrig.dvc.dag import stage_graph
from mlrig.executors.clearml.compile import PipelineDescription, describe_pipeline
from mlrig.executors.clearml.store import StepStore
from mlrig.executors.clearml.submit import (
    prepare_submission,
    remote_store,
    step_task_arguments,
    take_results,
    with_records,
)
from mlrig.images.build import ImageBuild, build_serve_image, build_server_images
from mlrig.images.engine import Engine
from mlrig.serving.rollout import version_patch
from mlrig.serving.server import NAME_HEADER, VERSION_HEADER
from mlrig.settings import Settings
from mlrig.stacks.chart import (
    CHART,
    LOCAL_VALUES,
    Played,
    PlayLayout,
    create_secret,
    local_image_digests,
    merged_values,
    play_down,
    playable_pod_spec,
    podman,
    render_chart,
    run_hook,
    up,
)
from tests.chart.conftest import KubeTools
from tests.support.clearml import glue_pod
from tests.support.project import (
    FEW_EXPERIMENTS,
    REPO_ROOT,
    checkout_lock,
    clean_environment,
    copy_repository,
)
from tests.support.serving import (
    Client,
    ServiceStandIn,
    ServingPod,
    on_port,
    play_serving,
    pod_logs,
    take_down,
    take_down_played,
    wait_until_ready,
)

pytestmark = [pytest.mark.containers, pytest.mark.integration]


@pytest.fixture(scope="module")
def played(kube_tools: KubeTools, step_images: tuple[Engine, list[ImageBuild]]) -> Iterator[Played]:
    """The chart played with helm/mlrig/local/podman-values.yaml; removed afterwards.

    The server images are built FROM the OS image the step images' fixture makes.
    """
    engine, _ = step_images
    if engine.name != "podman":
        pytest.skip("kube play needs podman")
    with checkout_lock("images"):
        build_server_images(Settings(project_dir=REPO_ROOT), engine)
    layout = PlayLayout(REPO_ROOT)
    # what a play killed in another checkout leaves: `up` replaces it rather than stop on it
    podman("volume", "create", "data-mlrig-postgresql", check=False)
    try:
        yield up(REPO_ROOT)
    finally:
        play_down(layout)
    # nothing of the play is left: no pod, no volume, no Secret (the next play starts clean)
    pods = podman("pod", "ls", "--format", "{{.Name}}").split()
    volumes = podman("volume", "ls", "--format", "{{.Name}}").split()
    secrets = podman("secret", "ls", "--format", "{{.Name}}").split()
    left = [name for name in [*pods, *volumes, *secrets] if "mlrig-" in name]
    assert not left, f"the play left {left}"


def admin_auth(played: Played) -> tuple[str, str]:
    """MLflow's admin (user admin, the chart's default): for checks, never for the pipeline."""
    return ("admin", played.secrets["mlrig-mlflow"]["admin-password"])


def pipeline_auth(played: Played) -> tuple[str, str]:
    return (
        played.environment["MLFLOW_TRACKING_USERNAME"],
        played.environment["MLFLOW_TRACKING_PASSWORD"],
    )


def s3_client(played: Played, secret: str) -> Any:
    """An S3 client of the played SeaweedFS with the keys of one of the chart's Secrets."""
    keys = played.secrets[secret]
    return boto3.client(
        "s3",
        endpoint_url=played.environment["AWS_ENDPOINT_URL"],
        aws_access_key_id=keys["access-key"],
        aws_secret_access_key=keys["secret-key"],
        region_name=played.environment["AWS_DEFAULT_REGION"],
    )


def test_the_chart_pods_serve_mlflow_behind_basic_auth(played: Played) -> None:
    uri = played.environment["MLFLOW_TRACKING_URI"]
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(f"{uri}/health", timeout=60).status_code == 200
    assert requests.get(search, timeout=60).status_code == 401
    assert requests.get(search, auth=admin_auth(played), timeout=60).status_code == 200
    assert requests.get(search, auth=pipeline_auth(played), timeout=60).status_code == 200
    assert set(played.workloads) == {"mlrig-mlflow", "mlrig-seaweedfs", "mlrig-postgresql"}
    assert played.hooks == ["mlrig-bucket-init", "mlrig-mlflow-users"]  # by hook weight
    assert "NetworkPolicy/mlrig-default" in played.skipped


def test_the_chart_pods_run_as_their_non_root_users(played: Played) -> None:
    users = {}
    for workload in played.workloads:
        container = f"{workload}-pod-0-{workload.removeprefix('mlrig-')}"
        inspected = subprocess.run(
            ["podman", "inspect", container], capture_output=True, text=True, check=True
        )
        (config,) = json.loads(inspected.stdout)
        users[workload] = config["Config"]["User"]
        assert config["HostConfig"]["ReadonlyRootfs"] is True, workload
        assert config["State"]["Status"] == "running", workload
        # pinned: the image runs by the digest `chart play` read from podman's store
        assert "@sha256:" in config["ImageName"], (workload, config["ImageName"])
    assert users == {
        "mlrig-mlflow": "1001:0",
        "mlrig-seaweedfs": "1001:0",
        "mlrig-postgresql": "1001:1001",
    }


def test_the_hook_made_the_pipelines_user_with_edit_on_its_experiments_and_models(
    played: Played,
) -> None:
    """What the mlflow-users hook did through MLflow's auth API, read back as the admin."""
    uri, admin = played.environment["MLFLOW_TRACKING_URI"], admin_auth(played)
    username = played.environment["MLFLOW_TRACKING_USERNAME"]
    assert username == "pipeline"
    user = requests.get(
        f"{uri}/api/2.0/mlflow/users/get", params={"username": username}, auth=admin, timeout=30
    )
    assert user.status_code == 200, user.text
    assert user.json()["user"]["is_admin"] is False
    experiment = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "mlrig"}, auth=admin, timeout=30,
    ).json()["experiment"]  # fmt: skip
    for resource_type, resource_id in (
        ("experiment", experiment["experiment_id"]),
        ("registered_model", "mlrig-breast_cancer"),
    ):
        held = requests.get(
            f"{uri}/api/3.0/mlflow/users/permissions/get",
            params={"username": username, "resource_type": resource_type,
                    "resource_id": resource_id},
            auth=admin, timeout=30,
        )  # fmt: skip
        assert held.status_code == 200, held.text
        assert held.json()["permission"] == "EDIT", resource_type


def test_the_buckets_hook_made_both_buckets(played: Played) -> None:
    admin = s3_client(played, "mlrig-s3")
    names = {bucket["Name"] for bucket in admin.list_buckets()["Buckets"]}
    assert {"mlrig-dvc", "mlrig-mlflow"} <= names


def test_mlflows_metrics_sidecar_serves_the_servers_counters(played: Played) -> None:
    """No password: the sidecar's own port (MLflow's /metrics answers its admin only)."""
    uri = played.environment["MLFLOW_TRACKING_URI"]
    requests.get(f"{uri}/api/2.0/mlflow/experiments/search", auth=pipeline_auth(played), timeout=30)
    metrics = requests.get("http://127.0.0.1:25464/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "mlflow_http_request_total{" in metrics.text
    assert requests.get(f"{uri}/metrics", auth=pipeline_auth(played), timeout=30).status_code == 403


def chart_project(
    played: Played, project: Path, experiments: tuple[str, ...] = FEW_EXPERIMENTS
) -> dict[str, str]:
    """A fresh copy of the repository whose DVC remote is the chart's S3; its environment."""
    copy_repository(project, experiments)
    endpoint = played.environment["AWS_ENDPOINT_URL"]
    for arguments in (
        ["remote", "add", "--local", "chart", "s3://mlrig-dvc/dvc"],
        ["remote", "modify", "--local", "chart", "endpointurl", endpoint],
    ):
        subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=project, check=True)
    return clean_environment(project) | played.environment | {"MLRIG_DVC_REMOTE": "chart"}


def test_doctor_passes_against_the_chart_pods(played: Played, tmp_path: Path) -> None:
    project = tmp_path / "project"
    environment = chart_project(played, project)
    endpoint = played.environment["AWS_ENDPOINT_URL"]
    doctor = subprocess.run(
        [sys.executable, "-m", "mlrig", "doctor"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"MLflow at {played.environment['MLFLOW_TRACKING_URI']}: reachable, auth ok" in (
        doctor.stdout + doctor.stderr
    )
    assert f"s3://mlrig-dvc/dvc at {endpoint}" in doctor.stdout + doctor.stderr


@dataclass(frozen=True)
class PipelineRun:
    """A `mlrig run --executor containers` of a project against the chart pods."""

    project: Path
    environment: dict[str, str]
    summary: dict[str, Any]

    @property
    def champion(self) -> dict[str, Any]:
        return json.loads((self.project / "outputs/register/champion.json").read_text())


def run_in_containers(project: Path, environment: dict[str, str]) -> dict[str, Any]:
    """`mlrig run --executor containers --json` in `project`; its summary."""
    result = subprocess.run(
        [sys.executable, "-m", "mlrig", "run", "--executor", "containers", "--json"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def first_run(
    played: Played, step_images: tuple[Engine, list[ImageBuild]], tmp_path_factory: Any
) -> PipelineRun:
    """The baseline alone: its model becomes the first champion (v1), for a challenger later."""
    project = tmp_path_factory.mktemp("pipeline") / "project"
    environment = chart_project(played, project, ("baseline",))
    return PipelineRun(project, environment, run_in_containers(project, environment))


def add_experiment(project: Path, name: str) -> None:
    """Add the repository's params.yaml entry of experiment `name` to the project's, committed."""
    ours = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["train"]["experiments"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["experiments"][name] = ours[name]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "add", "-A"], ["git", "commit", "-qm", f"add {name}"]):
        subprocess.run(command, cwd=project, check=True, capture_output=True)


@pytest.fixture(scope="module")
def second_run(first_run: PipelineRun) -> PipelineRun:
    """The same project run again with linear_c0_1 added: the challenger that moves the alias."""
    add_experiment(first_run.project, "linear_c0_1")
    summary = run_in_containers(first_run.project, first_run.environment)
    return PipelineRun(first_run.project, first_run.environment, summary)


def test_the_whole_pipeline_runs_in_containers_against_the_chart_pods(
    played: Played, first_run: PipelineRun
) -> None:
    """Runs and the champion land in the chart's MLflow and the data in its S3, written with the
    pipeline's identity alone (client.env: its MLflow user, its DVC-bucket keys); no process
    stack."""
    project, summary = first_run.project, first_run.summary
    assert set(summary["stages_run"]) == set(stage_graph(project))
    trained = [stage for stage in summary["stages_run"] if stage.startswith("train@")]
    assert trained and summary["runs_recorded"] == len(trained)
    champion = summary["champion"]
    assert champion_alias(played, champion["registered_model"]) == champion["version"]
    # the model the hook made and gave the pipeline's user EDIT on: a version, aliases moved
    assert champion["registered_model"] == "mlrig-breast_cancer"
    # the DVC bucket through the pipeline's keys, MLflow's through the server's own keys
    assert s3_client(played, "mlrig-s3-pipeline").list_objects_v2(Bucket="mlrig-dvc")["KeyCount"]
    assert s3_client(played, "mlrig-s3-mlflow").list_objects_v2(Bucket="mlrig-mlflow")["KeyCount"]
    assert not (project / ".mlrig" / "stack").exists()  # no process stack was started


def champion_alias(played: Played, model: str) -> str:
    """The version the registry's `champion` alias names, read with the pipeline's identity."""
    uri = played.environment["MLFLOW_TRACKING_URI"]
    alias = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/alias",
        params={"name": model, "alias": "champion"},
        auth=pipeline_auth(played),
        timeout=30,
    )
    assert alias.status_code == 200, alias.text
    return str(alias.json()["model_version"]["version"])


def test_the_step_identity_cannot_delete_a_model_or_read_another_bucket(played: Played) -> None:
    """With what a step pod holds: the registry refuses a delete it can read, and S3 refuses
    every bucket but the DVC one (where the same keys do work)."""
    uri, pipeline = played.environment["MLFLOW_TRACKING_URI"], pipeline_auth(played)
    model = {"name": "mlrig-breast_cancer"}
    readable = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/get", params=model, auth=pipeline, timeout=30
    )
    assert readable.status_code == 200, readable.text
    deleted = requests.delete(
        f"{uri}/api/2.0/mlflow/registered-models/delete", json=model, auth=pipeline, timeout=30
    )
    assert deleted.status_code == 403, deleted.text
    still = requests.get(
        f"{uri}/api/2.0/mlflow/registered-models/get", params=model, auth=admin_auth(played),
        timeout=30,
    )  # fmt: skip
    assert still.status_code == 200
    grant = {
        "username": "pipeline",
        "resource_type": "registered_model",
        "resource_id": model["name"],
    }
    escalated = requests.post(
        f"{uri}/api/3.0/mlflow/users/permissions/grant", json=grant | {"permission": "MANAGE"},
        auth=pipeline, timeout=30,
    )  # fmt: skip
    assert escalated.status_code == 403, escalated.text

    admin, steps = s3_client(played, "mlrig-s3"), s3_client(played, "mlrig-s3-pipeline")
    admin.create_bucket(Bucket="mlrig-other")
    admin.put_object(Bucket="mlrig-other", Key="secret.txt", Body=b"not the pipeline's")
    admin.put_object(Bucket="mlrig-mlflow", Key="probe/secret.txt", Body=b"MLflow's")
    try:
        steps.put_object(Bucket="mlrig-dvc", Key="probe/mine.txt", Body=b"the pipeline's")
        assert steps.get_object(Bucket="mlrig-dvc", Key="probe/mine.txt")["Body"].read()
        for bucket, key in (("mlrig-mlflow", "probe/secret.txt"), ("mlrig-other", "secret.txt")):
            attempts = {
                "get": partial(steps.get_object, Bucket=bucket, Key=key),
                "list": partial(steps.list_objects_v2, Bucket=bucket),
                "put": partial(steps.put_object, Bucket=bucket, Key="planted.txt", Body=b"x"),
            }
            for action, attempt in attempts.items():
                with pytest.raises(ClientError) as refused:
                    attempt()
                assert refused.value.response["Error"]["Code"] == "AccessDenied", (bucket, action)
        with pytest.raises(ClientError):
            steps.create_bucket(Bucket="mlrig-planted")
    finally:
        steps.delete_object(Bucket="mlrig-dvc", Key="probe/mine.txt")
        admin.delete_object(Bucket="mlrig-mlflow", Key="probe/secret.txt")
        admin.delete_object(Bucket="mlrig-other", Key="secret.txt")
        admin.delete_bucket(Bucket="mlrig-other")


# The chart's serving Deployment (serving.enabled), played once the pipeline registered a
# champion, on that champion; then rolled out to the next champion.
#: the registered model the pipeline's breast_cancer dataset registers
SERVED_MODEL = "mlrig-breast_cancer"
#: the Secret serving.existingSecret names (the chart never generates it: an operator makes it)
SERVING_SECRET = "mlrig-serving"
#: the serving pods' ports: on the host network each pod needs its own (apart from the chart's)
SERVING_PORT, ROLLOUT_PORT = 28080, 28081
#: the name the rollout's second pod is played under (its Deployment renamed: one pod per play)
ROLLOUT_POD = "mlrig-serving-rollout"
#: the largest difference allowed between a probability computed in the pod and here: the
#: same libraries on the same CPU give the same bits (measured: 0); a summation order of
#: another BLAS thread count may move the last bits, far below what flips a label
PROBABILITY_TOLERANCE = 1e-12
#: the served model's class probabilities, computed in the pod with its libraries, on the
#: request body (stdin) parsed as MLflow's scoring server parses it
PROBABILITIES_IN_THE_POD = """
import glob, json, sys
import mlflow.pyfunc
from mlflow.pyfunc import scoring_server
[mlmodel] = glob.glob("/tmp/mlrig-serve-*/**/MLmodel", recursive=True)
model = mlflow.pyfunc.load_model(mlmodel.rsplit("/", 1)[0])
frame = scoring_server.infer_and_parse_data(json.load(sys.stdin), model.metadata.get_input_schema())
print(json.dumps(model.get_raw_model().predict_proba(frame).tolist()))
"""


@dataclass(frozen=True)
class ServingPlay:
    """The serving Deployment as the chart renders it, its played pod, the identity of the
    Secret it reads, and the log of the mlflow-users hook that made its user."""

    deployment: dict[str, Any]
    pod: ServingPod
    image: ImageBuild
    identity: dict[str, str] = field(repr=False)
    users_hook_log: str


@pytest.fixture(scope="module")
def serve_image(played: Played, step_images: tuple[Engine, list[ImageBuild]]) -> ImageBuild:
    """The scoring server's image (built by `played` with the other server images: reused)."""
    engine, _ = step_images
    with checkout_lock("images"):
        return build_serve_image(Settings(project_dir=REPO_ROOT), engine)


def rendered_with_serving(helm: Path, image: ImageBuild) -> list[dict[str, Any]]:
    """The chart rendered with the local values and serving enabled: what `helm upgrade
    --set serving.enabled=true ...` applies."""
    values = merged_values(REPO_ROOT / CHART / "values.yaml", REPO_ROOT / LOCAL_VALUES)
    repository, tag = image.reference.rsplit(":", 1)
    digest = podman("image", "inspect", "--format", "{{.Digest}}", image.reference).strip()
    settings = local_image_digests(values) | {
        "serving.enabled": "true",
        "serving.model": SERVED_MODEL,
        "serving.existingSecret": SERVING_SECRET,
        "serving.image.repository": repository,
        "serving.image.tag": tag,
        "serving.image.digest": digest,
        "serving.image.pullPolicy": "Never",
        "serving.port": str(SERVING_PORT),
        "serving.replicas": "1",
    }
    return render_chart(helm, REPO_ROOT / CHART, [REPO_ROOT / LOCAL_VALUES], settings)


def rendered_object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def run_users_hook(layout: PlayLayout, objects: list[dict[str, Any]]) -> str:
    """The mlflow-users hook of these objects, played as the played chart's hooks were (after
    an upgrade, as Helm runs it), with the ConfigMaps it mounts; its log."""
    job = rendered_object(objects, "Job", "mlrig-mlflow-users")
    mounted = {
        volume["configMap"]["name"]
        for volume in job["spec"]["template"]["spec"]["volumes"]
        if "configMap" in volume
    }
    configmaps = []
    for item in objects:
        if item["kind"] == "ConfigMap" and item["metadata"]["name"] in mounted:
            path = layout.configmap(item["metadata"]["name"])
            path.write_text(yaml.safe_dump(item))
            configmaps.append(path)
    return run_hook(layout, job, configmaps)


@pytest.fixture(scope="module")
def serving(
    played: Played, first_run: PipelineRun, serve_image: ImageBuild, kube_tools: KubeTools
) -> Iterator[ServingPlay]:
    """The serving Deployment played on the first champion; removed afterwards, with its
    Secret and whatever rollout pod a failed test left. As an operator would, only the
    Secret of the serving identity is made here; the chart's mlflow-users hook makes the user."""
    layout = PlayLayout(REPO_ROOT)
    identity = {"mlflow-username": "serving", "mlflow-password": secrets.token_urlsafe(24)}
    create_secret(SERVING_SECRET, identity, layout.folder)
    try:
        objects = rendered_with_serving(kube_tools.helm, serve_image)
        hook_log = run_users_hook(layout, objects)
        deployment = rendered_object(objects, "Deployment", "mlrig-serving")
        pod = play_serving(layout, on_port(deployment, "mlrig-serving", SERVING_PORT))
        wait_until_ready(pod)
        yield ServingPlay(deployment, pod, serve_image, identity, hook_log)
    finally:
        for name in ("mlrig-serving", ROLLOUT_POD):
            take_down_played(layout, name)
        podman("secret", "rm", SERVING_SECRET, check=False)


def test_the_hook_made_the_serving_user_that_may_only_read_the_model(
    played: Played, serving: ServingPlay
) -> None:
    """What the mlflow-users hook made of the Secret alone, read back as the admin: no admin,
    READ on the served model and no other grant; and what MLflow refuses that user."""
    uri, admin = played.environment["MLFLOW_TRACKING_URI"], admin_auth(played)
    username = serving.identity["mlflow-username"]
    assert f"user {username}: created" in serving.users_hook_log
    assert serving.identity["mlflow-password"] not in serving.users_hook_log
    user = requests.get(
        f"{uri}/api/2.0/mlflow/users/get", params={"username": username}, auth=admin, timeout=30
    )
    assert user.status_code == 200, user.text
    assert user.json()["user"]["is_admin"] is False
    listed = requests.get(
        f"{uri}/api/3.0/mlflow/users/permissions/list", params={"username": username},
        auth=admin, timeout=30,
    )  # fmt: skip
    assert listed.status_code == 200, listed.text
    grants = [
        (row["resource_type"], row["resource_pattern"], row["permission"])
        for row in listed.json()["permissions"]
    ]
    assert grants == [("registered_model", SERVED_MODEL, "READ")]

    reader = (username, serving.identity["mlflow-password"])
    experiment = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "mlrig"},
        auth=reader, timeout=30,
    )  # fmt: skip
    assert experiment.status_code == 200, experiment.text
    champion = champion_alias(played, SERVED_MODEL)
    attempts = {
        "move the alias": ("registered-models/alias",
                           {"name": SERVED_MODEL, "alias": "champion", "version": champion}),
        "create a run": ("runs/create",
                         {"experiment_id": experiment.json()["experiment"]["experiment_id"]}),
    }  # fmt: skip
    for action, (path, body) in attempts.items():
        refused = requests.post(f"{uri}/api/2.0/mlflow/{path}", json=body, auth=reader, timeout=30)
        assert refused.status_code == 403, (action, refused.text)
    assert champion_alias(played, SERVED_MODEL) == champion


def split_rows(run: PipelineRun) -> tuple[Any, bytes]:
    """The run's test split (its features only), and an /invocations body of it."""
    import pandas as pd

    meta = json.loads((run.project / "outputs/split/meta.json").read_text())
    rows = pd.read_parquet(run.project / "outputs/split/test.parquet")[meta["features"]]
    return rows, json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()


def served_probabilities(pod: ServingPod, body: bytes) -> list[list[float]]:
    computed = subprocess.run(
        ["podman", "exec", "--interactive", pod.container, "python", "-c",
         PROBABILITIES_IN_THE_POD],
        input=body, capture_output=True, timeout=300,
    )  # fmt: skip
    assert computed.returncode == 0, computed.stderr.decode()
    return json.loads(computed.stdout)


def test_the_serving_pod_answers_as_the_champion_loaded_here(
    serving: ServingPlay, first_run: PipelineRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import numpy as np

    registered = first_run.summary["champion"]
    rows, body = split_rows(first_run)
    request = urllib.request.Request(
        f"{serving.pod.url}/invocations", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        served = json.loads(response.read())["predictions"]
        name, version = response.headers[NAME_HEADER], response.headers[VERSION_HEADER]
    assert (name, version) == (registered["registered_model"], registered["version"])

    # the chart's registry by its URI, not by MLFLOW_TRACKING_URI alone: a URI set in this
    # process (mlflow.set_tracking_uri) wins over the variable (issue 19)
    for key, value in first_run.environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    mlflow.set_tracking_uri(first_run.environment["MLFLOW_TRACKING_URI"])
    alias = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    assert str(alias.version) == version
    local = mlflow.pyfunc.load_model(f"models:/{name}/{version}")

    assert len(served) == len(rows) > 10
    assert served == local.predict(rows).tolist()
    in_the_pod = np.array(served_probabilities(serving.pod, body))
    here = local.get_raw_model().predict_proba(rows)
    assert np.abs(in_the_pod - here).max() <= PROBABILITY_TOLERANCE


def test_status_names_the_version_the_serving_pod_serves(
    serving: ServingPlay, first_run: PipelineRun
) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "mlrig", "serve", "status", "--url", serving.pod.url, "--json"],
        cwd=first_run.project, env=first_run.environment,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    described = json.loads(status.stdout)
    assert described["version"] == first_run.summary["champion"]["version"]
    assert described["model"] == first_run.summary["champion"]["registered_model"]


def test_the_serving_image_holds_no_credential_and_its_pod_runs_as_1001_read_only(
    serving: ServingPlay,
) -> None:
    reference = serving.image.reference
    environment = podman("image", "inspect", "--format", "{{json .Config.Env}}", reference)
    assert not any(word in environment for word in ("PASSWORD", "SECRET", "ACCESS_KEY"))
    assert podman("image", "inspect", "--format", "{{.Config.User}}", reference).strip() == "1001"
    (inspected,) = json.loads(podman("inspect", serving.pod.container))
    assert inspected["Config"]["User"].split(":")[0] == "1001"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert "@sha256:" in inspected["ImageName"]


def test_the_second_run_moves_the_champion_alias_to_the_linear_model(
    played: Played, first_run: PipelineRun, second_run: PipelineRun
) -> None:
    """linear_c0_1 beats the baseline far beyond the bootstrap margin: v1 to v2."""
    assert first_run.summary["champion"]["version"] == "1"
    champion = second_run.summary["champion"]
    assert champion["version"] == "2"
    assert second_run.champion["version"] == "2"
    assert champion_alias(played, SERVED_MODEL) == "2"
    assert [s for s in second_run.summary["stages_run"] if s.startswith("train@")] == [
        "train@linear_c0_1"
    ]


def rolled_out(deployment: dict[str, Any], version: str) -> dict[str, Any]:
    """The Deployment with `mlrig serve rollout`'s patch applied (the pod template's pin)."""
    patched = json.loads(json.dumps(deployment))
    annotations = version_patch(version)["spec"]["template"]["metadata"]["annotations"]
    patched["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})
    patched["spec"]["template"]["metadata"]["annotations"].update(annotations)
    return patched


def test_a_rollout_serves_the_new_champion_without_a_failed_request(
    serving: ServingPlay, first_run: PipelineRun, second_run: PipelineRun
) -> None:
    """What Kubernetes does when `mlrig serve rollout` patches the Deployment, played here with
    podman, which has no Deployment controller and no Service: the test stands in for both.
    The patched Deployment is played as a second pod (its own port on the host network); a
    client sends /invocations without pause through a stand-in Service that routes only to
    pods whose rendered readinessProbe path answers; once the new pod is ready it replaces the
    old one there, and the old pod is taken down (`podman kube down`)."""
    layout = PlayLayout(REPO_ROOT)
    old, new_version = serving.pod, second_run.champion["version"]
    service = ServiceStandIn(endpoints=[old])
    _, body = split_rows(second_run)
    client = Client(service, body)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        time.sleep(1)  # requests to the old pod before the rollout starts
        patched = rolled_out(serving.deployment, new_version)
        new = play_serving(layout, on_port(patched, ROLLOUT_POD, ROLLOUT_PORT))
        assert service.roll_over(old, new, seconds=300), pod_logs(new)
        take_down(layout, old)
        time.sleep(1)  # requests to the new pod alone
    finally:
        client.stopped.set()
        thread.join(timeout=60)

    failed = [answer.error for answer in client.answers if answer.error]
    assert not failed, failed[:5]
    versions = [answer.version for answer in client.answers]
    switch = versions.index(new_version)
    assert switch > 0 and set(versions[:switch]) == {first_run.summary["champion"]["version"]}
    assert set(versions[switch:]) == {new_version}  # never back to the old version
    assert requests.get(f"{new.url}/version", timeout=30).json()["version"] == new_version
    # not ready before its model was loaded: its readiness path failed first, and the moment
    # it answered, the pod served the new version (uvicorn binds the port after the download)
    assert not service.probes[0][1], service.probes[:3]
    assert service.version_when_ready == new_version
    assert "Uvicorn running" in pod_logs(new)
    take_down(layout, new)


# ClearML pipeline steps: the pod clearml-agent's k8s glue would create for a step, from the
# chart's pod template, started with podman against the chart's pods. No ClearML server can
# run here: the pods run ClearML offline, so they report no task status (tested live only).
#: the agent's Secret the chart's values name: the glue's, which no step pod reads
AGENT_SECRET = "mlrig-clearml-agent"


@dataclass(frozen=True)
class Submission:
    """A project submitted as far as it goes without a server: workspace and steps uploaded."""

    project: Path
    settings: Settings
    description: PipelineDescription
    store: StepStore


@pytest.fixture(scope="module")
def step_pod_template(played: Played, kube_tools: KubeTools) -> dict[str, Any]:
    """The glue's pod template as the chart renders it for this machine: it reads the
    pipeline's Secrets only (the played chart made them), never the agent's."""
    local = merged_values(REPO_ROOT / CHART / "values.yaml", REPO_ROOT / LOCAL_VALUES)
    digests = [f"{key}={digest}" for key, digest in local_image_digests(local).items()]
    objects = kube_tools.render(
        "--values", str(REPO_ROOT / LOCAL_VALUES),
        "--values", str(REPO_ROOT / CHART / "ci" / "agent-values.yaml"),
        "--set", f"agent.existingSecret={AGENT_SECRET}", "--set", ",".join(digests),
    )  # fmt: skip
    # the pod template of the default queue (each queue's glue has its own)
    (configmap,) = [
        item
        for item in objects
        if item["kind"] == "ConfigMap" and item["metadata"]["name"] == "mlrig-agent-default"
    ]
    return yaml.safe_load(configmap["data"]["template.yaml"])


@pytest.fixture(scope="module")
def submission(
    played: Played, step_images: tuple[Engine, list[ImageBuild]], tmp_path_factory: Any
) -> Iterator[Submission]:
    project = tmp_path_factory.mktemp("clearml") / "project"
    environment = chart_project(played, project)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            patch.setenv(name, environment[name])
        settings = Settings(project_dir=project, dvc_remote="chart")
        description = prepare_submission(settings, describe_pipeline(settings, "default"))
        yield Submission(project, settings, description, remote_store(settings))


@dataclass(frozen=True)
class PodRun:
    exit_code: int
    log: str
    user: str
    read_only_root: bool


def run_step_pod(template: dict[str, Any], submission: Submission, stage: str) -> PodRun:
    """The glue's pod of one step, played until it exits, then removed."""
    (step,) = [step for step in submission.description.steps if step.name == stage]
    arguments = step_task_arguments(submission.description, step)["docker_args"]
    # as clearml-agent's get_task_container reads them; offline: no server to report to
    container_arguments = [*shlex.split(arguments), "-e", "CLEARML_OFFLINE_MODE=1"]
    task_id = f"test-{stage.replace('@', '-')}"
    pod = glue_pod(template, task_id, step.image, container_arguments)
    name = pod["metadata"]["name"]
    playable_pod_spec(pod["spec"], name)
    layout = PlayLayout(REPO_ROOT)
    path = layout.folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(pod))
    container = f"{name}-{pod['spec']['containers'][0]['name']}"
    podman("kube", "play", str(path), conf=layout.containers_conf)
    try:
        exit_code = int(podman("wait", container).strip())
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
        (inspected,) = json.loads(podman("inspect", container))
    finally:
        podman("kube", "down", str(path), conf=layout.containers_conf, check=False)
        for volume in pod["spec"].get("volumes", []):
            podman("volume", "rm", "--force", volume["name"], check=False)
    return PodRun(
        exit_code=exit_code,
        log=logs.stdout + logs.stderr,
        user=inspected["Config"]["User"],
        read_only_root=inspected["HostConfig"]["ReadonlyRootfs"],
    )


def test_the_glue_pods_of_two_steps_hand_over_through_the_remote(
    step_pod_template: dict[str, Any], submission: Submission
) -> None:
    """Each pod starts empty: it fetches the workspace, then the record of the step before it."""
    steps = {step.name: step for step in submission.description.steps}
    store = submission.store

    ingest = run_step_pod(step_pod_template, submission, "ingest")
    assert ingest.exit_code == 0, ingest.log
    assert "task test-ingest's status is not reported" in ingest.log
    assert f"recorded ingest under input key {steps['ingest'].input_key[:12]}" in ingest.log
    assert (ingest.user, ingest.read_only_root) == ("1001:0", True)
    validate = run_step_pod(step_pod_template, submission, "validate")
    assert validate.exit_code == 0, validate.log

    ingested = store.get_record(steps["ingest"].input_key, "ingest")["outs"]
    read = store.get_record(steps["validate"].input_key, "validate")["deps"]
    (table,) = [dep for dep in read if dep["path"] == "outputs/ingest"]
    assert table["md5"] == ingested[0]["md5"]  # validate read what the ingest pod made

    # what `--wait` does at the end: the checkout as the pods left it
    take_results(submission.settings, [steps["ingest"], steps["validate"]])
    project = submission.project
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert lock["ingest"] == store.get_record(steps["ingest"].input_key, "ingest")
    assert (project / "outputs" / "validate" / "report.json").is_file()
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "ingest", "validate"],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "up to date" in status.stdout, status.stdout


def test_a_second_submission_leaves_out_what_the_remote_holds(
    step_pod_template: dict[str, Any], submission: Submission
) -> None:
    """After the two pods ran, only the other stages are submitted; a changed validate param
    makes validate (and what follows it) run again, never ingest."""
    settings, store = submission.settings, submission.store
    again = with_records(describe_pipeline(settings, "default"), store)
    recorded = {step.name for step in again.steps if step.recorded}
    assert recorded == {"ingest", "validate"}, "run after the hand-over test"

    params_path = submission.project / "params.yaml"
    params_path.write_text(params_path.read_text().replace("min_rows: 20", "min_rows: 21"))
    changed = with_records(describe_pipeline(settings, "default"), store)
    assert {step.name for step in changed.steps if step.recorded} == {"ingest"}
    assert {step.name for step in changed.submitted()} == set(stage_graph(submission.project)) - {
        "ingest"
    }
