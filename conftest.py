"""Fixtures shared by the step tests (beside each step) and tests/."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrig.containers import copy_project_files
from mlrig.settings import Settings

REPO_ROOT = Path(__file__).parent
TRACKING_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "CLEARML_API_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY",
    "CLEARML_CACHE_DIR",
    "CLEARML_CONFIG_FILE",
    "CLEARML_OFFLINE_MODE",
    "MLRIG_PARENT_RUN_ID",
    "MLRIG_PIPELINE_RUN_ID",
    # set by Task.init in this process: a child process that inherits them takes itself for
    # a subprocess of that task and records no session of its own
    "CLEARML_PROC_MASTER_ID",
    "TRAINS_PROC_MASTER_ID",
    "CLEARML_TASK_ID",
)


# The tiers that test servers, containers, the chart and CI run the pipeline with two of
# params.yaml's experiments: what they check does not depend on the model families, and each
# experiment is two more stages per run (the e2e tier runs every family).
FEW_EXPERIMENTS = ("knn", "linear_c0_1")


def keep_experiments(root: Path, names: tuple[str, ...]) -> None:
    """Leave only `names` in the copy's params.yaml, and their stages in its dvc.lock."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    experiments = params["train"]["experiments"]
    params["train"]["experiments"] = {name: experiments[name] for name in names}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    dropped = {
        f"{step}@{name}"
        for name in experiments.keys() - set(names)
        for step in ("train", "evaluate")
    }
    lock["stages"] = {
        stage: entry for stage, entry in lock["stages"].items() if stage not in dropped
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def copy_repository(destination: Path, experiments: tuple[str, ...] | None = None) -> None:
    """Copy what a fresh clone holds (the files git tracks or would track) and commit it;
    with `experiments`, only those are in its params."""
    copy_project_files(REPO_ROOT, destination)
    if experiments is not None:
        keep_experiments(destination, experiments)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=destination, check=True, capture_output=True)


def clean_environment(root: Path) -> dict[str, str]:
    """The environment of a user's shell in `root`: no tracking settings, the venv's tools first."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in TRACKING_VARIABLES and not key.startswith("MLRIG_CLEARML_")
    }
    # MAKEFLAGS: `make test`'s own variables (PYTEST_ARGS) would override a nested make's
    for name in (
        "MLRIG_PROJECT_DIR",
        "MLRIG_EXPERIMENT",
        "MLRIG_DVC_REMOTE",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
    ):
        env.pop(name, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_mlrig(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """`mlrig ...` as a user's shell in `cwd` runs it (clean_environment), plus `environment`."""
    return subprocess.run(
        [sys.executable, "-m", "mlrig", *arguments],
        cwd=cwd,
        env=clean_environment(cwd) | environment,
        capture_output=True,
        text=True,
        timeout=900,  # a safety net: a loaded 2-core CI machine is slow
    )


@pytest.fixture
def project_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings of a throwaway project: its own SQLite MLflow store and ClearML sessions."""
    for name in TRACKING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("MLRIG_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLRIG_EXPERIMENT", f"test-{os.getpid()}-{tmp_path.name}")
    # set here so that what mlrig.tracking sets in os.environ is undone after the test
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(project / ".mlrig" / "clearml"))
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(REPO_ROOT / "src/mlrig/clearml-offline.conf"))
    yield Settings()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With MLRIG_REQUIRE_SERVICES=1 (CI) a test skipped for a missing tool or server fails;
    not a `live` one: no ClearML server can run on a CI machine."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    required = os.environ.get("MLRIG_REQUIRE_SERVICES") == "1" and not item.get_closest_marker(
        "live"
    )
    if required and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but MLRIG_REQUIRE_SERVICES=1 requires it: {report.longrepr}"


# the tests commit into scratch repositories; a fresh machine's git has no identity
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "mlrig tests",
    "GIT_AUTHOR_EMAIL": "tests@mlrig.invalid",
    "GIT_COMMITTER_NAME": "mlrig tests",
    "GIT_COMMITTER_EMAIL": "tests@mlrig.invalid",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, value in GIT_IDENTITY.items():
        os.environ.setdefault(name, value)


@contextmanager
def checkout_lock(name: str) -> Iterator[None]:
    """Held while a test worker builds what every worker shares in the checkout (images,
    tools): the others wait, then find it built. `make test` runs several workers at once."""
    from filelock import FileLock

    folder = REPO_ROOT / ".mlrig" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / f"{name}.lock"):
        yield


def tier_of(nodeid: str) -> str:
    """The tier of a test: its folder under tests/ (`containers`, `chart`, ...), else `steps`."""
    parts = nodeid.split("/")
    return parts[1] if parts[0] == "tests" and len(parts) > 2 else "steps"


#: the slowest tiers first, so that test workers (`make test` runs several) take them first and
#: end together: `containers` builds the step images the others wait for
TIER_ORDER = ("containers", "ci", "e2e", "integration", "chart")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests by tier (TIER_ORDER, then the rest); a file keeps its own order."""
    rank = {tier: position for position, tier in enumerate(TIER_ORDER)}
    items.sort(key=lambda item: rank.get(tier_of(item.nodeid), len(rank)))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """End with each tier that skipped tests for lack of a tool, and the command that installs it.

    A `live` test (it needs a ClearML server, which no package installs) is not counted.
    """
    reasons: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        if "live" in report.keywords or not isinstance(report.longrepr, tuple):
            continue
        tier = tier_of(report.nodeid)
        reasons.setdefault(tier, set()).add(str(report.longrepr[2]).removeprefix("Skipped: "))
        counts[tier] = counts.get(tier, 0) + 1
    if not reasons:
        return
    terminalreporter.section("tiers skipped for lack of a tool")
    for tier in sorted(reasons):
        why = "; ".join(sorted(reasons[tier]))
        terminalreporter.write_line(f"{tier}: {counts[tier]} test(s) skipped: {why}")
    terminalreporter.write_line(
        "Install what they need (Debian, as root), then run make test again: "
        "sudo make system-packages"
    )


