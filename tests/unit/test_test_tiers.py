"""`make test` on a machine that lacks a tier's tools: it passes, and its last lines name each
skipped tier and the one command that installs what it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.project import REPO_ROOT


def test_the_summary_names_each_skipped_tier_and_the_install_command(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "conftest.py", tmp_path / "conftest.py")
    tests = {
        "tests/containers/test_images.py": 'pytest.skip("no container engine: podman")',
        "tests/ci/test_gitlab_ci.py": 'pytest.skip("no local registry: docker-registry")',
        "tests/live/test_clearml_live.py": 'pytest.skip("needs CLEARML_API_HOST")',
        "tests/unit/test_fine.py": "pass",
    }
    for path, body in tests.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        marker = "@pytest.mark.live\n" if "live" in path else ""
        (tmp_path / path).write_text(f"import pytest\n\n\n{marker}def test_it():\n    {body}\n")
    environment = {k: v for k, v in os.environ.items() if k != "MLRIG_REQUIRE_SERVICES"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    last_lines = result.stdout.splitlines()[-5:]
    assert any(line.startswith("ci: 1 test(s) skipped: no local registry") for line in last_lines)
    assert any(
        line.startswith("containers: 1 test(s) skipped: no container") for line in last_lines
    )
    assert not any(line.startswith("live") for line in last_lines)
    assert any("sudo make system-packages" in line for line in last_lines)


def test_the_critical_path_runs_at_a_higher_priority_where_the_machine_lets_it() -> None:
    import os

    from tests.support.scheduling import CRITICAL_NICE, on_the_critical_path, priority_of_tier

    assert priority_of_tier("containers") == CRITICAL_NICE < 0 == priority_of_tier("e2e")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with on_the_critical_path():
        inside = os.getpriority(os.PRIO_PROCESS, 0)
    assert inside == (CRITICAL_NICE if os.geteuid() == 0 else before)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
