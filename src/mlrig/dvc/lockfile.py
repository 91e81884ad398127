"""`dvc.lock`'s entries: read one stage's, and merge stages' entries in DVC's own format (what a
stage run in a container or a pod sends back to the checkout)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
