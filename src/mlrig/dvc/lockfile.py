"""`dvc.lock`'s entries: read one stage's, and merge stages' entries in DVC's own format (what a
stage run in a container or a pod sends back to the checkout)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_SCHEMA = "2.0"


def merge_lock_entries(lock_path: Path, entries: Mapping[str, dict[str, Any]]) -> None:
    """Write stages' dvc.lock entries into `lock_path`, in DVC's own format."""
    from dvc.utils.serialize import dump_yaml, modify_yaml

    if not lock_path.is_file():
        dump_yaml(lock_path, {"schema": "2.0", "stages": {}})
    with modify_yaml(lock_path) as lock:  # as `dvc repro` writes it
        lock.setdefault("stages", {}).update(entries)


def lock_entry(root: Path, name: str) -> dict[str, Any]:
    """The stage's entry in the workspace's dvc.lock."""
    from dvc.utils.serialize import load_yaml

    return dict(load_yaml(root / "dvc.lock")["stages"][name])


@dataclass
class HeldLock:
    """A checkout's dvc.lock held in memory while one run alone writes it (the containers
    executor, under the checkout's run lock): read once, written whole after each merge, as
    `merge_lock_entries` would leave it, without parsing it again each time (DVC's round-trip
    YAML parser takes a good part of a second on a pipeline's lock).
    """

    path: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> HeldLock:
        from dvc.utils.serialize import parse_yaml_for_update

        text = path.read_text() if path.is_file() else ""
        data = parse_yaml_for_update(text, str(path)) if text.strip() else {}
        return cls(path, data or {"schema": LOCK_SCHEMA, "stages": {}})

    def merge(self, entries: Mapping[str, dict[str, Any]]) -> None:
        """Write stages' entries into the lock, in DVC's own format."""
        from dvc.utils.serialize import dump_yaml

        self.data.setdefault("stages", {}).update(entries)
        dump_yaml(self.path, self.data)

    def write_part(self, path: Path, stages: Iterable[str]) -> None:
        """Write a dvc.lock at `path` holding only the entries of `stages` (those it has)."""
        from dvc.utils.serialize import dump_yaml

        held = self.data.get("stages", {})
        part = {name: held[name] for name in sorted(stages) if name in held}
        dump_yaml(path, {"schema": self.data.get("schema", LOCK_SCHEMA), "stages": part})
