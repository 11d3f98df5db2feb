"""`toolkit doctor`: check every host over SSH before anything is installed."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.cli import Output, print_json
from toolkit.cli.options import InventoryOption, OutputOption
from toolkit.extras import operator_command


@operator_command("doctor")
def doctor(
    *,
    inventory_path: InventoryOption,
    accept_new: Annotated[
        bool,
        typer.Option(
            "--accept-new", help="Trust and save unknown host keys (changed keys are still refused)."
        ),
    ] = False,
    output: OutputOption = Output.table,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each host.")] = 5.0,
) -> None:
    """Check every host in parallel over SSH (no Ansible): reachability and sudo, OS, kernel
    headers, GPUs (against nvidia_driver_expected_gpus) and NVSwitches, free disk, time sync,
    k3s's ports, and existing driver, Fabric Manager and k3s versions.

    Host keys are checked strictly against the inventory's known_hosts. Exit 2 when a host is
    unreachable, 1 when a check fails, 0 otherwise.
    """
    from rich.console import Console
    from rich.table import Table

    from toolkit import doctor as checks
    from toolkit import inventory
    from toolkit.checks import STYLE

    loaded, _ = inventory.load_and_check(inventory_path)
    reports = checks.run(loaded, accept_new=accept_new, timeout=timeout)
    if output is Output.json:
        print_json([report.as_dict() for report in reports])
    else:
        names = [c.check for c in next((r.checks for r in reports if r.reachable), [])]
        table = Table("host", "address", "ssh", *names)
        for report in reports:
            if not report.reachable:
                table.add_row(report.host, report.address, f"[bold red]{report.error}[/]", *[""] * len(names))
                continue
            cells = [f"[{STYLE[c.status]}]{c.detail}[/]" for c in report.checks]
            table.add_row(report.host, report.address, "[green]ok[/]", *cells)
        Console().print(table)
    if any(not report.reachable for report in reports):
        raise typer.Exit(2)
    raise typer.Exit(1 if any(report.failed for report in reports) else 0)
