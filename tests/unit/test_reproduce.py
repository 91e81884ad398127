"""`mlrig reproduce`'s checks before anything runs: the model URI, the commit link, the verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlrig.errors import EXIT_BAD_INPUT, MlrigError
from mlrig.reproduce import Difference, Link, Reproduction, commit_link, tolerance_of
from mlrig.tracking.registered import parse_model_uri

IDENTITY = ["-c", "user.name=test", "-c", "user.email=test@mlrig.invalid"]


def test_a_model_uri_names_a_version_or_an_alias() -> None:
    assert parse_model_uri("models:/mlrig-wine/3") == ("mlrig-wine", "3", None)
    assert parse_model_uri("models:/mlrig-wine@champion") == ("mlrig-wine", None, "champion")


@pytest.mark.parametrize("uri", ["mlrig-wine", "models:/mlrig-wine", "models:/a/b/c", "runs:/x/m"])
def test_a_malformed_model_uri_is_refused_with_the_forms_it_takes(uri: str) -> None:
    with pytest.raises(MlrigError, match=r"write models:/<name>/<version>") as raised:
        parse_model_uri(uri)
    assert raised.value.exit_code == EXIT_BAD_INPUT


def git_repository(root: Path) -> str:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "file.txt").write_text("one\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *IDENTITY, "commit", "-qm", "one"], cwd=root, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return head.stdout.strip()


def test_the_commit_link_holds_is_dirty_or_is_missing(tmp_path: Path) -> None:
    commit = git_repository(tmp_path)

    assert commit_link(tmp_path, commit) == (
        Link(name="commit", recorded=commit, state="ok"),
        commit,
    )
    dirty, base = commit_link(tmp_path, f"{commit}-dirty")
    assert (dirty.state, base) == ("differs", commit)
    assert "uncommitted changes" in dirty.note
    absent, none = commit_link(tmp_path, "0" * 40)
    assert (absent.state, none) == ("missing", None)
    assert "000000000000 is not in this repository" in absent.note
    assert commit_link(tmp_path, "unknown")[0].state == "missing"
    assert commit_link(tmp_path, None)[0].state == "missing"


def test_reproduced_needs_every_link_and_every_comparison() -> None:
    links = [
        Link(name="commit", recorded="c", state="ok"),
        Link(name="image", recorded="i", state="not used"),
    ]
    equal = Difference(what="f1", registered="0.9", reproduced="0.9", equal=True)
    unequal = Difference(what="f1", registered="0.9", reproduced="0.8", equal=False)

    assert Reproduction(
        model="m", experiment="e", tolerance=0, links=links, compared=[equal]
    ).reproduced
    assert not Reproduction(
        model="m", experiment="e", tolerance=0, links=links, compared=[unequal]
    ).reproduced
    assert not Reproduction(model="m", experiment="e", tolerance=0, links=links).reproduced
    missing = [*links, Link(name="data", recorded=None, state="missing")]
    assert not Reproduction(
        model="m", experiment="e", tolerance=0, links=missing, compared=[equal]
    ).reproduced


def test_the_tolerance_is_exact_for_sklearn_and_looser_for_threaded_boosting() -> None:
    assert tolerance_of("random_forest", None) == 1e-9
    assert tolerance_of("xgboost", None) == 1e-6
    assert tolerance_of("xgboost", 0.01) == 0.01


def test_the_command_refuses_a_malformed_uri_in_one_line_with_exit_2() -> None:
    from typer.testing import CliRunner

    from mlrig.cli import app

    result = CliRunner().invoke(app, ["reproduce", "mlrig-wine"])

    assert result.exit_code == EXIT_BAD_INPUT
    assert "'mlrig-wine' names no registered model version" in result.output
    assert "Traceback" not in result.output
