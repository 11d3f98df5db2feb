"""`toolkit node`: add a host to the cluster, drain or uncordon a node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import command_group
from toolkit.cli.cluster import InventoryOption, run_playbook_command

app = command_group("Add a host to the cluster, and drain or uncordon a node.")

HostArgument = Annotated[str, typer.Argument(help="The host's name in the inventory.", show_default=False)]


def _require_node(inventory_path: Path, host: str) -> None:
    from toolkit import inventory
    from toolkit.errors import BadInputError

    loaded, _ = inventory.load_and_check(inventory_path)
    nodes = set(loaded.hosts("k3s_servers")) | set(loaded.hosts("k3s_agents"))
    if host not in nodes:
        raise BadInputError(f"{host} is not a k3s server or agent in {inventory_path}: add it there first")


@app.command()
def add(host: HostArgument, *, inventory_path: InventoryOption) -> None:
    """Bring a host newly listed in the inventory into the cluster.

    Runs site.yml on the host and on the servers (their certificates name every server).
    """
    _require_node(inventory_path, host)
    raise typer.Exit(run_playbook_command("site.yml", inventory_path, limit=f"{host},k3s_servers"))


@app.command()
def drain(host: HostArgument, *, inventory_path: InventoryOption) -> None:
    """Evict the node's pods and mark it unschedulable (before maintenance)."""
    _require_node(inventory_path, host)
    raise typer.Exit(
        run_playbook_command(
            "node.yml", inventory_path, extra_vars=["node_action=drain", f"node_host={host}"]
        )
    )


@app.command()
def uncordon(host: HostArgument, *, inventory_path: InventoryOption) -> None:
    """Let the node take pods again (after maintenance)."""
    _require_node(inventory_path, host)
    raise typer.Exit(
        run_playbook_command(
            "node.yml", inventory_path, extra_vars=["node_action=uncordon", f"node_host={host}"]
        )
    )
