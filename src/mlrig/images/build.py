"""`make images`: one container image per step, tagged with a content hash of its inputs.

Every step's image is built from one Dockerfile (images/step) with the step's locked
dependency group; a step that needs more adds layers in images/<step>/Dockerfile. An image is
rebuilt only when something it is made from changes: its Dockerfiles, its locked requirement
list (exported from uv.lock), the base it is built on, and (for step images) the mlrig
sources. Builds need no package index: the wheels come from a wheelhouse made on the host
(`make wheels`), and where no base image can be pulled, `make base-image` makes one with
debootstrap and Debian's Python 3.11.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.errors import run_logged as logged_command
from mlrig.experiments.params import STEPS_DIR
from mlrig.images.engine import Engine, engine_if_any
from mlrig.settings import Settings

IMAGES_DIR = "images"
BASE = "base"
#: the folder under images/ of the Dockerfile every step image is built from
STEP_IMAGE = "step"
#: images of the Helm chart's servers, each FROM the bare OS image (not the mlrig base), with
#: the locked dependency group named here (None: no Python packages); `make server-images`
#: builds them. s3-seaweedfs and postgresql-debian stand in for the official SeaweedFS and
#: PostgreSQL images where no registry can be reached (`podman kube play` of the chart on one
#: machine).
SERVER_IMAGES: dict[str, str | None] = {
    "mlflow-server": "server-mlflow",
    "s3-seaweedfs": "server-s3-seaweedfs",
    "postgresql-debian": None,
}
#: the champion's scoring server (images/serve, `mlrig-serve`): FROM the mlrig base like a step
#: image, with these locked dependency groups; `make server-images` builds it after the servers.
#: The drift group too: the chart's drift CronJob runs `mlrig drift` in this image, beside the
#: request log it reads
SERVE_IMAGE = "serve"
SERVE_GROUP = "serve"
SERVE_GROUPS = (SERVE_GROUP, "drift")
#: the image `make base-image` makes where no registry can be reached
LOCAL_OS_IMAGE = "localhost/mlrig/debian-python:3.11-bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: what an image does not need, removed from the debootstrap tree: downloaded packages, package
#: lists, docs, translations
DEBOOTSTRAP_LEFTOVERS = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/man",
)
#: the image config `make base-image` gives the imported tree
OS_IMAGE_CHANGE = 'CMD ["python3"]'
LOG_TAIL_LINES = 20
#: locked dependencies that no step imports: DVC's experiment queue (celery and its CLI) and
#: SSH remotes, and GTO's model registry. `mlrig stage` runs `dvc pull`, `repro` and `push`
#: only; the containers tests run every stage in its image without them.
NOT_IN_IMAGES = (
    "amqp", "asyncssh", "billiard", "celery", "click-didyoumean", "click-plugins", "click-repl",
    "gto", "kombu", "prompt-toolkit", "vine", "wcwidth",
)  # fmt: skip


def step_names(root: Path) -> list[str]:
    """Every step: the packages under steps/ that run as `python -m steps.<name>`."""
    return sorted(
        folder.name for folder in (root / STEPS_DIR).iterdir() if (folder / "__main__.py").is_file()
    )


def no_image_error(steps: list[str]) -> ConfigError:
    """A stage whose step has no image: it does not run a package under steps/."""
    return ConfigError(
        f"Step(s) {', '.join(steps)} of dvc.yaml have no image: a step image is built for each "
        "package under steps/ (steps/<step>/__main__.py, and the dependency group step-<step> "
        "in pyproject.toml). make step NAME=... makes one; then run make images."
    )


def step_summary(root: Path, step: str) -> str:
    """The first line of the step package's docstring: its image's description."""
    module = ast.parse((root / STEPS_DIR / step / "__init__.py").read_text())
    return (ast.get_docstring(module) or f"the {step} step").splitlines()[0]


def image_reference(settings: Settings, name: str, tag: str) -> str:
    return f"{settings.image_repository}/{name}:{tag}"


def tree_digest(paths: Iterable[Path], root: Path) -> str:
    """SHA-256 over the files under `paths` (names and bytes), tests and bytecode left out."""
    digest = hashlib.sha256()
    files = sorted(
        file
        for path in paths
        for file in ([path] if path.is_file() else path.rglob("*"))
        if file.is_file() and "__pycache__" not in file.parts and "tests" not in file.parts
    )
    for file in files:
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def content_tag(*parts: str) -> str:
    """A short tag naming the inputs of an image: equal inputs, equal tag."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class BuildLayout:
    """Where `make images` keeps what it generates (git-ignored, inside the build context)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.build_dir = self.root / ".mlrig" / "build"
        self.requirements_dir = self.build_dir / "requirements"
        self.dist_dir = self.build_dir / "dist"
        self.wheelhouse = self.root / ".mlrig" / "wheels"
        self.rootfs = self.build_dir / "rootfs"
        self.logs = self.root / ".mlrig" / "logs"

    def dockerfile(self, name: str) -> Path:
        return self.root / IMAGES_DIR / name / "Dockerfile"

    def requirements(self, name: str) -> Path:
        return self.requirements_dir / f"{name}.txt"

    def step_dockerfiles(self, step: str) -> list[Path]:
        """The generic step Dockerfile, then the step's own where it adds layers."""
        own = self.dockerfile(step)
        return [self.dockerfile(STEP_IMAGE), *([own] if own.is_file() else [])]

    def requirements_by_content(self, name: str) -> str:
        """`name`'s requirement list copied under a name made of its content (relative to
        requirements_dir): what the step Dockerfile installs, so that steps with the same
        packages share their layers."""
        text = self.requirements(name).read_text()
        relative = f"by-content/{hashlib.sha256(text.encode()).hexdigest()[:16]}.txt"
        path = self.requirements_dir / relative
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            written = path.with_suffix(f".{os.getpid()}.tmp")
            written.write_text(text)
            written.replace(path)
        return relative


