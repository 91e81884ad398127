"""Where a stage's time goes: marks from the host and the container make one timeline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlrig.executors.timeline import (
    BEGIN,
    Timeline,
    append_timeline,
    process_started,
    read_timelines,
)


def test_phases_last_from_the_mark_before_them_in_time_order(tmp_path: Path) -> None:
    host = Timeline({BEGIN: 100.0, "copy workspace": 100.5, "engine exit": 110.0})
    container = Timeline({"process start": 101.0, "run stage": 109.0})
    container.save(tmp_path / "stage.json")

    host.marks |= Timeline.load(tmp_path / "stage.json").marks

    assert host.phases() == {
        "copy workspace": 0.5,
        "process start": 0.5,
        "run stage": 8.0,
        "engine exit": 1.0,
    }
    assert Timeline.load(tmp_path / "absent.json").marks == {}


def test_a_run_keeps_one_line_per_stage(tmp_path: Path) -> None:
    path = tmp_path / "timelines.jsonl"
    append_timeline(path, "ingest", Timeline({BEGIN: 1.0, "run stage": 3.5}))
    append_timeline(path, "train@knn", Timeline({BEGIN: 2.0, "run stage": 2.25}))

    assert read_timelines(path) == {"ingest": {"run stage": 2.5}, "train@knn": {"run stage": 0.25}}
    assert read_timelines(tmp_path / "none.jsonl") == {}


def test_a_process_knows_when_it_started() -> None:
    before = time.time()
    probe = "from mlrig.executors.timeline import process_started; print(process_started())"
    started = float(
        subprocess.run(
            [sys.executable, "-c", f"import time; time.sleep(0.5); {probe}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # it started before its half-second sleep, not when it asked
    assert before - 0.05 <= started <= before + 0.4
    assert process_started() <= time.time()
