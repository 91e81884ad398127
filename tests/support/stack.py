"""A scratch copy of the repository with its local stack (`mlrig stack up`) running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.project import FEW_EXPERIMENTS, clean_environment, copy_repository


def postgres_installed() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or bool(shutil.which("initdb"))


@dataclass
class Stack:
    """A scratch copy of the repository with its local stack running."""

    root: Path
    env: dict[str, str]
    up_output: str = field(default="")

    def mlrig(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run_module("mlrig", *args, **extra)

    def dvc(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run_module("dvc", *args, **extra)

    def run_module(self, module: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=self.root,
            env=self.env | extra,
            capture_output=True,
            text=True,
            timeout=900,
        )

    def client_env(self) -> dict[str, str]:
        from dotenv import dotenv_values

        values = dotenv_values(self.root / ".mlrig/stack/stack.env")
        return {key: value for key, value in values.items() if value is not None}

    def secrets(self) -> dict[str, str]:
        return json.loads((self.root / ".mlrig/stack/secrets.json").read_text())


def start_stack(experiments: tuple[str, ...] | None = FEW_EXPERIMENTS) -> Iterator[Stack]:
    """Copy the repository (with `experiments`) and start its stack; stop it when the caller's
    fixture ends."""
    if not postgres_installed():
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    # PostgreSQL runs as `postgres` and must reach its data folder. pytest's temp root is
    # private, and every pytest session (a nested one too) resets it to 0700, which would pull
    # the data folder from under a running server: the stack gets a folder of its own.
    root = Path(tempfile.mkdtemp(prefix="mlrig-stack-"))
    root.chmod(0o711)
    try:
        copy_repository(root, experiments)
        started = Stack(root=root, env=clean_environment(root))
        up = started.mlrig("stack", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        started.up_output = up.stdout + up.stderr
        yield started
        started.mlrig("stack", "down")
    finally:
        shutil.rmtree(root, ignore_errors=True)
