"""`mlrig images push`: the step images to a registry, under their content tags, each once.

A CI build job asks the registry for each step's content tag first (the tag `mlrig images
build` gives it, computed from the sources: the same on every runner), and builds and pushes
only the images the registry lacks: a commit that changed nothing in a step builds and pushes
nothing for it. Later jobs learn each step's image from the digest file the job writes (step ->
`registry/step@sha256:...`) and run it by that digest, whatever the tag points to later. Which
registry path a pipeline may push to is the CI's to decide (`.gitlab-ci.yml`: merge requests
push under their own path, never the one the cluster trusts).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.images.build import build_images, step_image_references
from mlrig.images.engine import Engine
from mlrig.settings import Settings


@dataclass(frozen=True)
class PushedImage:
    step: str
    reference: str  # registry/step:content-tag
    digest: str  # sha256:...
    pushed: bool  # False: the registry had that tag already


def skopeo(*arguments: str, tls_verify: bool) -> subprocess.CompletedProcess[str]:
    """skopeo reads registries without pulling (podman's credentials: podman login)."""
    if shutil.which("skopeo") is None:
        raise ConfigError("skopeo is not installed: apt-get install skopeo")
    return subprocess.run(
        ["skopeo", arguments[0], f"--tls-verify={str(tls_verify).lower()}", *arguments[1:]],
        capture_output=True,
        text=True,
    )


def registry_failure(what: str, result: subprocess.CompletedProcess[str]) -> MlrigError:
    detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no output"
    return MlrigError(
        f"Cannot {what}: {detail}. Check the registry address and log in first (podman "
        "login; in GitLab CI with CI_REGISTRY_USER and CI_REGISTRY_PASSWORD).",
        exit_code=EXIT_FAILED,
    )


def registry_tags(repository: str, tls_verify: bool) -> set[str]:
    """The tags a registry holds for a repository (none when the repository does not exist).

    Raises:
        MlrigError: the registry cannot be reached or refused the credentials.
    """
    result = skopeo("list-tags", f"docker://{repository}", tls_verify=tls_verify)
    if result.returncode == 0:
        return set(json.loads(result.stdout)["Tags"] or [])
    if "404" in result.stderr:  # the registry answered: no such repository yet
        return set()
    raise registry_failure(f"list the tags of {repository}", result)


def remote_digest(reference: str, tls_verify: bool) -> str:
    """The digest of an image's manifest in the registry."""
    result = skopeo(
        "inspect", "--format", "{{.Digest}}", f"docker://{reference}", tls_verify=tls_verify
    )
    if result.returncode != 0:
        raise registry_failure(f"inspect {reference}", result)
    return result.stdout.strip()


def push_step_images(
    settings: Settings, engine: Engine, registry: str, steps: list[str], tls_verify: bool
) -> list[PushedImage]:
    """Each step's image in the registry: found there by its content tag, else built (where
    this machine lacks it) and pushed.

    Raises:
        ConfigError: the engine is not podman, or a step has no image.
    """
    if engine.name != "podman":
        raise ConfigError("mlrig images push needs podman (MLRIG_CONTAINER_ENGINE=podman).")
    references = step_image_references(settings, engine)
    unknown = sorted(set(steps) - set(references))
    if unknown:
        raise ConfigError(
            f"No image for step(s) {', '.join(unknown)}: images/ has {', '.join(references)}."
        )
    found, missing = [], []
    for step in steps:
        remote = f"{registry.rstrip('/')}/{step}:{references[step].rsplit(':', 1)[1]}"
        repository, tag = remote.rsplit(":", 1)
        if tag in registry_tags(repository, tls_verify):
            found.append(PushedImage(step, remote, remote_digest(remote, tls_verify), False))
        else:
            missing.append(step)
    pushed = []
    for image in build_images(settings, engine, missing) if missing else []:
        if image.name not in missing:
            continue  # the base: pushed as the step images' layers
        remote = f"{registry.rstrip('/')}/{image.name}:{image.reference.rsplit(':', 1)[1]}"
        digest = push(engine, image.reference, remote, tls_verify)
        pushed.append(PushedImage(image.name, remote, digest, pushed=True))
    return found + pushed


def push(engine: Engine, local: str, remote: str, tls_verify: bool) -> str:
    """`podman push` of a local image under the remote name; the digest the registry stored."""
    subprocess.run(engine.command("tag", local, remote), check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="mlrig-push-") as scratch:
        digest_file = Path(scratch) / "digest"
        result = subprocess.run(
            engine.command("push", "--quiet", f"--tls-verify={str(tls_verify).lower()}",
                           "--digestfile", str(digest_file), remote),
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise MlrigError(
                f"Pushing {remote} failed: {result.stderr.strip()[-500:]}. Log in first "
                "(podman login) and check that the registry takes pushes.",
                exit_code=EXIT_FAILED,
            )
        return digest_file.read_text().strip()


def write_digests(images: list[PushedImage], path: Path) -> None:
    """step -> registry/step@sha256:..., for the jobs after the build."""
    by_step = {
        image.step: f"{image.reference.rsplit(':', 1)[0]}@{image.digest}" for image in images
    }
    path.write_text(json.dumps(by_step, indent=2) + "\n")


def read_digests(paths: list[Path]) -> dict[str, str]:
    """step -> registry/step@sha256:..., merged from the digest files of the build jobs.

    Raises:
        ConfigError: a file is missing, or is not such a mapping.
    """
    from pydantic import TypeAdapter, ValidationError

    digests: dict[str, str] = {}
    for path in paths:
        try:
            by_step = TypeAdapter(dict[str, str]).validate_json(path.read_bytes())
        except (OSError, ValidationError) as error:
            raise ConfigError(
                f"{path} is not a digest file of `mlrig images push --digests` ({error}). "
                "Pass the images-<step>.json files the build jobs wrote."
            ) from None
        not_digests = sorted(step for step, ref in by_step.items() if "@sha256:" not in ref)
        if not_digests:
            raise ConfigError(
                f"{path}: the image of step(s) {', '.join(not_digests)} is not by digest "
                "(registry/step@sha256:...); write the file with mlrig images push --digests."
            )
        digests |= by_step
    return digests


def merge_digests(paths: list[Path], steps: list[str], under: str | None) -> dict[str, str]:
    """One step -> image map from the build jobs' digest files: every step's image by digest,
    each (with `under`) one repository right under that registry path.

    Raises:
        ConfigError: a file is no digest file, a step is missing or unknown, or an image is
            elsewhere than `under`.
    """
    digests = read_digests(paths)
    missing, unknown = sorted(set(steps) - set(digests)), sorted(set(digests) - set(steps))
    if missing or unknown:
        raise ConfigError(
            "The digest files do not name the images of exactly this project's steps "
            f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}). "
            "Pass the images-<step>.json of every build job of this pipeline."
        )
    prefix = under.rstrip("/") + "/" if under else None
    elsewhere = sorted(
        f"{step} ({reference})"
        for step, reference in digests.items()
        if prefix and not (reference.startswith(prefix) and "/" not in reference[len(prefix) :])
    )
    if elsewhere:
        raise ConfigError(
            f"The image(s) of {', '.join(elsewhere)} are not under {prefix}: a release names only "
            "images a protected pipeline pushed to the trusted path."
        )
    return dict(sorted(digests.items()))
