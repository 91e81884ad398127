""".gitlab-ci.yml: GitLab's schema, its rules, and its jobs run for real by gitlab-ci-local.

The build job pushes a step image to a real registry (Debian's docker-registry on loopback),
the data job runs the pipeline against the local stack, and the report job writes the merge
request note from two commits: main, and a branch that changes a param.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlrig.images.build import ImageBuild
from mlrig.images.engine import Engine
from mlrig.stacks.local.processes import free_port
from tests.support.project import REPO_ROOT
from tests.support.stack import Stack, start_stack

pytestmark = [pytest.mark.containers, pytest.mark.integration]

PIPELINE = REPO_ROOT / ".gitlab-ci.yml"
GITLAB_CI_LOCAL = REPO_ROOT / ".mlrig/tools/gitlab-ci-local/node_modules/.bin/gitlab-ci-local"
CHANGED_PARAM = "train.experiments.knn.params.n_neighbors=7"


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci"]
    return subprocess.run([*command, str(path)], capture_output=True, text=True)


def test_the_pipeline_passes_gitlabs_ci_schema(tmp_path: Path) -> None:
    """check-jsonschema's vendored copy of GitLab's CI schema; a misspelt keyword fails it."""
    result = check_jsonschema(PIPELINE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / ".gitlab-ci.yml"
    broken.write_text(PIPELINE.read_text().replace("needs: [lint]", "needz: [lint]"))
    assert check_jsonschema(broken).returncode != 0


@pytest.fixture(scope="session")
def gitlab_ci_local() -> Path:
    """gitlab-ci-local from .mlrig/tools; `make ci-tools` (npm) installs it when missing."""
    if not GITLAB_CI_LOCAL.exists():
        if shutil.which("npm") is None or shutil.which("rsync") is None:
            pytest.skip("gitlab-ci-local needs npm and rsync (apt-get install npm rsync)")
        installed = subprocess.run(
            ["make", "-C", str(REPO_ROOT), "ci-tools"], capture_output=True, text=True
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
    return GITLAB_CI_LOCAL


def variable_flags(variables: dict[str, str]) -> list[str]:
    return [flag for name, value in variables.items() for flag in ("--variable", f"{name}={value}")]


def jobs(gitlab_ci_local: Path, root: Path, **variables: str) -> list[str]:
    """The jobs a pipeline with these variables would have."""
    flags = variable_flags(variables)
    result = subprocess.run(
        [str(gitlab_ci_local), "--list-json", *flags], cwd=root, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [job["name"] for job in json.loads(result.stdout) if job["when"] != "never"]


@pytest.fixture(scope="module")
def project(step_images: tuple[Engine, list[ImageBuild]]) -> Iterator[Stack]:
    """A fresh copy with the local stack running, pushed to a bare `origin`, on branch main.

    Its wheelhouse is this checkout's, as the CI cache (keyed on uv.lock) restores it.
    """
    for stack in start_stack():
        (stack.root / ".mlrig").mkdir(exist_ok=True)
        (stack.root / ".mlrig/wheels").symlink_to(REPO_ROOT / ".mlrig/wheels")
        origin = stack.root.parent / f"{stack.root.name}-origin.git"
        for command in (
            ["git", "init", "-q", "--bare", str(origin)],
            ["git", "-C", str(stack.root), "branch", "-M", "main"],
            ["git", "-C", str(stack.root), "remote", "add", "origin", str(origin)],
            ["git", "-C", str(stack.root), "push", "-q", "origin", "main"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        yield stack
        shutil.rmtree(origin, ignore_errors=True)


def uv_cache() -> str:
    """This machine's uv cache: what a runner's cache (keyed on uv.lock) would restore."""
    found = subprocess.run(
        [str(Path(sys.executable).parent / "uv"), "cache", "dir"],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


def run_job(
    gitlab_ci_local: Path, stack: Stack, job: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    """One job, as a shell runner runs it, with the stack's settings as CI/CD variables."""
    settings = stack.client_env() | {
        "MLRIG_DVC_REMOTE_URL": "s3://mlrig-dvc",
        "UV_CACHE_DIR": uv_cache(),
        **variables,
    }
    settings.pop("MLRIG_DVC_REMOTE")  # the job sets up the remote from MLRIG_DVC_REMOTE_URL
    flags = variable_flags(settings)
    return subprocess.run(
        [str(gitlab_ci_local), "--shell-executor-no-image", "--no-color", job, *flags],
        cwd=stack.root,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_rules_make_the_jobs_each_pipeline_needs(gitlab_ci_local: Path, project: Stack) -> None:
    pushed = jobs(gitlab_ci_local, project.root)
    assert {"lint", "chart", "test", "build: [train]", "data"} <= set(pushed)
    assert "report" not in pushed  # only merge requests get a note
    assert "pipeline" not in pushed  # no ClearML server configured
    merge_request = jobs(gitlab_ci_local, project.root, CI_PIPELINE_SOURCE="merge_request_event")
    assert "report" in merge_request
    clearml = {"CLEARML_API_HOST": "http://clearml.invalid:8008", "CLEARML_QUEUE": "cpu"}
    assert "pipeline" in jobs(gitlab_ci_local, project.root, **clearml)
    assert "pipeline" not in jobs(gitlab_ci_local, project.root, CLEARML_QUEUE="cpu")


def test_the_lint_and_test_jobs_pass(gitlab_ci_local: Path, project: Stack) -> None:
    """The test job as it runs `make test`, here on one step's tests (PYTEST_ARGS)."""
    lint = run_job(gitlab_ci_local, project, "lint")
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-2000:]
    assert "All checks passed!" in lint.stdout
    test = run_job(
        gitlab_ci_local, project, "test", PYTEST_ARGS="steps/validate -p no:cacheprovider"
    )
    assert test.returncode == 0, test.stdout[-4000:] + test.stderr[-2000:]
    assert " passed" in test.stdout and "failed" not in test.stdout
    assert "tests/unit" not in test.stdout  # PYTEST_ARGS reached make: one step's tests ran


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """Debian's docker-registry (distribution) on loopback, its storage in a temp folder."""
    if shutil.which("docker-registry") is None:
        pytest.skip("no local registry: apt-get install docker-registry")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlrig-registry-") as storage:
        config = Path(storage) / "config.yml"
        config.write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {storage}/data\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        server = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            yield f"127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_the_build_job_pushes_a_step_image_once(
    gitlab_ci_local: Path, project: Stack, registry: str
) -> None:
    variables = {
        "CI_REGISTRY": registry,
        "CI_REGISTRY_IMAGE": f"{registry}/mlrig",
        "CI_REGISTRY_USER": "ci",
        "CI_REGISTRY_PASSWORD": "unused-by-this-registry",
        "MLRIG_REGISTRY_INSECURE": "1",
    }
    first = run_job(gitlab_ci_local, project, "build: [validate]", **variables)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "pushed" in first.stdout
    reference = json.loads((project.root / "images-validate.json").read_text())["validate"]
    assert reference.startswith(f"{registry}/mlrig/validate@sha256:")
    pulled = subprocess.run(
        ["podman", "pull", "--tls-verify=false", reference], capture_output=True, text=True
    )
    assert pulled.returncode == 0, pulled.stderr
    again = run_job(gitlab_ci_local, project, "build: [validate]", **variables)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "already in the registry" in again.stdout
    assert json.loads((project.root / "images-validate.json").read_text())["validate"] == reference


