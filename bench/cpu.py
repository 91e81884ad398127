"""The CPU seconds a command used, from the kernel's accounting (cgroups), whatever else runs.

On a shared machine wall times move with the load; the CPU a run used does not. A command runs
in a cgroup of its own (every process it starts stays there), and the containers it starts are
followed in podman's own cgroups (`libpod_parent/libpod-<id>`, podman's cgroupfs manager), read
until they are removed. Where none of that is possible (no root, another cgroup layout) the
benchmark says so and reports wall times only.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
POLL_SECONDS = 0.2


def accounting_root() -> Path | None:
    """Where CPU use is accounted: cgroup v1's cpuacct hierarchy, or the unified (v2) one;
    None when this process cannot make a cgroup there."""
    for root in (CGROUP_ROOT / "cpuacct", CGROUP_ROOT):
        if (root / "cpuacct.usage").exists() or (root / "cgroup.controllers").exists():
            return root if os.access(root, os.W_OK) else None
    return None


def cpu_seconds(group: Path) -> float | None:
    """The CPU seconds used so far by the processes of a cgroup (v1 or v2); None if it is gone."""
    try:
        if (group / "cpuacct.usage").exists():
            return int((group / "cpuacct.usage").read_text()) / 1e9
        for line in (group / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        return None
    return None


@dataclass
class CpuMeter:
    """The CPU of one command: its own cgroup, and the podman containers started meanwhile."""

    root: Path
    group: Path
    containers: dict[str, float] = field(default_factory=dict)  # CPU seconds by container name
    names: dict[str, str] = field(default_factory=dict)  # container names by cgroup name
    stop: threading.Event = field(default_factory=threading.Event)

    def prefix(self) -> list[str]:
        """What runs the command inside the meter's cgroup: `sh -c 'echo $$ > ...; exec "$@"'`."""
        return ["sh", "-c", f'echo $$ > {self.group}/cgroup.procs && exec "$@"', "sh"]

    def follow_containers(self) -> None:
        """Until stopped: the CPU of every container started meanwhile, by its name."""
        parent = self.root / "libpod_parent"
        before = set(os.listdir(parent)) if parent.is_dir() else set()
        while not self.stop.wait(POLL_SECONDS):
            for group in set(os.listdir(parent)) - before if parent.is_dir() else ():
                used = cpu_seconds(parent / group) if group.startswith("libpod-") else None
                if used is None:
                    continue
                name = self.names.get(group) or self.names.setdefault(group, container_name(group))
                self.containers[name] = max(self.containers.get(name, 0.0), used)

    def containers_named(self, prefix: str) -> dict[str, float]:
        """The CPU seconds of the containers followed whose names start with `prefix`."""
        return {name: used for name, used in self.containers.items() if name.startswith(prefix)}

    def own_seconds(self) -> float:
        return cpu_seconds(self.group) or 0.0


@contextmanager
def cpu_meter() -> Iterator[CpuMeter | None]:
    """A meter for one command (None where CPU cannot be accounted here)."""
    root = accounting_root()
    if root is None:
        yield None
        return
    group = root / f"mlrig-bench-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    meter = CpuMeter(root, group)
    follower = threading.Thread(target=meter.follow_containers, daemon=True)
    follower.start()
    try:
        yield meter
    finally:
        meter.stop.set()
        follower.join()
        group.rmdir()


def container_name(group: str) -> str:
    """The name of the container of a podman cgroup (libpod-<id>), while it exists."""
    return subprocess.run(
        ["podman", "inspect", "--format", "{{.Name}}", group.removeprefix("libpod-")],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
