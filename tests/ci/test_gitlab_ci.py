""".gitlab-ci.yml: GitLab's schema, its rules, and its jobs run for real by gitlab-ci-local.

The rules are read for each kind of pipeline (merge request, default branch, tag) from a clone.
The build job pushes a step image to a real registry (Debian's docker-registry on loopback): a
merge request under its own path, the protected default branch under the trusted one, whose
digest the pipeline job runs by. The data job runs the pipeline against the local stack, and the
report job writes the merge request note from two commits: main, and a branch that changes a
param, its jobs with the merge request's own credentials.

What only GitLab itself can show: that protected variables stay out of merge request pipelines,
that the registry refuses a developer's push to the protected path, and the package uploads.
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

from mlrig.executors.clearml.compile import PipelineDescription
from mlrig.images.build import ImageBuild, step_names
from mlrig.images.engine import Engine
from mlrig.images.registry import registry_tags
from mlrig.stacks.local.processes import free_port
from tests.support.project import FEW_EXPERIMENTS, REPO_ROOT, copy_repository
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


#: the variables of each kind of pipeline, as GitLab sets them (gitlab-ci-local's own default is
#: a push to an unprotected branch; it sets CI_COMMIT_BRANCH always, GitLab not in merge request
#: and tag pipelines)
MAIN = {"CI_COMMIT_REF_PROTECTED": "true"}
MERGE_REQUEST = {
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_COMMIT_BRANCH": "",
}
TAG = {"CI_COMMIT_TAG": "v1.2.3", "CI_COMMIT_REF_PROTECTED": "true", "CI_COMMIT_BRANCH": ""}
CLEARML = {"CLEARML_API_HOST": "http://clearml.invalid:8008", "CLEARML_QUEUE": "cpu"}
SERVING = {"KUBECONFIG": "/dev/null", "MLRIG_SERVING_DEPLOYMENT": "mlrig-serving"}


def jobs(gitlab_ci_local: Path, root: Path, **variables: str) -> list[str]:
    """The jobs a pipeline with these variables would have."""
    flags = variable_flags(variables)
    result = subprocess.run(
        [str(gitlab_ci_local), "--list-json", *flags], cwd=root, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [job["name"] for job in json.loads(result.stdout) if job["when"] != "never"]


def push_to_origin(root: Path) -> Path:
    """A bare `origin` with the checkout's branch as main (rules:changes compare with it)."""
    origin = root.parent / f"{root.name}-origin.git"
    for command in (
        ["git", "init", "-q", "--bare", str(origin)],
        ["git", "-C", str(root), "branch", "-M", "main"],
        ["git", "-C", str(root), "remote", "add", "origin", str(origin)],
        ["git", "-C", str(root), "push", "-q", "origin", "main"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    return origin


IDENTITY = ["-c", "user.name=ci", "-c", "user.email=ci@mlrig.invalid"]


def commit_on_branch(root: Path, branch: str, path: str, line: str) -> None:
    """A branch off main whose one commit adds `line` to `path`."""
    git = ["git", "-C", str(root), *IDENTITY]
    subprocess.run([*git, "checkout", "-qb", branch, "main"], check=True, capture_output=True)
    with (root / path).open("a") as file:
        file.write(line)
    subprocess.run([*git, "commit", "-qam", f"change {path}"], check=True, capture_output=True)


def back_to_main(root: Path) -> None:
    subprocess.run(["git", "-C", str(root), "checkout", "-q", "main"], check=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh clone of the repository on main, with its `origin`: enough to read the rules."""
    root = tmp_path_factory.mktemp("clone") / "project"
    copy_repository(root, FEW_EXPERIMENTS)
    push_to_origin(root)
    yield root


def test_each_kind_of_pipeline_gets_its_jobs(gitlab_ci_local: Path, clone: Path) -> None:
    builds = {f"build: [{step}]" for step in step_names(clone)}
    every = {"lint", "chart", "test", "data", "pipeline", "deploy", "report", "drift", "release"}
    every |= builds

    def made(**variables: str) -> set[str]:
        names = set(jobs(gitlab_ci_local, clone, **variables))
        assert names <= every, names - every
        return names

    # an unprotected branch pushes nothing, runs nothing on the cluster
    assert made(**CLEARML) == {"lint", "test", "data"}
    # the protected default branch: every image to the trusted path, then the cluster by digest
    assert made(**MAIN, **CLEARML) == {"lint", "test", "data", "pipeline"} | builds
    assert made(**MAIN) == {"lint", "test", "data"} | builds  # no ClearML server: no pipeline
    # a serving Deployment to roll out: the deploy job, after the pipeline job where there is one
    assert (
        made(**MAIN, **CLEARML, **SERVING)
        == {"lint", "test", "data", "pipeline", "deploy"} | builds
    )
    assert made(**MAIN, **SERVING) == {"lint", "test", "data", "deploy"} | builds
    assert made(**SERVING) == {"lint", "test", "data"}  # never from an unprotected branch
    assert "deploy" not in made(**MERGE_REQUEST, **CLEARML, **SERVING)
    # a merge request changing no image or chart input: no build, no chart, never the cluster
    assert made(**MERGE_REQUEST, **CLEARML) == {"lint", "test", "data", "report"}
    # a protected tag: the chart checked and packaged, the images' digests published
    assert made(**TAG, **CLEARML) == {"lint", "chart", "test", "data", "release"} | builds
    unprotected_tag = TAG | {"CI_COMMIT_REF_PROTECTED": "false"}
    assert made(**unprotected_tag) == {"lint", "chart", "test", "data"}
    # a schedule with new data to watch: the drift check; without, none
    assert "drift" in made(CI_PIPELINE_SOURCE="schedule", MLRIG_DRIFT_DATA="data/new.csv")
    assert "drift" not in made(CI_PIPELINE_SOURCE="schedule")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("docs/index.md", set()),
        ("helm/mlrig/values.yaml", {"chart"}),
        ("src/mlrig/__init__.py", {"build: [train]"}),
        ("uv.lock", {"build: [train]"}),
    ],
)
def test_a_merge_request_builds_and_checks_only_what_it_changes(
    gitlab_ci_local: Path, clone: Path, path: str, expected: set[str]
) -> None:
    commit_on_branch(clone, f"change-{Path(path).stem}", path, "\n# a change\n")
    try:
        made = set(jobs(gitlab_ci_local, clone, **MERGE_REQUEST))
    finally:
        back_to_main(clone)
    assert {"chart", "build: [train]"} & made == expected


@pytest.fixture(scope="module")
def project(step_images: tuple[Engine, list[ImageBuild]]) -> Iterator[Stack]:
    """A fresh copy with the local stack running, pushed to a bare `origin`, on branch main.

    Its wheelhouse is this checkout's, as the CI cache (keyed on uv.lock) restores it.
    """
    for stack in start_stack():
        (stack.root / ".mlrig").mkdir(exist_ok=True)
        (stack.root / ".mlrig/wheels").symlink_to(REPO_ROOT / ".mlrig/wheels")
        origin = push_to_origin(stack.root)
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


def registry_variables(registry: str) -> dict[str, str]:
    return {
        "CI_REGISTRY": registry,
        "CI_REGISTRY_IMAGE": f"{registry}/mlrig",
        "CI_REGISTRY_USER": "ci",
        "CI_REGISTRY_PASSWORD": "unused-by-this-registry",
        "MLRIG_REGISTRY_INSECURE": "1",
    }


def handed_on(project: Stack, step: str) -> str:
    """The image the build job's digest file hands on."""
    return str(json.loads((project.root / f"images-{step}.json").read_text())[step])


def test_a_merge_request_never_pushes_to_the_trusted_path(
    gitlab_ci_local: Path, project: Stack, registry: str
) -> None:
    """Its build job pushes under the merge request's own path; the glue trusts none of it."""
    # a merge request changing the CI file: an image input, not a content tag's
    commit_on_branch(project.root, "mr-7", ".gitlab-ci.yml", "# reviewed\n")
    try:
        built = run_job(
            gitlab_ci_local, project, "build: [validate]", **MERGE_REQUEST,
            **registry_variables(registry),
        )  # fmt: skip
    finally:
        back_to_main(project.root)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
    assert handed_on(project, "validate").startswith(f"{registry}/mlrig/mr-7/validate@sha256:")
    assert registry_tags(f"{registry}/mlrig/steps/validate", tls_verify=False) == set()


def test_main_pushes_to_the_trusted_path_once_and_hands_the_digest_on(
    gitlab_ci_local: Path, project: Stack, registry: str
) -> None:
    variables = MAIN | registry_variables(registry)
    first = run_job(gitlab_ci_local, project, "build: [validate]", **variables)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "pushed" in first.stdout
    reference = handed_on(project, "validate")
    assert reference.startswith(f"{registry}/mlrig/steps/validate@sha256:")
    pulled = subprocess.run(
        ["podman", "pull", "--tls-verify=false", reference], capture_output=True, text=True
    )
    assert pulled.returncode == 0, pulled.stderr
    again = run_job(gitlab_ci_local, project, "build: [validate]", **variables)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "already in the registry" in again.stdout
    assert handed_on(project, "validate") == reference


def test_the_pipeline_job_runs_only_the_digests_handed_on(
    gitlab_ci_local: Path, project: Stack, registry: str
) -> None:
    """What main's pipeline job submits: each step by the digest its build job handed on (the
    other steps' files stand in for their build jobs). No ClearML server runs here: the job
    keeps the pipeline it would submit, then stops at the submission."""
    validate = handed_on(project, "validate")  # the previous test's build job's
    others = {
        step: f"{registry}/mlrig/steps/{step}@sha256:{'0' * 64}"
        for step in step_names(project.root)
        if step != "validate"
    }
    for step, reference in others.items():
        (project.root / f"images-{step}.json").write_text(json.dumps({step: reference}))
    try:
        job = run_job(
            gitlab_ci_local, project, "pipeline", **MAIN, **CLEARML, CLEARML_OFFLINE_MODE="1"
        )
    finally:
        for step in others:
            (project.root / f"images-{step}.json").unlink()
    assert job.returncode != 0  # no server to submit to
    # the job's own stderr is gitlab-ci-local's, each line prefixed with the job's name
    output = (job.stdout + job.stderr).splitlines()
    log = " ".join(line.split(" > ", 1)[-1] for line in output)
    assert "needs a ClearML server" in log  # the submission, refused: no server here
    compiled = PipelineDescription.model_validate_json(
        (project.root / "clearml-pipeline.json").read_text()
    )
    images = {step.step: step.image for step in compiled.steps}
    assert images == others | {"validate": validate}  # by digest, as handed on: no local tag


def test_data_and_report_jobs_note_a_merge_request(gitlab_ci_local: Path, project: Stack) -> None:
    """main's pipeline, then a merge request changing a param: the note diffs the two. The merge
    request's jobs use its own credential set (MLRIG_MR_*), not the main ones."""
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
    # the merge request's own credentials are the stack's; the main ones, which a merge request
    # never gets, are wrong here: the jobs pass only with the former
    stack = project.client_env()
    merge_request = {
        **MERGE_REQUEST,
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
        "MLRIG_MR_AWS_ACCESS_KEY_ID": stack["AWS_ACCESS_KEY_ID"],
        "MLRIG_MR_AWS_SECRET_ACCESS_KEY": stack["AWS_SECRET_ACCESS_KEY"],
        "MLRIG_MR_MLFLOW_TRACKING_USERNAME": stack["MLFLOW_TRACKING_USERNAME"],
        "MLRIG_MR_MLFLOW_TRACKING_PASSWORD": stack["MLFLOW_TRACKING_PASSWORD"],
        "AWS_SECRET_ACCESS_KEY": "main-credentials-not-for-merge-requests",
        "MLFLOW_TRACKING_PASSWORD": "main-credentials-not-for-merge-requests",
    }
    branch = run_job(gitlab_ci_local, project, "data", MLRIG_PARAMS=CHANGED_PARAM, **merge_request)
    assert branch.returncode == 0, branch.stdout[-4000:] + branch.stderr[-2000:]
    assert "Merge request: the MLRIG_MR_* credentials" in branch.stdout
    subprocess.run([*git, "commit", "-qam", "knn with 7 neighbours"], check=True)

    report = run_job(gitlab_ci_local, project, "report", **merge_request)
    assert report.returncode == 0, report.stdout[-4000:] + report.stderr[-2000:]
    assert "No MLRIG_GITLAB_TOKEN" in report.stdout
    note = (project.root / "reports/merge-request-note.md").read_text()
    params, metrics = note.split("### Params")[1].split("### Metrics")
    assert "n_neighbors" in params and "7" in params
    assert "evaluate/knn" in metrics.split("##")[0]  # only knn's metrics changed
    assert "## Decision" in note and "Why: " in note  # the report's champion decision
    assert project.client_env()["MLFLOW_TRACKING_PASSWORD"] not in report.stdout + note
