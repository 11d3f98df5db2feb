"""`toolkit inventory`: start a site's inventory, and check one before anything runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import command_group
from toolkit.cli.options import InventoryOption
from toolkit.errors import BadInputError
from toolkit.extras import operator_command
from toolkit.paths import project_dir

app = command_group("Write a site's inventory skeleton, and validate an inventory before anything runs.")


@app.command()
@operator_command("inventory init")
def init(
    directory: Annotated[
        Path, typer.Argument(help="New directory for the site's inventory.", show_default=False)
    ],
) -> None:
    """Write a commented inventory skeleton: the groups, and the group_vars a site must fill."""
    if directory.exists() and any(directory.iterdir()):
        raise BadInputError(f"{directory} exists and is not empty; choose a new directory")
    shutil.copytree(project_dir() / "inventory" / "example", directory, dirs_exist_ok=True)
    typer.echo(f"wrote {directory}/hosts.yml and {directory}/group_vars/all.yml")
    typer.echo(f"next: edit both, then `toolkit inventory validate -i {directory}`")


@app.command()
@operator_command("inventory validate")
def validate(*, inventory_path: InventoryOption) -> None:
    """Check an inventory: groups, an odd number of servers, the API endpoint for HA, pinned
    versions, Weka backends, a vaulted token, and no machine listed twice.

    Each problem is one line. Exit 3 when there is an error; warnings alone exit 0.
    `toolkit cluster up` runs the same checks first.
    """
    from rich.console import Console

    from toolkit import inventory

    loaded = inventory.load(inventory_path)
    findings = inventory.check(loaded)
    err = Console(stderr=True, highlight=False)
    for warning in findings.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    for error in findings.errors:
        err.print(f"[bold red]error:[/bold red] {error}")
    if findings.errors:
        raise typer.Exit(3)
    typer.echo(f"inventory {inventory_path}: {len(loaded.hosts('cluster'))} hosts, no errors")
