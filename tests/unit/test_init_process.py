"""Step images and the pipeline CronJob start under an init, so SIGTERM works as PID 1."""

from __future__ import annotations

import re

import yaml

from mlrig.images.build import BuildLayout, step_names
from tests.support.project import REPO_ROOT

TINI = ["/usr/bin/tini", "-g", "--"]


def test_step_images_start_under_tini_from_the_base() -> None:
    base = (REPO_ROOT / "images/base/Dockerfile").read_text()
    assert re.search(r"apt-get install .*\btini\b", base), "the base's build stage installs tini"
    assert "COPY --from=build /usr/bin/tini-static /usr/bin/tini" in base
    for step in step_names(REPO_ROOT):
        dockerfiles = BuildLayout(REPO_ROOT).step_dockerfiles(step)
        # the last ENTRYPOINT of the generic Dockerfile and of the step's own is the image's
        entrypoints = [
            entrypoint
            for dockerfile in dockerfiles
            for entrypoint in re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile.read_text(), re.M)
        ]
        assert yaml.safe_load(entrypoints[-1])[:3] == TINI, f"{step}: {entrypoints}"


def test_the_pipeline_cronjob_runs_mlrig_under_tini() -> None:
    cronjob = yaml.safe_load((REPO_ROOT / "k8s/base/pipeline-cronjob.yaml").read_text())
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [*TINI, "mlrig", "run"]
