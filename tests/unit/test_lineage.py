"""Lineage facts: the commit of the code a result comes from, which a commit of dvc.lock alone
does not change (the report names it, and a fresh clone's first run writes the same report)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlrig.lineage import code_commit, git_commit


def git(root: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit_all(root: Path, message: str, date: str) -> str:
    git(root, "add", "-A")
    environment = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(
        ["git", *environment, "commit", "-qm", message, "--date", date],
        cwd=root,
        check=True,
        env={"GIT_COMMITTER_DATE": date, "PATH": "/usr/bin:/bin"},
    )
    return git(root, "rev-parse", "HEAD")


#: the pipeline's inputs in these scratch checkouts (`pipeline_inputs` of a real project)
INPUTS = ["params.yaml", "steps"]


def test_a_commit_of_the_lock_or_the_docs_leaves_the_code_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    code = commit_all(tmp_path, "code", "2026-12-01T10:00:00+00:00")
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    commit_all(tmp_path, "lock", "2026-12-02T10:00:00+00:00")
    (tmp_path / "README.md").write_text("how to run it\n")
    docs = commit_all(tmp_path, "docs", "2026-12-03T10:00:00+00:00")

    assert git_commit(tmp_path) == docs
    assert code_commit(tmp_path, INPUTS) == (code, "2026-12-01 10:00 UTC")
    (tmp_path / "dvc.lock").write_text("stages: {a: {}}\n")  # a run rewrites it: not dirty
    (tmp_path / "README.md").write_text("edited\n")  # nor is an edit of the docs
    assert code_commit(tmp_path, INPUTS) == (code, "2026-12-01 10:00 UTC")
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert code_commit(tmp_path, INPUTS) == (f"{code}-dirty", "2026-12-01 10:00 UTC")
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps/train.py").write_text("print('fit')\n")
    step = commit_all(tmp_path, "a step", "2026-12-04T10:00:00+00:00")
    assert code_commit(tmp_path, INPUTS) == (step, "2026-12-04 10:00 UTC")


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path) -> None:
    assert code_commit(tmp_path, INPUTS) == ("unknown", None)
    assert git_commit(tmp_path) == "unknown"