def find_uv() -> str:
    """The uv binary: set by `uv run`, on PATH, or beside this interpreter (the venv has one)."""
    beside_python = Path(sys.executable).parent / "uv"
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None and beside_python.is_file():
        uv = str(beside_python)
    if uv is None:
        raise ConfigError(
            "uv is neither on PATH nor in this environment. Install the project's environment "
            "with `make env`, which puts uv into .venv/bin."
        )
    return uv


def run_logged(command: list[str], log_path: Path, what: str, cwd: Path) -> None:
    """Run a build command with its output in `log_path` (redacted, as every logged command).

    Raises:
        MlrigError: the command failed; the message ends with the log's last lines.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    code = logged_command(command, log_path, cwd=cwd)
    if code != 0:
        tail = log_path.read_text().splitlines()[-LOG_TAIL_LINES:]
        raise MlrigError(
            f"{what} failed (exit {code}). Full log: {log_path}\n"
            + "\n".join(f"  | {line}" for line in tail),
            exit_code=EXIT_FAILED,
        )


def export_requirements(layout: BuildLayout, steps: list[str], servers: bool = False) -> None:
    """Write the locked requirement list of the base and of each step group (from uv.lock),
    and with `servers` those of the server images (SERVER_IMAGES)."""
    layout.requirements_dir.mkdir(parents=True, exist_ok=True)
    uv = find_uv()
    export = [uv, "export", "--frozen", "--no-emit-project", "--no-header", "--no-hashes"]
    unused = [f"--no-emit-package={package}" for package in NOT_IN_IMAGES]
    groups = (
        {BASE: ["--no-default-groups", *unused]}
        | {step: ["--only-group", f"step-{step}", *unused] for step in steps}
        | {
            server: ["--only-group", group]
            for server, group in SERVER_IMAGES.items()
            if group and servers
        }
        | (
            {SERVE_IMAGE: [*(f"--only-group={group}" for group in SERVE_GROUPS), *unused]}
            if servers
            else {}
        )
    )
    for name, selection in groups.items():
        # written aside, then renamed: a build reading the list never sees it half-written
        written = layout.requirements(name).with_suffix(f".{os.getpid()}.tmp")
        run_logged(
            [*export, *selection, "--output-file", str(written)],
            layout.logs / "export-requirements.log",
            f"uv export of the requirements of {name}",
            layout.root,
        )
        written.replace(layout.requirements(name))


def make_wheelhouse(layout: BuildLayout) -> int:
    """Fill the wheelhouse with a wheel for every locked requirement of every image.

    Downloads are checked against uv.lock's hashes; sdists are built into wheels here, on the
    host. Wheels already there are reused. Returns how many wheels the wheelhouse holds.
    """
    layout.wheelhouse.mkdir(parents=True, exist_ok=True)
    hashed = layout.build_dir / "all-requirements.txt"
    uv = find_uv()
    steps = step_names(layout.root)
    names = [f"step-{step}" for step in steps] + [g for g in SERVER_IMAGES.values() if g]
    names.extend(SERVE_GROUPS)
    groups = [argument for group in names for argument in ("--group", group)]
    run_logged(
        [uv, "export", "--frozen", "--no-emit-project", "--no-header", "--no-default-groups",
         *groups, "--output-file", str(hashed)],
        layout.logs / "wheels.log",
        "uv export of every image's requirements",
        layout.root,
    )  # fmt: skip
    run_logged(
        [uv, "tool", "run", "--from", "pip", "pip", "wheel", "--quiet", "--no-deps",
         "--find-links", str(layout.wheelhouse), "--wheel-dir", str(layout.wheelhouse),
         "--requirement", str(hashed)],
        layout.logs / "wheels.log",
        "Making the wheelhouse (pip wheel)",
        layout.root,
    )  # fmt: skip
    return len(list(layout.wheelhouse.glob("*.whl")))


def build_project_wheel(layout: BuildLayout) -> None:
    """The mlrig wheel (library and steps) that every step image installs last."""
    shutil.rmtree(layout.dist_dir, ignore_errors=True)
    run_logged(
        [find_uv(), "build", "--wheel", "--out-dir", str(layout.dist_dir)],
        layout.logs / "build-wheel.log",
        "Building the mlrig wheel",
        layout.root,
    )


def make_os_image(settings: Settings, engine: Engine) -> str:
    """Make the Debian + Python 3.11 base with debootstrap and import it. Needs root.

    Returns:
        The reference of the imported image.
    """
    if shutil.which("debootstrap") is None:
        raise ConfigError("debootstrap is not installed: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise ConfigError(
            "make base-image runs debootstrap, which needs root: sudo make base-image"
        )
    layout = BuildLayout(settings.root)
    shutil.rmtree(layout.rootfs, ignore_errors=True)
    layout.rootfs.parent.mkdir(parents=True, exist_ok=True)
    run_logged(
        ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
         DEBIAN_SUITE, str(layout.rootfs), DEBIAN_MIRROR],
        layout.logs / "debootstrap.log",
        "debootstrap",
        settings.root,
    )  # fmt: skip
    for leftover in DEBOOTSTRAP_LEFTOVERS:
        for path in (layout.rootfs / leftover).glob("*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    archive = layout.build_dir / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout.rootfs, arcname=".")
    run_logged(
        engine.command("import", "--change", OS_IMAGE_CHANGE, str(archive), LOCAL_OS_IMAGE),
        layout.logs / "import-base.log",
        f"{engine.name} import of the debootstrap tree",
        settings.root,
    )
    archive.unlink()
    shutil.rmtree(layout.rootfs)
    return LOCAL_OS_IMAGE


@dataclass(frozen=True)
class ImageBuild:
    """One image: its name, its content-hash reference, and whether this call built it."""

    name: str
    reference: str
    built: bool
    seconds: float


def debootstrap_inputs() -> str:
    """What `make base-image` makes its OS image from: suite, mirror, packages, what it trims
    and the image config. Two machines that ran it have the same inputs, not the same image id."""
    return "debootstrap " + json.dumps(
        {
            "suite": DEBIAN_SUITE,
            "mirror": DEBIAN_MIRROR,
            "packages": DEBIAN_PACKAGES,
            "trimmed": DEBOOTSTRAP_LEFTOVERS,
            "change": OS_IMAGE_CHANGE,
        },
        sort_keys=True,
    )


def os_base(settings: Settings, engine: Engine | None) -> tuple[str | None, str]:
    """The base the mlrig base image is built FROM, and the fingerprint of it the tags hold.

    MLRIG_BASE_IMAGE when set (fingerprint: the reference as given; by digest it names one
    image); else the debootstrap image when `make base-image` made one here (fingerprint: its
    debootstrap inputs); else the digest-pinned default of images/base/Dockerfile (None: its
    ARG, which the base tag holds with the Dockerfile). Never a local image id: one commit's
    content tags are the same on every machine and runner, so a registry's tag is found again
    before anything is built. Without an engine no local image can exist.
    """
    if settings.base_image:
        return settings.base_image, f"image {settings.base_image}"
    if engine is not None and engine.image_exists(LOCAL_OS_IMAGE):
        return LOCAL_OS_IMAGE, debootstrap_inputs()
    return None, "dockerfile-default"


def build_image(
    settings: Settings,
    engine: Engine,
    name: str,
    tag: str,
    build_args: dict[str, str],
    no_cache: bool = False,
    dockerfile: Path | None = None,
    labels: Mapping[str, str] | None = None,
) -> ImageBuild:
    """Build `dockerfile` (default images/<name>/Dockerfile) as `<repository>/<name>:<tag>`
    (and `:latest`), with `labels` set on the image."""
    import time

    from mlrig.lineage import git_commit

    layout = BuildLayout(settings.root)
    dockerfile = dockerfile or layout.dockerfile(name)
    reference = image_reference(settings, name, tag)
    if engine.image_exists(reference) and not no_cache:  # a cold build builds even so
        return ImageBuild(name, reference, built=False, seconds=0.0)
    started = time.monotonic()
    arguments = {"REVISION": git_commit(settings.root), **build_args}
    build_arg_flags = [f"--build-arg={key}={value}" for key, value in arguments.items()]
    label_flags = [f"--label={key}={value}" for key, value in (labels or {}).items()]
    run_logged(
        engine.command(
            "build",
            *engine.host_flags(),
            # docker's image format keeps SHELL (pipefail); podman defaults to OCI, which drops it
            *(["--format", "docker"] if engine.name == "podman" else []),
            *(["--no-cache"] if no_cache else []),
            "--file", str(dockerfile),
            "--tag", reference,
            "--tag", image_reference(settings, name, "latest"),
            *build_arg_flags,
            *label_flags,
            str(settings.root),
        ),
        layout.logs / f"image-{name}.log",
        f"Building image {name}",
        settings.root,
    )  # fmt: skip
    return ImageBuild(name, reference, built=True, seconds=round(time.monotonic() - started, 1))


def base_tag(settings: Settings, os_fingerprint: str) -> str:
    layout = BuildLayout(settings.root)
    return content_tag(
        os_fingerprint,
        tree_digest([layout.dockerfile(BASE).parent], settings.root),
        layout.requirements(BASE).read_text(),
    )


def step_tag(settings: Settings, step: str, base_reference: str) -> str:
    layout = BuildLayout(settings.root)
    root = settings.root
    sources = tree_digest([root / "src" / "mlrig", root / "steps", root / "pyproject.toml"], root)
    return content_tag(
        base_reference,
        step,  # its labels name it
        *(dockerfile.read_text() for dockerfile in layout.step_dockerfiles(step)),
        layout.requirements(step).read_text(),
        sources,
    )


def prepare_build_inputs(settings: Settings, steps: list[str]) -> None:
    """Requirement lists, wheelhouse and mlrig wheel: what the Dockerfiles COPY and mount."""
    layout = BuildLayout(settings.root)
    export_requirements(layout, steps)
    make_wheelhouse(layout)
    build_project_wheel(layout)


def build_images(
    settings: Settings,
    engine: Engine,
    steps: list[str] | None = None,
    on_image: Callable[[str], None] = lambda name: None,
    no_cache: bool = False,
) -> list[ImageBuild]:
    """Build the base image and the step images whose inputs changed.

    Args:
        settings: where the project is and how images are named.
        engine: docker or podman.
        steps: the step images to build (default: every folder under images/).
        on_image: called with each image's name before it is checked or built.
        no_cache: build every layer anew (a cold build, for the benchmark).

    Returns:
        Every image asked for, with whether it was built now.
    """
    all_steps = step_names(settings.root)
    unknown = sorted(set(steps or []) - set(all_steps))
    if unknown:
        raise ConfigError(
            f"No image for step(s) {', '.join(unknown)}: images/ has {', '.join(all_steps)}."
        )
    wanted = steps or all_steps
    prepare_build_inputs(settings, all_steps)
    on_image(BASE)
    base = build_base_image(settings, engine, no_cache)
    results = [base]
    for step in wanted:
        on_image(step)
        results.append(build_step_image(settings, engine, step, base.reference, no_cache))
    return results


def build_base_image(settings: Settings, engine: Engine, no_cache: bool = False) -> ImageBuild:
    """The mlrig base image (images/base) on the OS base, unless its content tag exists."""
    os_reference, os_fingerprint = os_base(settings, engine)
    return build_image(
        settings,
        engine,
        BASE,
        base_tag(settings, os_fingerprint),
        {"BASE_IMAGE": os_reference} if os_reference else {},
        no_cache,
    )


def serve_tag(settings: Settings, base_reference: str) -> str:
    """The serving image's content tag: its base, Dockerfile, requirements and mlrig sources."""
    layout = BuildLayout(settings.root)
    root = settings.root
    return content_tag(
        base_reference,
        layout.dockerfile(SERVE_IMAGE).read_text(),
        layout.requirements(SERVE_IMAGE).read_text(),
        tree_digest([root / "src" / "mlrig", root / "pyproject.toml"], root),
    )


