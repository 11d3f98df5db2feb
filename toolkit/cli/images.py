"""`toolkit images`: build the GPU shell image and the toolkit's lifecycle image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import command_group
from toolkit.image_names import SHELL_IMAGE, TOOLKIT_IMAGE, Image
from toolkit.paths import project_dir, state_dir

app = command_group(
    "Build the toolkit's images: the prebuilt GPU shell (images/shell: CUDA, sshd, ttyd, ready in "
    "seconds) and the lifecycle image (images/toolkit: the toolkit's CLI for the cluster's own jobs)."
)


@app.command()
def build(
    *,
    image: Annotated[
        Image, typer.Option(help="Which image: the users' GPU shell, or the toolkit's CLI.")
    ] = Image.shell,
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image (default: the Dockerfile's; NVIDIA's CUDA devel image for the shell, "
            "debian:12-slim for the toolkit)."
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            help=f"Name of the built image (default: {SHELL_IMAGE}; {TOOLKIT_IMAGE} for the toolkit).",
            show_default=False,
        ),
    ] = None,
    ttyd: Annotated[
        Path | None,
        typer.Option(
            help="Shell image: a local ttyd binary (air-gapped builds); it must match the pinned sha256."
        ),
    ] = None,
    wheels: Annotated[
        Path | None,
        typer.Option(
            help="A directory holding the pinned wheels (air-gapped builds; default: download them): "
            "images/toolkit/requirements.txt's for the toolkit image, "
            "images/shell/jupyter-requirements.txt's (for Python 3.10 and 3.11) for the shell's JupyterLab."
        ),
    ] = None,
    builder: Annotated[
        str | None, typer.Option(help="podman, buildah or docker (default: the first found).")
    ] = None,
    push_to: Annotated[
        str | None, typer.Option("--push", help="Push to this registry after building.")
    ] = None,
    export_to: Annotated[
        Path | None, typer.Option("--export", help="Write an image tarball k3s can import (air-gap).")
    ] = None,
) -> None:
    """Build an image; optionally push it and export it as a tarball."""
    from rich.console import Console

    from toolkit import images

    project = project_dir()
    tool = images.find_builder(builder)
    name = tag or images.DEFAULT_TAGS[image]
    log = state_dir(project) / "images" / f"{image}-build.log"
    console = Console()
    with console.status(f"building the {image} image") as status:
        images.build(
            project,
            status.update,
            image=image,
            base=base,
            tag=name,
            ttyd=ttyd,
            wheels=wheels,
            builder=tool,
            log=log,
        )
        if push_to:
            status.update(f"pushing to {push_to}")
            console.print(f"pushed {images.push(tool, name, push_to, log)}")
        if export_to:
            status.update(f"exporting to {export_to}")
            images.export(tool, name, export_to, log)
            console.print(f"exported {export_to}")
    console.print(f"built {name} (log: {log})")
