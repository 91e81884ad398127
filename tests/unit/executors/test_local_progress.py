"""What a run shows of its stages while they run: a stage of the local executor (a real
`dvc repro --single-item` of a real step command) that runs longer than the heartbeat interval
shows its newest heartbeat, about once per interval; a short stage shows none. The interval is
shortened (MLRIG_HEARTBEAT_SECONDS) so the test takes seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from mlrig.executors.local import LocalRun
from mlrig.executors.scheduler import schedule
from mlrig.progress import HEARTBEAT_VARIABLE, Heartbeat
from mlrig.settings import Settings

INTERVAL = 0.5
SLOW_SECONDS = 3.0

#: a step that names what it does, then sleeps for --seconds
PROBE = """
import time

import typer

from mlrig.progress import phase

app = typer.Typer()


@app.command()
def main(seconds: float = 0.0) -> None:
    phase(f"sleeping {seconds:.0f} s")
    time.sleep(seconds)
"""

STEP = "from mlrig.executors.warm import run_step; run_step('probe')"


def dvc_project(root: Path) -> None:
    """A DVC project (no git) with a slow and a fast stage, both the probe step."""
    (root / "probe.py").write_text(PROBE)
    command = f'{sys.executable} -c "{STEP}"'
    (root / "dvc.yaml").write_text(
        "stages:\n"
        f"  slow:\n    cmd: {command} --seconds {SLOW_SECONDS}\n"
        f"  fast:\n    cmd: {command} --seconds 0\n"
    )
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)


def test_a_long_stage_shows_its_heartbeat_and_a_short_one_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc_project(tmp_path)
    monkeypatch.setenv(HEARTBEAT_VARIABLE, str(INTERVAL))
    monkeypatch.delenv("MLRIG_WARM_SOCKET", raising=False)  # the step runs in its command
    graph: dict[str, set[str]] = {"slow": set(), "fast": set()}
    run = LocalRun(
        settings=Settings(project_dir=tmp_path),
        graph=graph,
        environment=dict(os.environ) | {"PYTHONPATH": str(tmp_path)},
        log_path=tmp_path / ".mlrig/logs/run.log",
        candidates=set(graph),
        forced=set(graph),
    )
    shown: list[tuple[str, float, Heartbeat, float]] = []
    started = time.monotonic()

    def on_progress(stage: str, seconds: float, beat: Heartbeat) -> None:
        shown.append((stage, seconds, beat, time.monotonic()))

    seconds = schedule(graph, run, jobs=2, on_stage=lambda stage: None, on_progress=on_progress)
    took = time.monotonic() - started

    assert set(seconds) == {"slow", "fast"}
    assert {stage for stage, *_ in shown} == {"slow"}  # the fast stage shows nothing
    assert len(shown) >= 2
    # what the step said it was doing, and what it cost so far
    assert all(beat.phase == "sleeping 3 s" and beat.stage == "slow" for _, _, beat, _ in shown)
    assert all(beat.peak_rss_mb > 0 for _, _, beat, _ in shown)
    # the stage's time since it started, growing; never more than a line per interval
    assert [seconds for _, seconds, _, _ in shown] == sorted(seconds for _, seconds, _, _ in shown)
    assert all(seconds >= INTERVAL for _, seconds, _, _ in shown)
    moments = [at for *_, at in shown]
    assert all(later - earlier >= INTERVAL * 0.9 for earlier, later in pairwise(moments))
    assert len(shown) <= took / INTERVAL + 1
