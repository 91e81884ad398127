"""dvc run the ways mlrig.dvc.commands documents, in a throwaway DVC project: a run's commands in a
process group of their own (a signal stops them with what they started), a short query in
mlrig's own, and a stage container's commands in its own process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mlrig.dvc.commands import dvc_in_process, query_dvc, run_dvc, run_dvc_logged
from mlrig.errors import MlrigError
from tests.support.dvc_project import make_dvc_project

#: a stage that records the session its command ran in
SESSION_STAGE = {
    "cmd": "python -c \"import os; open('session.txt', 'w').write(str(os.getsid(0)))\"",
    "outs": ["session.txt"],
}
FAILING_STAGE = {"cmd": "echo breaking && exit 3", "outs": ["never.txt"]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_dvc_project(tmp_path / "project")
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    stages |= {"session": SESSION_STAGE, "failing": FAILING_STAGE}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    return root


def session_of_stage(root: Path) -> int:
    return int((root / "session.txt").read_text())


def test_a_stage_of_a_run_is_its_own_process_group(project: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "session.log"
    code = run_dvc_logged(["repro", "session"], project, dict(os.environ), log_path)
    assert code == 0
    assert "Running stage 'session'" in log_path.read_text()
    assert session_of_stage(project) != os.getsid(0)  # a signal to the run's groups stops it


def test_a_pipeline_command_reports_and_times_its_stages(project: Path, tmp_path: Path) -> None:
    seen: list[str] = []
    timed = run_dvc(
        ["repro", "session"], project, dict(os.environ), tmp_path / "r.log", seen.append
    )
    assert seen == ["session"] and set(timed) == {"session"}
    assert session_of_stage(project) != os.getsid(0)


def test_a_failing_pipeline_command_names_the_stage_and_shows_its_log(
    project: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "failing.log"
    with pytest.raises(MlrigError) as raised:
        run_dvc(["repro", "failing"], project, dict(os.environ), log_path, lambda _: None)
    message = str(raised.value)
    assert message.startswith("The pipeline failed in stage 'failing' (dvc exited with ")
    assert f"Full log: {log_path}" in message and "  | breaking" in message
    assert run_dvc_logged(["repro", "failing"], project, dict(os.environ), log_path) != 0


def test_a_short_query_stays_in_mlrigs_own_session(project: Path) -> None:
    result = query_dvc(["repro", "session"], project)
    assert result.returncode == 0, result.stderr
    assert session_of_stage(project) == os.getsid(0)  # a Ctrl-C reaches it with mlrig
    failed = query_dvc(["remote", "modify", "--local", "no-such-remote", "url", "x"], project)
    assert failed.returncode != 0 and "no-such-remote" in failed.stderr


def test_a_stage_containers_commands_run_in_its_own_process(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)  # as a container runs in its workspace
    assert dvc_in_process("repro", "session") == 0
    assert session_of_stage(project) == os.getsid(0)
    assert dvc_in_process("repro", "failing") != 0


def test_mlrigs_dvc_commands_send_dvc_no_usage_report(project: Path, tmp_path: Path) -> None:
    """DVC would start a detached process per command to send one (about 1 s of CPU)."""
    user_environment = {k: v for k, v in os.environ.items() if k != "DVC_NO_ANALYTICS"}
    log_path = tmp_path / "status.log"
    assert run_dvc_logged(["status", "-v"], project, user_environment, log_path) == 0
    log = log_path.read_text()
    assert "Analytics is disabled." in log and "daemon" not in log, log
