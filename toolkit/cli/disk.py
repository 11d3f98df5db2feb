"""`toolkit disk`: a user's volumes, which outlive their shells."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from toolkit.cli import Output, command_group, present, print_json
from toolkit.cli.options import ContextOption, KubeconfigOption, OutputOption, UserOption
from toolkit.tenancy import user_from_context

app = command_group(
    "Your disks: the volumes your shells' homes live on, and your shared area (/shared in every "
    "shell).\n\nA shell's home is kept when the shell is deleted (unless --purge) and shows up "
    "here; [bold]toolkit shell create NAME --disk DISK[/bold] makes it the home of a new shell."
)


@app.command("list")
def list_(
    *,
    all_users: Annotated[
        bool, typer.Option("--all-users", "-A", help="Every user's disks (operators).")
    ] = False,
    output: OutputOption = Output.table,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Your disks: size, class, the shell using it or when last used, whether it is kept.

    A disk is kept until you delete it, or delete the shell whose home it is with --purge.
    """
    from rich.console import Console
    from rich.table import Table

    from toolkit import disks, kube

    connection = kube.connect(kubeconfig, context)
    who = None if all_users else user_from_context(connection, user)
    found = disks.list_disks(connection, who)
    if output is Output.json:
        print_json([d.as_dict() for d in found])
        return
    now = datetime.now(UTC)
    table = Table("name", "user", "size", "class", "access", "used by", "last used", "kept")
    for disk in found:
        last_used = f"{present.age(disk.last_used, now)} ago" if disk.last_used else "now"
        table.add_row(
            disk.name,
            disk.user,
            disk.size,
            disk.storage_class,
            ",".join(disk.access_modes),
            ", ".join(disk.used_by) or "-",
            last_used,
            disk.kept,
        )
    Console(highlight=False).print(table if found else "no disks")


@app.command()
def delete(
    name: Annotated[
        str, typer.Argument(help="The disk's name, as 'toolkit disk list' shows it.", show_default=False)
    ],
    *,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Delete a disk and its files; refused while a shell uses it.

    A paused shell still uses its home: delete the shell first (its home is kept), then the disk.
    """
    from rich.console import Console

    from toolkit import disks, kube

    connection = kube.connect(kubeconfig, context)
    who = user_from_context(connection, user)
    disk = disks.get_disk(connection, who, name)
    if disk.used_by:  # said before asking; delete_disk checks again
        disks.delete_disk(connection, who, name)
    if not yes and not typer.confirm(f"delete {who}'s disk {name} ({disk.size}) and every file on it?"):
        raise typer.Exit(1)
    disks.delete_disk(connection, who, name)
    Console(highlight=False).print(f"deleted disk {name}")
