"""The warm step server: a step command handed over runs in a forked child, as itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mlrig.executors.warm import SOCKET_VARIABLE, warm_server

PROBE = """
import os
import sys

import typer

app = typer.Typer()


@app.command()
def main(word: str) -> None:
    print(os.getppid(), os.getcwd(), os.environ["PROBE_SETTING"], word)
    sys.stderr.write("to stderr\\n")
    raise typer.Exit(3)
"""


def run_probe(workdir: Path, socket_path: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROBE_SETTING": "from-the-command", "PYTHONPATH": str(workdir.parent)}
    env.pop(SOCKET_VARIABLE, None)
    if socket_path:
        env[SOCKET_VARIABLE] = socket_path
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlrig.executors.warm import run_step; run_step('probe')",
            "hello",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_step_runs_in_the_server_with_its_own_settings_and_exit_code(tmp_path: Path) -> None:
    project, workdir = tmp_path / "project", tmp_path / "project" / "elsewhere"
    workdir.mkdir(parents=True)
    (project / "probe.py").write_text(PROBE)
    with warm_server(project, dict(os.environ), tmp_path / "warm.log") as socket_path:
        deadline = time.monotonic() + 120
        while not Path(socket_path).exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the server imports the steps' libraries first
        warm = run_probe(workdir, socket_path)
    cold = run_probe(workdir, None)  # no server: the command runs the step itself

    for result in (warm, cold):
        assert result.returncode == 3, result.stderr
        _parent, cwd, setting, word = result.stdout.split()
        assert (cwd, setting, word) == (str(workdir), "from-the-command", "hello")
        assert "to stderr" in result.stderr
    warm_parent, cold_parent = int(warm.stdout.split()[0]), int(cold.stdout.split()[0])
    assert cold_parent == os.getpid()  # the command itself ran the step
    assert warm_parent != os.getpid()  # a child of the server ran it
    assert not Path(socket_path).exists()  # the server is gone with its socket


CLEARML_PROBE = """
from clearml.config import ConfigWrapper

def app() -> None:
    print("preloaded" if ConfigWrapper._config is not None else "not-preloaded")
"""


def test_steps_get_the_servers_clearml_configuration_only_with_its_settings(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "clearml_probe.py").write_text(CLEARML_PROBE)
    environment = {**os.environ, "PYTHONPATH": str(project), "MLRIG_PROJECT_DIR": str(project)}
    for name in [name for name in environment if name.startswith("CLEARML_")]:
        del environment[name]

    def probe(socket_path: str, extra: dict[str, str]) -> str:
        command = "from mlrig.executors.warm import run_step; run_step('clearml_probe')"
        result = subprocess.run(
            [sys.executable, "-c", command],
            cwd=project,
            env=environment | {SOCKET_VARIABLE: socket_path} | extra,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    with warm_server(project, environment, tmp_path / "warm.log") as socket_path:
        deadline = time.monotonic() + 120
        while not Path(socket_path).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        same = probe(socket_path, {})
        other = probe(socket_path, {"CLEARML_CONFIG_FILE": str(tmp_path / "other.conf")})
    assert (same, other) == ("preloaded", "not-preloaded")
