"""dvc.lock's entries merged in DVC's own format (mlrig.dvc.lockfile): once per merge, or held in
memory for a run, with the same file as the result."""

from __future__ import annotations

import shutil
from pathlib import Path

from dvc.utils.serialize import dump_yaml, load_yaml

from mlrig.dvc.lockfile import HeldLock, merge_lock_entries


def entry(name: str, md5: str) -> dict:
    return {
        "cmd": f"python -m steps.{name}",
        "deps": [{"path": "data", "hash": "md5", "md5": f"{md5}.dir", "size": 3, "nfiles": 1}],
        "params": {"params.yaml": {name: {"flag": "yes", "code": "0123"}}},
        "outs": [{"path": f"outputs/{name}", "hash": "md5", "md5": md5, "size": 7}],
    }


def test_a_held_lock_writes_what_merging_in_place_writes(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    dump_yaml(lock, {"schema": "2.0", "stages": {"a": entry("a", "1" * 32), "b": entry("b", "2")}})
    in_place = tmp_path / "in-place.lock"
    shutil.copy2(lock, in_place)
    held = HeldLock.read(lock)

    for entries in ({"b": entry("b", "3" * 32)}, {"c": entry("c", "4"), "a": entry("a", "5")}):
        held.merge(entries)
        merge_lock_entries(in_place, entries)

    assert lock.read_text() == in_place.read_text()
    assert load_yaml(lock)["stages"]["b"] == entry("b", "3" * 32)


def test_a_workspace_gets_the_entries_it_names(tmp_path: Path) -> None:
    held = HeldLock.read(tmp_path / "absent.lock")  # a pipeline that never ran: no entries
    held.merge({"a": entry("a", "1"), "b": entry("b", "2"), "c": entry("c", "3")})

    held.write_part(tmp_path / "part.lock", ["c", "a", "unknown"])

    part = load_yaml(tmp_path / "part.lock")
    assert part == {"schema": "2.0", "stages": {"a": entry("a", "1"), "c": entry("c", "3")}}