def test_data_and_report_jobs_note_a_merge_request(gitlab_ci_local: Path, project: Stack) -> None:
    """main's pipeline, then a branch changing a param: the note diffs the two."""
    data = run_job(gitlab_ci_local, project, "data")
    assert data.returncode == 0, data.stdout[-4000:] + data.stderr[-2000:]
    identity = ["-c", "user.name=ci", "-c", "user.email=ci@mlrig.invalid"]
    git = ["git", "-C", str(project.root), *identity]
    for command in (
        [*git, "commit", "-qam", "pipeline run on main"],
        [*git, "push", "-q", "origin", "main"],
        [*git, "checkout", "-qb", "knn-7"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    branch = run_job(gitlab_ci_local, project, "data", MLRIG_PARAMS=CHANGED_PARAM)
    assert branch.returncode == 0, branch.stdout[-4000:] + branch.stderr[-2000:]
    subprocess.run([*git, "commit", "-qam", "knn with 7 neighbours"], check=True)

    report = run_job(
        gitlab_ci_local,
        project,
        "report",
        CI_PIPELINE_SOURCE="merge_request_event",
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        CI_MERGE_REQUEST_IID="1",
    )
    assert report.returncode == 0, report.stdout[-4000:] + report.stderr[-2000:]
    assert "No MLRIG_GITLAB_TOKEN" in report.stdout
    note = (project.root / "reports/merge-request-note.md").read_text()
    params, metrics = note.split("### Params")[1].split("### Metrics")
    assert "n_neighbors" in params and "7" in params
    assert "evaluate/knn" in metrics.split("##")[0]  # only knn's metrics changed
    assert "## Decision" in note and "Why: " in note  # the report's champion decision
    assert project.client_env()["MLFLOW_TRACKING_PASSWORD"] not in report.stdout + note
