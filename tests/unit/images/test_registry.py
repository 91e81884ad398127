"""The build jobs' digest files (mlrig.images.registry): merged into the one file a tag pipeline
publishes, only when every step's image is there by digest, right under the trusted path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig.errors import ConfigError
from mlrig.images.registry import merge_digests

TRUSTED = "registry.example.com/team/mlrig/steps"
STEPS = ["report", "train"]


def digest_files(folder: Path, images: dict[str, str]) -> list[Path]:
    paths = []
    for step, reference in images.items():
        path = folder / f"images-{step}.json"
        path.write_text(json.dumps({step: reference}))
        paths.append(path)
    return paths


def by_digest(path: str, step: str, digit: str = "a") -> str:
    return f"{path}/{step}@sha256:{digit * 64}"


def test_every_steps_digest_in_one_file(tmp_path: Path) -> None:
    images = {step: by_digest(TRUSTED, step) for step in STEPS}
    assert merge_digests(digest_files(tmp_path, images), STEPS, f"{TRUSTED}/") == images


@pytest.mark.parametrize(
    ("images", "named"),
    [
        ({"train": by_digest(TRUSTED, "train")}, "missing: report"),
        (
            {"train": by_digest(TRUSTED, "train"), "report": f"{TRUSTED}/report:abc"},
            "not by digest",
        ),
        (
            {
                "train": by_digest(TRUSTED, "train"),
                "report": by_digest("registry.example.com/team/mlrig/mr-7", "report"),
            },
            "report (registry.example.com/team/mlrig/mr-7/report@sha256:",
        ),
        (
            {"train": by_digest(TRUSTED, "train"), "report": by_digest(f"{TRUSTED}/x", "report")},
            "are not under registry.example.com/team/mlrig/steps/",
        ),
    ],
)
def test_a_missing_untrusted_or_tagged_image_is_refused(
    tmp_path: Path, images: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        merge_digests(digest_files(tmp_path, images), STEPS, TRUSTED)
    assert named in str(refused.value)
