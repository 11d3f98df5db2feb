"""`toolkit node`: add a host to the cluster, drain or uncordon a node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import command_group
from toolkit.cli.options import InventoryOption
from toolkit.extras import operator_command

app = command_group("Add a host to the cluster, and drain or uncordon a node.")

HostArgument = Annotated[str, typer.Argument(help="The host's name in the inventory.", show_default=False)]


def _node_action(action: str, host: str, inventory_path: Path) -> None:
    from toolkit.cli.display import run_playbook_command

    raise typer.Exit(
        run_playbook_command(
            "node.yml", inventory_path, extra_vars=[f"node_action={action}", f"node_host={host}"], node=host
        ).exit_code
    )


@app.command()
@operator_command("node add")
def add(host: HostArgument, *, inventory_path: InventoryOption) -> None:
    """Bring a host newly listed in the inventory into the cluster.

    Runs site.yml on the host and on the servers (their certificates name every server).
    """
    from toolkit.cli.display import run_playbook_command

    raise typer.Exit(
        run_playbook_command("site.yml", inventory_path, limit=f"{host},k3s_servers", node=host).exit_code
    )


@app.command()
@operator_command("node drain")
def drain(host: HostArgument, *, inventory_path: InventoryOption) -> None:
    """Evict the node's pods and mark it unschedulable (before maintenance)."""
    _node_action("drain", host, inventory_path)


@app.command()
@operator_command("node uncordon")
def uncordon(host: HostArgument, *, inventory_path: InventoryOption) -> None:
    """Let the node take pods again (after maintenance)."""
    _node_action("uncordon", host, inventory_path)
