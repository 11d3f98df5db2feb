"""`toolkit lab`: a local rehearsal cluster of real Debian 12 systemd hosts under podman."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli import command_group
from toolkit.extras import operator_command
from toolkit.lab_network import DEFAULT_SUBNET
from toolkit.paths import project_dir

if TYPE_CHECKING:
    from rich.console import Console


def _console() -> Console:
    from rich.console import Console

    return Console()


app = command_group(
    "A local rehearsal lab: real Debian 12 systemd containers under podman, each with its own sshd "
    "and address. [bold]lab up[/bold] writes [cyan]inventory/lab/hosts.yml[/cyan] for "
    "[bold]toolkit cluster up -i inventory/lab[/bold]."
)


@app.command()
@operator_command("lab up")
def up(
    *,
    hosts: Annotated[int, typer.Option("--hosts", "-n", help="Number of hosts in the lab.")] = 3,
    servers: Annotated[int, typer.Option(help="How many of them are k3s servers (odd).")] = 1,
    subnet: Annotated[
        str, typer.Option(help="Address range of the lab network.", envvar="TOOLKIT_LAB_SUBNET")
    ] = DEFAULT_SUBNET,
) -> None:
    """Start the lab (or grow it to --hosts), then write its inventory and SSH key.

    The host image is built once from Debian packages and cached. A failed start removes what it made.
    """
    from toolkit import lab

    console = _console()
    project = project_dir()
    with console.status("starting the lab") as status:
        made = lab.up(project, status.update, count=hosts, servers=servers, subnet=subnet)
    paths = lab.LabPaths.for_project(project)
    console.print(
        f"lab is up: {len(made)} hosts; inventory [cyan]{paths.hosts_file.relative_to(project)}[/cyan]"
    )
    console.print("next: [bold]toolkit cluster up -i inventory/lab[/bold]")


@app.command()
@operator_command("lab down")
def down(
    *,
    image: Annotated[bool, typer.Option("--image", help="Also remove the cached host image.")] = False,
) -> None:
    """Remove the lab's containers, network, inventory and key. Nothing else is left behind."""
    from toolkit import lab

    console = _console()
    with console.status("removing the lab") as status:
        lab.down(project_dir(), status.update, remove_image=image)
    console.print("lab is down")


@app.command()
@operator_command("lab status")
def status() -> None:
    """Show each lab host: container state, address and whether sshd answers."""
    from rich.table import Table

    from toolkit import lab

    rows = lab.status()
    console = _console()
    if not rows:
        console.print("no lab is running: [bold]toolkit lab up[/bold]")
        raise typer.Exit(1)
    table = Table("host", "container", "address", "state", "ssh")
    for row in rows:
        table.add_row(row.name, row.container, row.address, row.state, "yes" if row.ssh else "[red]no[/red]")
    console.print(table)


@app.command()
@operator_command("lab image")
def image(
    *,
    rebuild: Annotated[bool, typer.Option(help="Build again even if the image is cached.")] = False,
) -> None:
    """Build the lab host image (also the platform of every molecule scenario)."""
    from toolkit import lab

    console = _console()
    project = project_dir()
    with console.status("lab image") as status:
        built = lab.build_image(project, lab.LabPaths.for_project(project), status.update, rebuild=rebuild)
    console.print(f"{lab.LAB_IMAGE} {'built' if built else 'is cached (use --rebuild to build again)'}")