def build_serve_image(settings: Settings, engine: Engine, no_cache: bool = False) -> ImageBuild:
    """The champion's scoring server (images/serve) FROM the base image, built first if need be.

    Needs the build inputs (prepare_build_inputs) and the serve group's requirement list
    (export_requirements with servers).
    """
    layout = BuildLayout(settings.root)
    base = build_base_image(settings, engine, no_cache)
    build_args = {
        "BASE_IMAGE": base.reference,
        "REQUIREMENTS": layout.requirements_by_content(SERVE_IMAGE),
    }
    tag = serve_tag(settings, base.reference)
    return build_image(settings, engine, SERVE_IMAGE, tag, build_args, no_cache)


def step_labels(settings: Settings, step: str) -> dict[str, str]:
    """The labels that name a step's image. Set by the builder, not by a LABEL of the generic
    Dockerfile: the engine's layer cache would give one step's image another's labels."""
    from mlrig.lineage import git_commit

    return {
        "org.opencontainers.image.title": f"mlrig-{step}",
        "org.opencontainers.image.description": (
            f"mlrig pipeline step {step}: {step_summary(settings.root, step)}"
        ),
        "org.opencontainers.image.revision": git_commit(settings.root),
        "io.mlrig.step": step,
    }


def build_step_image(
    settings: Settings, engine: Engine, step: str, base_reference: str, no_cache: bool
) -> ImageBuild:
    """images/step/Dockerfile for `step`, then images/<step>/Dockerfile FROM it if there is one
    (the generic image then has the tag `<tag>-generic`)."""
    layout = BuildLayout(settings.root)
    tag = step_tag(settings, step, base_reference)
    dockerfiles = layout.step_dockerfiles(step)
    build_args = {
        "BASE_IMAGE": base_reference,
        "REQUIREMENTS": layout.requirements_by_content(step),
    }
    labels = step_labels(settings, step)
    if len(dockerfiles) == 1:  # no layers of its own
        return build_image(
            settings, engine, step, tag, build_args, no_cache, dockerfiles[0], labels
        )
    generic, own = dockerfiles
    under = build_image(
        settings, engine, step, f"{tag}-generic", build_args, no_cache, generic, labels
    )
    built = build_image(
        settings, engine, step, tag, {"BASE_IMAGE": under.reference}, no_cache, own, labels
    )
    return replace(built, built=built.built or under.built, seconds=built.seconds + under.seconds)


