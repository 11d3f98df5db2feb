"""`toolkit images`: build the GPU shell image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import command_group
from toolkit.images import SHELL_IMAGE
from toolkit.paths import project_dir, state_dir

app = command_group("Build the prebuilt GPU shell image (images/shell): CUDA, sshd, ttyd, ready in seconds.")


@app.command()
def build(
    *,
    base: Annotated[
        str | None, typer.Option(help="Base image (default: the Dockerfile's NVIDIA CUDA devel image).")
    ] = None,
    tag: Annotated[str, typer.Option(help="Name of the built image.")] = SHELL_IMAGE,
    ttyd: Annotated[
        Path | None,
        typer.Option(help="A local ttyd binary (air-gapped builds); it must match the pinned sha256."),
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
    """Build the shell image; optionally push it and export it as a tarball."""
    from rich.console import Console

    from toolkit import images

    project = project_dir()
    tool = images.find_builder(builder)
    log = state_dir(project) / "images" / "shell-build.log"
    console = Console()
    with console.status("building the shell image") as status:
        images.build(project, status.update, base=base, tag=tag, ttyd=ttyd, builder=tool, log=log)
        if push_to:
            status.update(f"pushing to {push_to}")
            console.print(f"pushed {images.push(tool, tag, push_to, log)}")
        if export_to:
            status.update(f"exporting to {export_to}")
            images.export(tool, tag, export_to, log)
            console.print(f"exported {export_to}")
    console.print(f"built {tag} (log: {log})")
