"""`toolkit shell ssh-config`: make ssh, VS Code and Cursor know the toolkit's shells."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from toolkit.cli import command_group

app = command_group("Add or remove the Include line that makes ssh (and VS Code) know your shells.")


@app.command()
def enable(
    ssh_config: Annotated[Path, typer.Option(help="Your ssh config.")] = Path("~/.ssh/config"),
) -> None:
    """Add 'Include <toolkit config dir>/ssh_config' to the top of your ssh config (idempotent)."""
    from toolkit import sshconfig

    changed = sshconfig.set_include(True, ssh_config.expanduser())
    state = "added" if changed else "already present"
    Console(highlight=False).print(f"{state}: {sshconfig.include_line()}")


@app.command()
def disable(
    ssh_config: Annotated[Path, typer.Option(help="Your ssh config.")] = Path("~/.ssh/config"),
) -> None:
    """Remove the toolkit's Include line from your ssh config (idempotent)."""
    from toolkit import sshconfig

    changed = sshconfig.set_include(False, ssh_config.expanduser())
    Console(highlight=False).print(f"{'removed' if changed else 'not present'}: {sshconfig.include_line()}")