def postgres_installed() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or bool(shutil.which("initdb"))


@dataclass
class Stack:
    """A scratch copy of the repository with its local stack running."""

    root: Path
    env: dict[str, str]
    up_output: str = field(default="")

    def mlrig(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run_module("mlrig", *args, **extra)

    def dvc(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run_module("dvc", *args, **extra)

    def run_module(self, module: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=self.root,
            env=self.env | extra,
            capture_output=True,
            text=True,
            timeout=900,
        )

    def client_env(self) -> dict[str, str]:
        from dotenv import dotenv_values

        values = dotenv_values(self.root / ".mlrig/stack/stack.env")
        return {key: value for key, value in values.items() if value is not None}

    def secrets(self) -> dict[str, str]:
        return json.loads((self.root / ".mlrig/stack/secrets.json").read_text())


def start_stack(experiments: tuple[str, ...] | None = FEW_EXPERIMENTS) -> Iterator[Stack]:
    """Copy the repository (with `experiments`) and start its stack; stop it when the caller's
    fixture ends."""
    if not postgres_installed():
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    # PostgreSQL runs as `postgres` and must reach its data folder. pytest's temp root is
    # private, and every pytest session (a nested one too) resets it to 0700, which would pull
    # the data folder from under a running server: the stack gets a folder of its own.
    root = Path(tempfile.mkdtemp(prefix="mlrig-stack-"))
    root.chmod(0o711)
    try:
        copy_repository(root, experiments)
        started = Stack(root=root, env=clean_environment(root))
        up = started.mlrig("stack", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        started.up_output = up.stdout + up.stderr
        yield started
        started.mlrig("stack", "down")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    """A real S3 endpoint on loopback (SeaweedFS, as the local stack runs it) and its admin keys."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """What boto3 and DVC read to reach it."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def create_bucket(self, bucket: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        if bucket not in {item["Name"] for item in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session (`weed mini` on free loopback ports, data in a temp
    folder), with one administrator identity: a wrong key or secret is refused."""
    from mlrig.errors import MlrigError
    from mlrig.stack.processes import start_detached, stop_process, wait_until
    from mlrig.stack.seaweedfs import SeaweedPorts, identities_config, identity, mini_command

    folder = tmp_path_factory.mktemp("seaweedfs")
    access_key, secret_key = "test" + secrets.token_hex(8), secrets.token_urlsafe(24)
    config = folder / "identities.json"
    config.write_text(identities_config([identity("test", access_key, secret_key, None)]))
    ports = SeaweedPorts.pick()
    try:
        command = mini_command(folder / "data", ports, config, [])
    except MlrigError as error:
        pytest.skip(f"no SeaweedFS: {error}")
    (folder / "data").mkdir()
    server = S3Server(f"http://127.0.0.1:{ports.s3}", access_key, secret_key)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    pid_file, log_file = folder / "weed.pid", folder / "weed.log"
    pid = start_detached(command, env=env, log_file=log_file, pid_file=pid_file, cwd=folder)
    try:
        wait_until(lambda: s3_answers(server), 60, "SeaweedFS", log_file, pid)
        yield server
    finally:
        stop_process(pid_file)


def s3_answers(server: S3Server) -> bool:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def glue_pod(
    template: dict[str, Any], task_id: str, image: str, container_arguments: list[str]
) -> dict[str, Any]:
    """The pod clearml-agent's k8s glue makes for a task, by its own code (no server, no kubectl).

    As the chart's glue runs it: K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT=1, so the pod runs the step
    image's entrypoint with CLEARML_TASK_ID set. Only the rendering is called: `kubectl apply`
    is replaced by `cat`, which prints the YAML the glue would apply.
    """
    import logging

    from clearml_agent.glue.k8s import K8sIntegration

    class RenderingGlue(K8sIntegration):  # type: ignore[misc]
        KUBECTL_APPLY_CMD = "cat"

        def __init__(self) -> None:  # what _kubectl_apply reads; the real one logs in first
            self.kind, self.using_jobs, self._docker_force_pull = "pod", False, False
            self.log, self.worker_id = logging.getLogger("glue"), "mlrig-test-glue"

    os.environ["K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT"] = "1"
    try:
        output, error, _ = RenderingGlue()._kubectl_apply(
            pod_name=f"clearml-id-{task_id}",
            clearml_conf_create_script=[],
            docker_image=image,
            docker_args=container_arguments,
            docker_bash=None,
            labels=["ai.clearml/queue=default"],
            queue="queue-id",
            task_id=task_id,
            namespace="mlrig",
            template=json.loads(json.dumps(template)),
            task_token=None,
        )
    finally:
        del os.environ["K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT"]
    assert not error, error
    return yaml.safe_load(output)
