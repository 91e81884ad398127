"""What `mlrig run` prints of a stage running for a while: one line on stderr per heartbeat the
scheduler hands over, none with --json (stdout stays the summary alone)."""

from __future__ import annotations

from typing import Any

import pytest

from mlrig.cli import run as run_command
from mlrig.progress import Heartbeat

BEAT = Heartbeat("train@knn", "fitting knn on 20000 rows [k=15]", 20, 19, 812)


def test_a_progress_line_names_the_stage_its_time_phase_cpu_and_rss() -> None:
    line = run_command.progress_line("train@knn", 20.4, BEAT)

    assert line == "… train@knn 20 s: fitting knn on 20000 rows [k=15] (19 s CPU, 812 MB)"


@pytest.mark.parametrize("quiet", [False, True])
def test_the_run_prints_progress_on_stderr_unless_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, quiet: bool
) -> None:
    def pipeline(settings: Any, overrides: list[str], **options: Any) -> str:
        options["on_progress"]("train@knn", 20.0, BEAT)  # as the scheduler calls it
        return "summary"

    monkeypatch.setattr("mlrig.run.run_pipeline", pipeline)
    # the console's own stream (`_file`: None, so sys.stderr when it prints, which capsys
    # captures): the `file` property would read the capture's stream and be set back to it,
    # closed after the test, for every later test of this process
    monkeypatch.setattr(run_command.console, "_file", None)

    summary = run_command.run_with_progress(
        None,
        [],
        False,
        False,
        run_command.Executor.local,
        2,
        quiet,  # type: ignore[arg-type]
    )

    captured = capsys.readouterr()
    assert summary == "summary" and captured.out == ""
    shown = "… train@knn 20 s: fitting knn on 20000 rows [k=15] (19 s CPU, 812 MB)"
    assert (shown in captured.err) is not quiet
