"""`mlrig images`: the step images and the servers' images, built, pushed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.cli.app import (
    console,
    images_app,
)
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    pass


@images_app.command("build")
@exits_cleanly
def images_build_command(
    steps: Annotated[
        list[str] | None, typer.Argument(help="Step images to build (default: all).")
    ] = None,
) -> None:
    """Build the base and step images whose inputs changed (content-hash tags)."""
    from mlrig.images.build import build_images
    from mlrig.images.engine import find_engine
    from mlrig.settings import load_settings

    settings = load_settings()
    engine = find_engine(settings)
    with console.status("preparing the build (requirements, wheelhouse, mlrig wheel)") as status:
        images = build_images(
            settings, engine, steps, on_image=lambda name: status.update(f"image {name}")
        )
    for image in images:
        state = f"built in {image.seconds:.0f}s" if image.built else "up to date"
        typer.echo(f"{image.reference}  {state}")


@images_app.command("servers")
@exits_cleanly
def images_servers_command() -> None:
    """Build the Helm chart's server images (images/mlflow-server) whose inputs changed."""
    from mlrig.images.build import build_server_images
    from mlrig.images.engine import find_engine
    from mlrig.settings import load_settings

    settings = load_settings()
    engine = find_engine(settings)
    with console.status("preparing the build (requirements, wheelhouse)") as status:
        images = build_server_images(
            settings, engine, on_image=lambda name: status.update(f"image {name}")
        )
    for image in images:
        state = f"built in {image.seconds:.0f}s" if image.built else "up to date"
        typer.echo(f"{image.reference}  {state}")


@images_app.command("push")
@exits_cleanly
def images_push_command(
    registry: Annotated[
        str, typer.Option(help="where to push: registry/path (GitLab: $CI_REGISTRY_IMAGE)")
    ],
    step: Annotated[
        list[str] | None, typer.Option(help="a step's image (repeatable; default: every step)")
    ] = None,
    digests: Annotated[
        Path, typer.Option(help="JSON file to write: step -> registry/step@sha256:...")
    ] = Path("images.json"),
    tls_verify: Annotated[bool, typer.Option(help="verify the registry's TLS")] = True,
) -> None:
    """Push step images under their content tags; a tag the registry has is neither built nor
    pushed again."""
    from mlrig.images.build import step_names
    from mlrig.images.engine import find_engine
    from mlrig.images.registry import push_step_images, write_digests
    from mlrig.settings import load_settings

    settings = load_settings()
    engine = find_engine(settings)
    steps = step or step_names(settings.root)
    with console.status("asking the registry, then building and pushing what it lacks"):
        images = push_step_images(settings, engine, registry, steps, tls_verify)
    write_digests(images, digests)
    for image in images:
        state = "pushed" if image.pushed else "already in the registry"
        typer.echo(f"{image.reference}  {image.digest}  {state}")
    typer.echo(f"Digests: {digests}")


@images_app.command("digests")
@exits_cleanly
def images_digests_command(
    files: Annotated[
        list[Path], typer.Argument(help="the build jobs' digest files (images-<step>.json)")
    ],
    output: Annotated[Path, typer.Option(help="JSON file to write: step -> image by digest")],
    under: Annotated[
        str | None,
        typer.Option(help="the registry path every image must be right under (the trusted one)"),
    ] = None,
) -> None:
    """Merge the build jobs' digest files into one, checking every step is there by digest."""
    import json

    from mlrig.images.build import step_names
    from mlrig.images.registry import merge_digests
    from mlrig.settings import load_settings

    digests = merge_digests(files, step_names(load_settings().root), under)
    output.write_text(json.dumps(digests, indent=2) + "\n")
    typer.echo(f"{len(digests)} step images by digest in {output}")


@images_app.command("wheels")
@exits_cleanly
def images_wheels_command() -> None:
    """Fill the wheelhouse (.mlrig/wheels) that image builds install from, offline."""
    from mlrig.images.build import BuildLayout, make_wheelhouse
    from mlrig.settings import load_settings

    with console.status("downloading and building wheels"):
        count = make_wheelhouse(BuildLayout(load_settings().root))
    typer.echo(f"{count} wheels in .mlrig/wheels")


@images_app.command("base-os")
@exits_cleanly
def images_base_os_command() -> None:
    """Make a Debian bookworm + Python 3.11 base image with debootstrap (needs root)."""
    from mlrig.images.build import make_os_image
    from mlrig.images.engine import find_engine
    from mlrig.settings import load_settings

    settings = load_settings()
    with console.status("debootstrap bookworm (a few minutes)"):
        reference = make_os_image(settings, find_engine(settings))
    typer.echo(f"{reference}: make images now builds on it")
