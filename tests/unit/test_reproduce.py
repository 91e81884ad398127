"""`mlrig reproduce`'s checks before anything runs: the model URI, the commit link, the verdict."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

from mlrig.errors import EXIT_BAD_INPUT, MlrigError
from mlrig.images.engine import engine_if_any
from mlrig.reproduce import (
    Difference,
    Link,
    Reproduction,
    choose_image,
    commit_link,
    tolerance_of,
)
from mlrig.settings import Settings
from mlrig.tracking.registered import ModelLineage, parse_model_uri
from tests.support.project import REPO_ROOT

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
        Link(name="image", recorded="i", state="not checked"),
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


# where the stages run again: the decision, with the real engine detection of this machine


def lineage_with(image: str | None, evaluate_image: str | None = None) -> ModelLineage:
    return ModelLineage(
        name="mlrig-wine",
        version="1",
        run_id="r",
        model_uri="models:/mlrig-wine/1",
        experiment="linear",
        family="linear",
        data_md5="d",
        commit="c",
        image=image,
        evaluate_image=evaluate_image,
    )


@functools.cache  # the engine lists its images slowly on a busy machine: once per module
def a_local_image() -> str:
    """An image this machine's engine has (a step image where the image tier built them)."""
    settings = Settings(project_dir=REPO_ROOT)
    engine = engine_if_any(settings)
    if engine is None:
        pytest.skip("no container engine here")
    listing = subprocess.run(
        engine.command("images", "--format", "{{.Repository}}:{{.Tag}}"),
        capture_output=True,
        text=True,
    )
    images = [line for line in listing.stdout.split() if "<none>" not in line]
    if not images:
        pytest.skip(f"{engine.name} has no image here")
    return images[0]


def test_no_recorded_image_runs_locally_and_the_link_holds() -> None:
    choice = choose_image(Settings(project_dir=REPO_ROOT), lineage_with(None), local=False)

    assert (choice.in_image, choice.link.state, choice.notice) == (False, "ok", None)


def test_local_runs_here_and_says_the_image_is_not_checked() -> None:
    image = a_local_image()
    choice = choose_image(Settings(project_dir=REPO_ROOT), lineage_with(image, image), local=True)

    assert not choice.in_image
    assert (choice.link.state, choice.link.recorded) == ("not checked", image)
    assert choice.notice == (
        f"The recorded image {image} is not used (--local: the stages ran locally, with this "
        "checkout's libraries)."
    )


def test_a_present_image_with_an_engine_runs_the_stages_in_it() -> None:
    image = a_local_image()
    choice = choose_image(Settings(project_dir=REPO_ROOT), lineage_with(image, image), local=False)

    assert choice.in_image and choice.notice is None
    assert choice.images == {"train": image, "evaluate": image}
    assert choice.link.state == "ok"


def test_without_an_engine_the_stages_run_here_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor podman is found
    monkeypatch.delenv("MLRIG_CONTAINER_ENGINE", raising=False)
    image = "localhost/mlrig/train:0123456789abcdef"
    choice = choose_image(Settings(project_dir=REPO_ROOT), lineage_with(image, image), local=False)

    assert not choice.in_image
    assert choice.link.state == "not checked"
    assert choice.notice is not None and "\n" not in choice.notice
    assert "no container engine (No container engine: neither a running docker nor podman" in (
        choice.notice
    )


def test_an_image_the_engine_lacks_and_cannot_pull_runs_here_saying_why() -> None:
    present = a_local_image()
    absent = "localhost/mlrig/train:00000000000000ff"
    choice = choose_image(
        Settings(project_dir=REPO_ROOT), lineage_with(absent, present), local=False
    )

    assert not choice.in_image
    assert choice.link.state == "not checked"
    assert f"{absent} is not here and was not pulled: a localhost/ image is built" in (
        choice.link.note
    )


def test_a_run_without_evaluate_s_image_runs_here() -> None:
    image = a_local_image()
    choice = choose_image(Settings(project_dir=REPO_ROOT), lineage_with(image), local=False)

    assert not choice.in_image
    assert "evaluate's image is not recorded (mlrig.image.evaluate)" in choice.link.note
