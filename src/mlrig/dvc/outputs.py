"""A stage's data in a workspace of its own: pull the outputs it reads from the DVC remote.

`dvc pull <targets>` reads dvc.yaml and dvc.lock again for every target, twice (fetch, then
checkout): a stage that reads the outputs of 16 stages spent 17 s of a 0.4 s download parsing
YAML. Here the repository's index is read once, the outputs a stage depends on are taken from
it, and their objects pulled and checked out the way DVC's run-cache restores a stage
(`Output.get_used_objs`, `DataCloud.pull`, `Output.checkout`): directory listings first, in one
batch, then every file they list, in another.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.dvc.repo import open_repo
from mlrig.dvc.stages import overlaps
from mlrig.errors import ConfigError

if TYPE_CHECKING:  # DVC loads inside functions
    from dvc.output import Output
    from dvc.repo import Repo


def input_outputs(repo: Repo, name: str) -> list[Output]:
    """The outputs of other stages (and .dvc files) that stage `name` depends on; a dep may be
    an output, a folder of outputs (outputs/train), or a file inside one.

    Raises:
        ConfigError: dvc.yaml has no such stage.
    """
    stages = {stage.addressing: stage for stage in repo.index.stages}
    if name not in stages:
        raise ConfigError(
            f"dvc.yaml has no stage {name!r}. Its stages: {', '.join(sorted(stages))}."
        )
    deps = [dep.fs_path for dep in stages[name].deps]
    outs = [out for out in repo.index.outs if any(overlaps(out.fs_path, dep) for dep in deps)]
    return sorted(outs, key=lambda out: out.fs_path)


def pull_stage_inputs(root: Path, name: str, remote: str) -> list[str]:
    """Pull the outputs stage `name` depends on from `remote` and check them out in `root`.

    Returns:
        The paths (relative to `root`) of those whose data the remote lacks (not checked out).

    Raises:
        ConfigError: dvc.yaml has no such stage.
    """
    with open_repo(root) as repo, repo.lock:
        missing = pull_outputs(repo, input_outputs(repo, name), remote)
        return [os.path.relpath(path, root) for path in missing]


def pull_outputs(repo: Repo, outs: Iterable[Output], remote: str) -> list[str]:
    """Fetch the outputs' objects from `remote` into the cache, then check each one out.

    Returns:
        The paths of the outputs that could not be checked out (the remote lacks some data).
    """
    from dvc.exceptions import DvcException

    outs = [out for out in outs if out.use_cache and out.hash_info]
    listings = [out.hash_info for out in outs if out.hash_info.isdir and not cached(out)]
    if listings:
        repo.cloud.pull(listings, remote=remote)
    objects = set()
    for out in outs:
        if out.hash_info.isdir and not cached(out):
            continue  # its listing is not on the remote: reported missing below
        for used in out.get_used_objs(remote=remote, force=True).values():
            objects |= used
    repo.cloud.pull(objects, remote=remote)
    missing = []
    for out in outs:
        try:
            out.checkout()
        except (DvcException, OSError):  # OSError: a file's object is missing
            missing.append(out.fs_path)
    return missing


def cached(out: Output) -> bool:
    """Whether the output's object (a file, or a directory's listing) is in the local cache."""
    return bool(out.hash_info.value) and out.cache.exists(out.hash_info.value)
