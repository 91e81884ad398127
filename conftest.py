"""Fixtures and hooks shared by the step tests (beside each step) and tests/; the helpers
they and the test modules import are in tests/support."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlrig.dvc.commands import NO_USAGE_REPORT
from mlrig.settings import Settings
from tests.support.mlflow_uris import mlflow_uris_kept
from tests.support.project import REPO_ROOT, TRACKING_VARIABLES
from tests.support.s3 import S3Server, s3_answers
from tests.support.scheduling import cpu_seconds, priority_of_tier, record_timeline, set_priority


@pytest.fixture(autouse=True, scope="module")
def mlflow_uris_kept_per_file() -> Iterator[None]:
    """What a file's fixtures set as MLflow's tracking or registry URI ends with the file."""
    with mlflow_uris_kept():
        yield


@pytest.fixture(autouse=True)
def mlflow_uris_kept_per_test() -> Iterator[None]:
    """What a test sets as MLflow's tracking or registry URI (`mlflow.set_tracking_uri`,
    mlrig's `setup_mlflow`) ends with it: in a test worker the next files run in this process,
    and MLflow's global would win over the MLFLOW_TRACKING_URI they set (issue 19)."""
    with mlflow_uris_kept():
        yield


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
    # set here so that what mlrig.tracking.step_run sets in os.environ is undone after the test
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
    # the dvc commands the tests type themselves (and the CI jobs they run) send DVC no usage
    # report either, as mlrig's own never do (mlrig.dvc.commands.dvc_environment): each would
    # start a detached process for it, about 1 s of CPU
    for name, value in (GIT_IDENTITY | NO_USAGE_REPORT).items():
        os.environ.setdefault(name, value)


def tier_of(nodeid: str) -> str:
    """The tier of a test: its folder under tests/ (`containers`, `chart`, ...), else `steps`."""
    parts = nodeid.split("/")
    return parts[1] if parts[0] == "tests" and len(parts) > 2 else "steps"


#: the order in which the test workers take the files (`make test` passes --no-loadscope-reorder,
#: without which xdist takes the files with the most tests first). xdist gives each of its 3
#: workers one file, then a second one each, then the next to whichever is done first. So: the
#: containers pipeline, the longest chain (it builds the step images, at a higher priority), on
#: the first worker; the two long files that need no image on the others meanwhile; then, queued
#: behind them, a short file for the first worker and the long files that wait for the images
#: for the others; then the other files of a minute or more, longest first (seconds of a CI
#: run, MLRIG_TEST_TIMELINE), so that none of them starts last; then the rest.
SCHEDULE = (
    "tests/containers/test_pipeline_in_containers.py",
    "tests/integration/test_stack.py",
    "tests/e2e/test_pipeline.py",
    "tests/integration/test_cli.py",
    "tests/chart/test_kube_play.py",
    "tests/ci/test_gitlab_ci.py",
    "tests/e2e/test_stopping.py",  # 445 s
    "tests/e2e/test_drift_and_reproduce.py",  # 353
    "tests/e2e/test_mixed_table.py",  # 201
    "tests/e2e/test_models_teams_bring.py",  # 151
    "tests/e2e/test_secrets.py",  # 131
    "steps/register/tests/test_register.py",  # 119
    "tests/e2e/test_executors.py",  # 119
    "tests/integration/test_serving.py",  # 109
    "tests/e2e/test_new_step.py",  # 91
    "tests/unit/executors/clearml/test_submission.py",  # 90
    "steps/register/tests/test_margin.py",  # 86
    "tests/unit/cli/test_clearml.py",  # 68
    "tests/containers/test_images.py",  # 51
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each test (its fixtures and what they start) at its tier's CPU priority."""
    set_priority(priority_of_tier(tier_of(item.nodeid)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Each test's span on its worker, in MLRIG_TEST_TIMELINE when set."""
    start, cpu = time.time(), cpu_seconds()
    yield
    record_timeline(item.nodeid, start, time.time(), cpu_seconds() - cpu)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests by file (SCHEDULE, then the rest); a file keeps its own order."""
    rank = {path: position for position, path in enumerate(SCHEDULE)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session (`weed mini` on free loopback ports, data in a temp
    folder), with one administrator identity: a wrong key or secret is refused."""
    from mlrig.errors import MlrigError
    from mlrig.stacks.local.processes import start_detached, stop_process, wait_until
    from mlrig.stacks.local.seaweedfs import SeaweedPorts, identities_config, identity, mini_command

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
