"""The step images, built once per session in this checkout (as `make images` does): the
containers tests and the tests of the chart's pods run the pipeline in them."""

from __future__ import annotations

import os
import shutil

import pytest

from mlrig.errors import MlrigError
from mlrig.images.build import LOCAL_OS_IMAGE, ImageBuild, build_images, make_os_image
from mlrig.images.engine import Engine, find_engine
from mlrig.settings import Settings
from tests.support.project import REPO_ROOT, checkout_lock
from tests.support.scheduling import on_the_critical_path


@pytest.fixture(scope="session")
def repo_settings() -> Settings:
    return Settings(project_dir=REPO_ROOT)


@pytest.fixture(scope="session")
def step_images(repo_settings: Settings) -> tuple[Engine, list[ImageBuild]]:
    """The engine and every image (base first), built where their inputs changed."""
    try:
        engine = find_engine(repo_settings)
    except MlrigError as error:
        pytest.skip(str(error))
    # the images are on the suite's critical path, whichever tier asks for them first
    with checkout_lock("images"), on_the_critical_path():
        if not repo_settings.base_image and not engine.image_exists(LOCAL_OS_IMAGE):
            # no registry here: the base is made with debootstrap, as `make base-image` does
            if os.geteuid() != 0 or shutil.which("debootstrap") is None:
                pytest.skip("no base image, and debootstrap (as root) cannot make one")
            make_os_image(repo_settings, engine)
        return engine, build_images(repo_settings, engine)
