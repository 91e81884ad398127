"""Step images from one Dockerfile (mlrig.images.build): what a step's image is made from and named
by.

Engine-free: what the containers tier builds for real (tests/containers/test_images.py) is
decided here, from the sources.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mlrig.images.build import (
    BuildLayout,
    base_tag,
    no_image_error,
    os_base,
    step_names,
    step_summary,
    step_tag,
)
from mlrig.settings import Settings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two steps (train and ingest, locking the same packages) and report, which does not."""
    (tmp_path / "images/step").mkdir(parents=True)
    (tmp_path / "images/step/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (tmp_path / "src/mlrig").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    requirements = tmp_path / ".mlrig/build/requirements"
    requirements.mkdir(parents=True)
    for step, locked in (("train", "scikit-learn==1.7\n"), ("ingest", "scikit-learn==1.7\n"),
                         ("report", "matplotlib==3.10\n")):  # fmt: skip
        (tmp_path / "steps" / step).mkdir(parents=True)
        (tmp_path / "steps" / step / "__main__.py").touch()
        (tmp_path / "steps" / step / "__init__.py").write_text(f'"""The {step} step.\n\nMore."""\n')
        (requirements / f"{step}.txt").write_text(locked)
    (tmp_path / "steps/helpers").mkdir()  # a package that is no step: no __main__.py
    return tmp_path


def test_every_package_under_steps_with_a_main_is_a_step(project: Path) -> None:
    assert step_names(project) == ["ingest", "report", "train"]
    assert step_summary(project, "train") == "The train step."


def test_steps_with_the_same_packages_install_the_same_list(project: Path) -> None:
    layout = BuildLayout(project)
    train, ingest, report = (
        layout.requirements_by_content(s) for s in ("train", "ingest", "report")
    )
    assert train == ingest != report
    assert (layout.requirements_dir / train).read_text() == "scikit-learn==1.7\n"


def test_a_steps_own_dockerfile_adds_to_the_generic_one_and_to_its_tag(project: Path) -> None:
    settings = Settings(project_dir=project)
    layout = BuildLayout(project)
    generic = project / "images/step/Dockerfile"
    assert layout.step_dockerfiles("train") == [generic]
    alone = step_tag(settings, "train", "localhost/mlrig/base:1")
    assert alone != step_tag(settings, "ingest", "localhost/mlrig/base:1")  # labels differ

    own = project / "images/train/Dockerfile"
    own.parent.mkdir()
    own.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n")
    assert layout.step_dockerfiles("train") == [generic, own]
    assert step_tag(settings, "train", "localhost/mlrig/base:1") != alone
    assert layout.step_dockerfiles("ingest") == [generic]


def test_a_base_image_is_named_in_the_tags_as_declared_and_needs_no_engine(
    project: Path,
) -> None:
    """MLRIG_BASE_IMAGE by digest is one image: its reference, not a local image id, goes into
    the base tag, so every runner computes the same tags for one commit."""
    (project / "images/base").mkdir()
    (project / "images/base/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (project / ".mlrig/build/requirements/base.txt").write_text("dvc==3.0\n")

    def tag(base_image: str | None) -> str:
        settings = Settings(project_dir=project, base_image=base_image)
        reference, fingerprint = os_base(settings, None)  # no engine: none is needed
        assert reference == base_image
        return base_tag(settings, fingerprint)

    first = "registry.example/debian@sha256:" + "1" * 64
    assert tag(first) == tag(first)
    assert tag(first) != tag("registry.example/debian@sha256:" + "2" * 64)
    assert tag(None) not in {tag(first)}  # the Dockerfile's own pinned default


def test_a_stage_without_a_step_package_is_named_with_what_to_add() -> None:
    message = str(no_image_error(["featurize"]))
    assert "featurize" in message and "steps/<step>/__main__.py" in message
    assert "make step NAME=" in message


def test_every_step_image_is_built_and_pushed_by_gitlab_ci() -> None:
    """The build job's matrix names every step's image, and only those (`make step` adds one)."""
    import yaml

    repo = Path(__file__).parents[3]
    ci = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())
    groups = tomllib.loads((repo / "pyproject.toml").read_text())["dependency-groups"]

    assert sorted(ci["build"]["parallel"]["matrix"][0]["STEP"]) == step_names(repo)
    for step in step_names(repo):
        assert f"step-{step}" in groups, step
