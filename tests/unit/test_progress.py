"""What a running stage says about itself: its process title, its own CPU time and peak RSS
(counted for the forked step, not the warm server), and a heartbeat naming its phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlrig import progress
from mlrig.executors.warm import SOCKET_VARIABLE, warm_server

#: a step that names what it does, burns about a second of CPU, touches ~300 MB and reports
#: its own process title and name as `ps` and `top` read them
PROBE = """
import time

import typer

from mlrig.progress import phase

app = typer.Typer()


@app.command()
def main() -> None:
    phase("burning")
    held = bytearray(300 * 1024 * 1024)
    for page in range(0, len(held), 4096):
        held[page] = 1
    end = time.process_time() + 1.0
    while time.process_time() < end:
        pass
    cmdline = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode().strip()
    comm = open("/proc/self/comm").read().strip()
    print(cmdline, "|", comm)
"""


def run_probe(
    workdir: Path, socket_path: str | None, usage: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(workdir),
        progress.STAGE_VARIABLE: "train@probe",
        progress.USAGE_VARIABLE: str(usage),
    }
    env.pop(SOCKET_VARIABLE, None)
    if socket_path:
        env[SOCKET_VARIABLE] = socket_path
    return subprocess.run(
        [sys.executable, "-c", "from mlrig.executors.warm import run_step; run_step('probe')"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict]]:
    """The probe run through the warm server and without it: its output and usage file."""
    workdir = tmp_path_factory.mktemp("probe")
    (workdir / "probe.py").write_text(PROBE)
    results = {}
    with warm_server(workdir, dict(os.environ), workdir / "warm.log") as socket_path:
        deadline = time.monotonic() + 120
        while not Path(socket_path).exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the server imports the steps' libraries first
        for name, path in (("warm", socket_path), ("cold", None)):
            usage = workdir / f"{name}.usage.json"
            result = run_probe(workdir, path, usage)
            assert result.returncode == 0, result.stderr
            results[name] = (result.stdout.strip(), json.loads(usage.read_text()))
    return results


@pytest.mark.parametrize("where", ["warm", "cold"])
def test_the_stage_process_is_named_after_its_stage(probed: dict, where: str) -> None:
    output, _ = probed[where]

    cmdline, comm = output.rsplit("|", 1)
    assert cmdline.strip() == "mlrig stage train@probe"  # what ps shows
    assert comm.strip() == "train@probe"  # what top shows


@pytest.mark.parametrize("where", ["warm", "cold"])
def test_the_usage_is_the_stage_process_own(probed: dict, where: str) -> None:
    _, usage = probed[where]

    assert usage["peak_rss_mb"] >= 300  # the 300 MB it touched
    assert usage["cpu_seconds"] >= 0.9  # the second it burned
    # in the warm server's fork, the server's own imports (many seconds of CPU) are not counted
    if where == "warm":
        assert usage["cpu_seconds"] < 4.0


def test_the_warm_server_is_named_too(tmp_path: Path) -> None:
    with warm_server(tmp_path, dict(os.environ), tmp_path / "warm.log") as socket_path:
        deadline = time.monotonic() + 120
        while not Path(socket_path).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        listing = subprocess.run(
            ["ps", "-eo", "args="], capture_output=True, text=True, check=True
        ).stdout
    assert "mlrig warm server (forks the steps)" in listing


def test_the_heartbeat_names_the_stage_and_its_phase(capsys: pytest.CaptureFixture) -> None:
    with progress.heartbeat("evaluate@knn", interval=0.2):
        progress.phase("predicting 250000 test rows")
        time.sleep(0.5)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2  # a line per interval
    assert lines[-1].startswith("evaluate@knn: predicting 250000 test rows (")
    assert "s CPU, peak" in lines[-1]


def test_a_short_stage_writes_no_heartbeat(capsys: pytest.CaptureFixture) -> None:
    with progress.heartbeat("split"):
        progress.phase("writing")

    assert capsys.readouterr().err == ""


def test_the_stage_name_without_the_executor_comes_from_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(progress.STAGE_VARIABLE, raising=False)

    assert progress.stage_name("steps.train.train", ["x", "--experiment", "knn"]) == "train@knn"
    assert progress.stage_name("steps.split.split", ["x", "--out-dir", "o"]) == "split"
    monkeypatch.setenv(progress.STAGE_VARIABLE, "evaluate@rf")
    assert progress.stage_name("steps.evaluate.evaluate", []) == "evaluate@rf"


def test_usage_is_read_back_and_a_missing_file_is_none(tmp_path: Path) -> None:
    path = progress.usage_path(tmp_path / "run.log", "train@knn")
    path.parent.mkdir()
    progress.write_usage(progress.StageUsage(1.5, 300.0), {progress.USAGE_VARIABLE: str(path)})

    assert path.name == "train-knn.usage.json"
    assert progress.read_usage(path) == progress.StageUsage(1.5, 300.0)
    assert progress.read_usage(tmp_path / "none.json") is None


def test_a_heartbeat_line_is_read_back_and_other_lines_are_not(tmp_path: Path) -> None:
    line = "train@knn: fitting knn on 20000 rows (20 s, 19 s CPU, peak 812 MB)"
    beat = progress.read_heartbeat(line + "\n")

    assert beat == progress.Heartbeat("train@knn", "fitting knn on 20000 rows", 20, 19, 812)
    assert progress.read_heartbeat("Running stage 'train@knn':") is None
    log = tmp_path / "train-knn.log"
    log.write_text(
        f"{line}\nsplit: writing (10 s, 9 s CPU, peak 300 MB)\n"
        "train@knn: logging the model (30 s, 25 s CPU, peak 900 MB)\nsome output\n"
    )
    newest = progress.newest_heartbeat(log, "train@knn")
    assert newest is not None and newest.phase == "logging the model"  # its own, the last
    assert progress.newest_heartbeat(log, "evaluate@knn") is None
    assert progress.newest_heartbeat(tmp_path / "none.log", "train@knn") is None


def test_the_heartbeat_writes_what_it_reads(capsys: pytest.CaptureFixture) -> None:
    with progress.heartbeat("evaluate@knn", interval=0.2):
        progress.phase("predicting (250000 rows)")
        time.sleep(0.5)

    beat = progress.read_heartbeat(capsys.readouterr().err.splitlines()[-1])
    assert beat is not None and beat.phase == "predicting (250000 rows)"


def test_a_stage_whose_phase_is_none_says_nothing(capsys: pytest.CaptureFixture) -> None:
    with progress.heartbeat("stage", interval=0.1):
        progress.phase(None)  # a process it waits for says what the stage does
        time.sleep(0.35)

    assert capsys.readouterr().err == ""


def test_the_interval_comes_from_the_environment() -> None:
    assert progress.heartbeat_seconds({}) == 10.0
    assert progress.heartbeat_seconds({progress.HEARTBEAT_VARIABLE: "0.5"}) == 0.5
    assert progress.heartbeat_seconds({progress.HEARTBEAT_VARIABLE: "soon"}) == 10.0
    assert progress.heartbeat_seconds({progress.HEARTBEAT_VARIABLE: "0"}) == 10.0
