"""The cleanup of a containers run's step containers, with the real engine."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from mlrig.executors.step_containers import RUN_LABEL, remove_run_containers, run_containers
from mlrig.images.build import ImageBuild
from mlrig.images.engine import Engine

pytestmark = [pytest.mark.containers, pytest.mark.integration]


def test_every_container_of_the_run_is_removed_even_one_never_started(
    step_images: tuple[Engine, list[ImageBuild]],
) -> None:
    """What an engine process stopped while creating its container leaves: a container
    "Created" and never started, which no record of the run names; another run's stays."""
    engine, images = step_images
    run_id, other_run = f"test-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    try:
        for run, name in ((run_id, "created"), (run_id, "exited"), (other_run, "other")):
            subprocess.run(
                engine.command(
                    "create", "--name", f"mlrig-{run}-{name}", *engine.host_flags(),
                    "--label", f"{RUN_LABEL}={run}",
                    "--entrypoint", "true", images[0].reference,
                ),
                check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(engine.command("start", "--attach", f"mlrig-{run_id}-exited"), check=True)
        assert len(run_containers(engine, run_id)) == 2

        remove_run_containers(engine, run_id)

        assert run_containers(engine, run_id) == []
        assert run_containers(engine, other_run) == [f"mlrig-{other_run}-other"]
    finally:
        for run in (run_id, other_run):
            subprocess.run(
                engine.command("rm", "--force", *run_containers(engine, run)), capture_output=True
            )
