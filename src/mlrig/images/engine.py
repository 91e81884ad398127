"""The container engine: docker when a daemon answers, else podman, with the flags this host needs.

Every image build and every container the containers executor starts goes through an `Engine`;
what can be computed from the sources (an image's reference) needs none (`engine_if_any`).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlrig.errors import ConfigError
from mlrig.settings import Settings

#: podman's default limits are above what some kernels let a container set (runc then fails)
PODMAN_ULIMITS = ("--ulimit", "nofile=8192:8192", "--ulimit", "nproc=8192:8192")


@dataclass(frozen=True)
class Engine:
    """A container engine (docker or podman) and the flags this host needs for it."""

    program: str
    runtime: str | None

    @property
    def name(self) -> str:
        return Path(self.program).name

    def host_flags(self) -> list[str]:
        """Flags for `build` and `run`: podman's OCI runtime and limits this host allows."""
        if self.name != "podman":
            return []
        return [*(["--runtime", self.runtime] if self.runtime else []), *PODMAN_ULIMITS]

    def command(self, *arguments: str) -> list[str]:
        return [self.program, *arguments]

    def inspect(self, reference: str, template: str) -> str | None:
        """`image inspect --format template` of an image; None when there is no such image."""
        result = subprocess.run(
            self.command("image", "inspect", "--format", template, reference),
            capture_output=True,
            text=True,
        )
        return result.stdout.strip() if result.returncode == 0 else None

    def image_exists(self, reference: str) -> bool:
        return self.inspect(reference, "{{.Id}}") is not None

    def pull(self, reference: str) -> str | None:
        """Pull an image from its registry (the engine's own credentials).

        Returns:
            None when it is here now, else the engine's last line of why not.
        """
        if is_local_reference(reference):
            return "a localhost/ image is built on a machine, no registry has it"
        result = subprocess.run(
            self.command("pull", "--quiet", reference), capture_output=True, text=True
        )
        if result.returncode == 0:
            return None
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"{self.name} pull exited with {result.returncode}"


def is_local_reference(reference: str) -> bool:
    """An image named under podman's `localhost/`: built here, in no registry."""
    return reference.startswith("localhost/")


def find_engine(settings: Settings) -> Engine:
    """The engine to use: MLRIG_CONTAINER_ENGINE, else a docker that answers, else podman.

    Raises:
        ConfigError: no engine is installed, or the configured one is not on PATH.
    """
    if settings.container_engine:
        program = shutil.which(settings.container_engine)
        if program is None:
            raise ConfigError(
                f"MLRIG_CONTAINER_ENGINE={settings.container_engine} is not on PATH. Install it, "
                "or unset MLRIG_CONTAINER_ENGINE to use docker or podman, whichever is there."
            )
    elif (docker := shutil.which("docker")) and docker_daemon_answers(docker):
        program = docker
    elif podman := shutil.which("podman"):
        program = podman
    else:
        raise ConfigError(
            "No container engine: neither a running docker nor podman was found. Install podman "
            "(apt-get install podman runc) or start docker, then run this again."
        )
    runtime = settings.container_runtime
    if runtime is None and Path(program).name == "podman" and shutil.which("runc"):
        # crun, podman's default, fails on cgroup v1 kernels such as this project's CI hosts
        runtime = "runc"
    return Engine(program=program, runtime=runtime)


def engine_if_any(settings: Settings) -> Engine | None:
    """The engine, or None where none is installed (a dry run or a pushed image needs none).

    Raises:
        ConfigError: MLRIG_CONTAINER_ENGINE names a program that is not on PATH.
    """
    try:
        return find_engine(settings)
    except ConfigError:
        if settings.container_engine:
            raise
        return None


def docker_daemon_answers(program: str) -> bool:
    """True when the docker CLI reaches an engine (the client alone cannot build or run)."""
    try:
        return subprocess.run([program, "info"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False
