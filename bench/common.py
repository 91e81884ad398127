"""What the benchmarks share: the stack's settings and a timer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlrig.errors import ConfigError
from mlrig.executors.containers import copy_project_files
from mlrig.settings import load_settings


def stack_environment() -> dict[str, str]:
    """The local stack's client settings (`mlrig stack up` must have run).

    Raises:
        ConfigError: the stack is not up.
    """
    from mlrig.stacks.local.manager import load_stack_environment, stack_status

    settings = load_settings()
    if not all(service.healthy for service in stack_status(settings)):
        raise ConfigError("The local stack is not healthy. Start it first: make stack-up")
    return load_stack_environment(settings)


def scratch_project(root: Path, destination: Path) -> Path:
    """A git checkout of this project's files, as a fresh clone has them."""
    copy_project_files(root, destination)
    identity = ["-c", "user.name=mlrig bench", "-c", "user.email=bench@mlrig.invalid"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "bench"]):
        subprocess.run(["git", *command], cwd=destination, check=True, capture_output=True)
    return destination


@dataclass
class Timings:
    """Seconds per labelled measurement, in the order they were taken."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, label: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[label] = time.perf_counter() - started

    def ratio(self, label: str, baseline: str) -> float:
        return self.seconds[label] / self.seconds[baseline]


def report(title: str, timings: Timings, pairs: list[tuple[str, str]]) -> str:
    lines = [f"## {title}", "", "| measurement | seconds |", "|---|---:|"]
    lines += [f"| {label} | {seconds:.2f} |" for label, seconds in timings.seconds.items()]
    lines += ["", "| mlrig way / baseline | ratio |", "|---|---:|"]
    lines += [
        f"| {label} / {baseline} | {timings.ratio(label, baseline):.2f} |"
        for label, baseline in pairs
    ]
    return "\n".join(lines) + "\n"


Runner = Callable[[dict[str, str]], str]
