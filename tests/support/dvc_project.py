"""A throwaway git + DVC project for the unit tests of mlrig.dvc: two stages, a tracked file and
a param, small enough that DVC answers in a second."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

#: make: raw.csv (tracked by `dvc add`) and data.txt -> out/a.txt, out/b.txt;
#: use: out/a.txt and param use.size -> used.txt
STAGES = {
    "make": {
        "cmd": "mkdir -p out && cp raw.csv out/a.txt && cp data.txt out/b.txt",
        "deps": ["raw.csv", "data.txt"],
        "outs": ["out"],
    },
    "use": {
        "cmd": "cp out/a.txt used.txt",
        "deps": ["out/a.txt"],
        "params": ["use.size"],
        "outs": ["used.txt"],
    },
}


def dvc(root: Path, *arguments: str) -> str:
    """`dvc ARGS` in `root` as a user types it; its output."""
    return subprocess.run(
        [sys.executable, "-m", "dvc", *arguments],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_dvc_project(root: Path) -> Path:
    """The project in `root` (created), its stages not run yet."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "raw.csv").write_text("a,b\n1,2\n")
    (root / "data.txt").write_text("first version\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"use": {"size": 3}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}, sort_keys=False))
    dvc(root, "add", "-q", "raw.csv")
    return root