def step_image_references(settings: Settings, engine: Engine | None) -> dict[str, str]:
    """Each step's image reference (by content tag) for the sources as they are now.

    The references say which image a stage must run in, built or not: `make images` builds
    exactly these. They are computed from the sources; the engine is asked only for the id of
    a local base image (None: there is no engine, and so no local base).
    """
    layout = BuildLayout(settings.root)
    steps = step_names(settings.root)
    export_requirements(layout, steps)
    _, os_fingerprint = os_base(settings, engine)
    base_reference = image_reference(settings, BASE, base_tag(settings, os_fingerprint))
    return {step: image_reference(settings, step, step_tag(settings, step, base_reference))
            for step in steps}  # fmt: skip


def unbuilt_images(settings: Settings, images: Mapping[str, str]) -> list[str]:
    """The steps whose image this machine's engine lacks (every local one without an engine).

    An image by digest (`registry/step@sha256:...`) is a registry's, built by a CI job.
    """
    local = {step: reference for step, reference in images.items() if "@sha256:" not in reference}
    engine = engine_if_any(settings)
    if engine is None:
        return sorted(local)
    return sorted(step for step, reference in local.items() if not engine.image_exists(reference))


def current_step_images(settings: Settings, engine: Engine) -> dict[str, str]:
    """Each step's image for the sources as they are now (by content tag).

    Raises:
        MlrigError: an image is missing or out of date; `make images` builds it.
    """
    images = step_image_references(settings, engine)
    missing = [step for step, reference in images.items() if not engine.image_exists(reference)]
    if missing:
        raise MlrigError(
            f"The images of step(s) {', '.join(missing)} are missing or older than the code "
            "(their content tag changed). Build them first: make images"
        )
    return images


def build_server_images(
    settings: Settings, engine: Engine, on_image: Callable[[str], None] = lambda name: None
) -> list[ImageBuild]:
    """Build the chart's server images (SERVER_IMAGES, then SERVE_IMAGE) whose inputs changed.

    Each server is built FROM the bare OS image (the debootstrap one where `make base-image`
    made it), tagged with a content hash of that base, its Dockerfile and its locked
    requirements; the scoring server FROM the mlrig base (built first when missing).
    """
    layout = BuildLayout(settings.root)
    prepare_build_inputs(settings, step_names(settings.root))
    export_requirements(layout, step_names(settings.root), servers=True)
    os_reference, os_fingerprint = os_base(settings, engine)
    results = []
    for name, group in SERVER_IMAGES.items():
        on_image(name)
        folder = layout.dockerfile(name).parent
        tag = content_tag(
            os_fingerprint,
            tree_digest([folder], settings.root),
            layout.requirements(name).read_text() if group else "",
        )
        build_args = {"BASE_IMAGE": os_reference} if os_reference else {}
        results.append(build_image(settings, engine, name, tag, build_args))
    on_image(SERVE_IMAGE)
    results.append(build_serve_image(settings, engine))
    return results
