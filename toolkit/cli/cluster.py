"""`toolkit cluster`: build and change the cluster from an inventory."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli import Output, command_group, present, print_json
from toolkit.cli.options import (
    ContextOption,
    ExtraVarsOption,
    InventoryOption,
    KubeconfigOption,
    LimitOption,
    OutputOption,
    SkipTagsOption,
    TagsOption,
)
from toolkit.errors import BadInputError
from toolkit.extras import operator_command

if TYPE_CHECKING:
    from rich.console import Console

    from toolkit.gpu_queue import Waiting

app = command_group("Build and change the cluster described by an inventory.")


@app.command()
@operator_command("cluster up")
def up(
    *,
    inventory_path: InventoryOption,
    limit: LimitOption = None,
    tags: TagsOption = None,
    skip_tags: SkipTagsOption = None,
    extra_vars: ExtraVarsOption = None,
    check: Annotated[bool, typer.Option("--check", help="Change nothing; report what would change.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the changes made to files.")] = False,
) -> None:
    """Build or converge the cluster: run playbooks/site.yml on the inventory.

    Exit codes: 0 done, 1 a task failed, 2 a host was unreachable, 3 bad input (nothing ran).
    A second run on a converged cluster reports no changes.
    """
    from toolkit.cli.display import run_playbook_command

    raise typer.Exit(
        run_playbook_command(
            "site.yml",
            inventory_path,
            limit=limit,
            tags=tags,
            skip_tags=skip_tags,
            extra_vars=extra_vars,
            check=check,
            diff=diff,
        ).exit_code
    )


@app.command()
@operator_command("cluster plan")
def plan(
    *,
    inventory_path: InventoryOption,
    limit: LimitOption = None,
    tags: TagsOption = None,
    skip_tags: SkipTagsOption = None,
    extra_vars: ExtraVarsOption = None,
) -> None:
    """Show what `cluster up` would change, changing nothing (check mode with diffs)."""
    up(
        inventory_path=inventory_path,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
        extra_vars=extra_vars,
        check=True,
        diff=True,
    )


@app.command()
@operator_command("cluster upgrade")
def upgrade(
    *,
    inventory_path: InventoryOption,
    limit: LimitOption = None,
    extra_vars: ExtraVarsOption = None,
) -> None:
    """Upgrade k3s to the inventory's k3s_version: servers one at a time, then agents.

    Each node is drained before and uncordoned after; nodes already at that version are left alone.
    """
    from toolkit.cli.display import run_playbook_command

    raise typer.Exit(
        run_playbook_command("upgrade.yml", inventory_path, limit=limit, extra_vars=extra_vars).exit_code
    )


@app.command()
@operator_command("cluster reset")
def reset(
    *,
    inventory_path: InventoryOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    limit: LimitOption = None,
) -> None:
    """Tear k3s down on every node (or --limit): services, containers, CNI, iptables, all cluster data.

    Asks first, naming the hosts; --yes skips the question.
    """
    from toolkit import inventory
    from toolkit.cli.display import run_playbook_command

    loaded, _ = inventory.load_and_check(inventory_path)
    hosts = sorted(set(loaded.hosts("k3s_servers")) | set(loaded.hosts("k3s_agents")))
    typer.echo(
        f"This removes k3s and all cluster data (etcd, volumes in /var/lib/rancher) from: {', '.join(hosts)}"
    )
    if limit:
        typer.echo(f"limited to: {limit}")
    if not yes:
        if not sys.stdin.isatty():
            raise BadInputError("refusing to reset without --yes when no one can answer the question")
        if not typer.confirm("Reset the cluster?", default=False):
            typer.echo("nothing was changed")
            raise typer.Exit(1)
    raise typer.Exit(run_playbook_command("reset.yml", inventory_path, limit=limit).exit_code)


@app.command()
@operator_command("cluster kubeconfig")
def kubeconfig(
    *,
    inventory_path: InventoryOption,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the kubeconfig to this file (0600) instead of merging it."
        ),
    ] = None,
    context: Annotated[
        str, typer.Option(help="Context name when merging into ~/.kube/config (or $KUBECONFIG).")
    ] = "toolkit",
    kubeconfig_path: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            envvar="KUBECONFIG",
            help="The kubeconfig to merge into.",
            show_default="~/.kube/config",
        ),
    ] = None,
) -> None:
    """Fetch the admin kubeconfig from the first server, pointed at the API endpoint.

    It is written with mode 0600, to --output or merged into your kubeconfig as a named context.
    """
    import tempfile

    from toolkit.cli.display import run_playbook_command
    from toolkit.kubeconfig import merge_into

    with tempfile.TemporaryDirectory(prefix="toolkit-kubeconfig-") as scratch:
        fetched = (output or Path(scratch) / "admin.yaml").resolve()
        code = run_playbook_command(
            "kubeconfig.yml", inventory_path, extra_vars=[f"k3s_kubeconfig_dest={fetched}"], quiet_recap=True
        ).exit_code
        if code != 0:
            raise typer.Exit(code)
        if output is None:
            target = kubeconfig_path or Path.home() / ".kube" / "config"
            merge_into(target, fetched, context)
            typer.echo(f"merged into {target} as context '{context}' (now current)")
        else:
            typer.echo(f"wrote {output} (mode 0600)")


@app.command()
def status(
    *,
    output: OutputOption = Output.table,
    kubeconfig_path: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """The cluster from its Kubernetes API (with the admin kubeconfig from `toolkit cluster kubeconfig`):
    nodes, versions, GPUs allocatable and used, shells, and what the GPUs are doing (utilisation and
    memory per node and per shell, and who holds GPUs at 0%) from NVIDIA's dcgm-exporter in
    namespace toolkit-monitoring, read through the API server's pods proxy; "n/a" without it."""
    from rich.console import Console
    from rich.table import Table

    from toolkit import cluster_status, kube, lifecycle

    found = cluster_status.collect(kube.connect(kubeconfig_path, context))
    if output is Output.json:
        print_json(found.as_dict())
        return
    console = Console(highlight=False)
    nodes = Table("node", "role", "state", "k3s", "driver", "gpu", "gpus", "used", "gpu use")
    for node in found.nodes:
        state = ("ready" if node.schedulable else "cordoned") if node.ready else "[bold red]not ready[/]"
        nodes.add_row(
            node.name, node.role, state, node.k3s_version, node.driver_version or "unknown",
            node.gpu_product or "-", str(node.gpus), str(node.gpus_used),
            node.gpu_use.describe() if node.gpu_use else "n/a" if node.gpus else "-",
        )  # fmt: skip
    console.print(nodes)
    console.print(f"GPUs: {found.gpus_used} of {found.gpus} in use")
    if any(node.gpus and not node.driver_version for node in found.nodes):
        console.print(
            "driver unknown: the API shows it only with GPU feature discovery's node labels or dcgm-exporter"
        )
    if found.gpu_use_unavailable:
        console.print(f"gpu use: n/a, {found.gpu_use_unavailable}", markup=False)
    if found.gpu_use_unanswered:
        console.print(f"gpu use: no answer from dcgm-exporter on {', '.join(found.gpu_use_unanswered)}")
    idle = found.idle_holders
    if idle:
        held = ", ".join(
            f"{f.user}/{f.shell} ({f.use.gpus} GPU{'s' if f.use.gpus != 1 else ''})" for f in idle
        )
        console.print(f"[yellow]holding GPUs at 0%:[/] {held}")
    uses = {(f.user, f.shell): f.use.describe() for f in found.shell_gpu_use}
    shells = Table("shell", "user", "gpus", "status", "gpu use", "endpoint")
    waiting = {(w.user, w.shell): w.position for w in found.queue or []}
    for shell in found.shells:
        position = waiting.get((shell.user, shell.name))
        status = f"queued ({position})" if position and shell.status != "paused" else shell.status
        use = uses.get((shell.user, shell.name), "n/a" if shell.gpus and shell.status != "paused" else "-")
        shells.add_row(shell.name, shell.user, shell.size, status, use, shell.endpoint)
    running = sum(1 for shell in found.shells if shell.status != "paused")
    console.print(f"shells: {running} running, {len(found.shells) - running} paused")
    if found.shells:
        console.print(shells)
    present.problems(console, found.shells)
    _print_queue(console, found.queue, found.queue_error)
    console.print(
        lifecycle.describe(found.lifecycle, lifecycle.now_utc(), found.lifecycle_trouble), markup=False
    )


def _print_queue(console: Console, queue: list[Waiting] | None, error: str) -> None:
    """Who waits in the cluster's queue, for what, and for how long."""
    from rich.markup import escape
    from rich.table import Table

    if error:
        why = escape(error)
        console.print(
            f"[yellow]queue: unavailable[/] ({why}): is Kueue running? kubectl -n kueue-system get pods"
        )
        return
    if queue is None:
        console.print("queue: off (no Kueue queue in the shells settings)")
        return
    console.print(f"queue: {len(queue)} shell(s) waiting for GPUs")
    if not queue:
        return
    now = datetime.now(UTC)
    table = Table("position", "user", "shell", "gpus", "waiting", "why")
    for waiting in queue:
        since = present.age(waiting.since, now) if waiting.since else "-"
        table.add_row(
            str(waiting.position), waiting.user, waiting.shell, str(waiting.gpus), since, waiting.why
        )
    console.print(table)


@app.command()
@operator_command("cluster verify")
def verify(
    *,
    inventory_path: InventoryOption,
    extra_vars: ExtraVarsOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The acceptance test, on real hardware: every node Ready; each GPU node's allocatable GPUs
    equal nvidia-smi's count; a CUDA pod (runtimeClassName nvidia) runs nvidia-smi on every GPU
    node; Fabric Manager active on NVSwitch nodes; with Weka on, a Weka mount and a volume of the
    shells' StorageClass written and read back; a shell created, reached over SSH and deleted.

    Checks that cannot run (no GPU, the lab's stand-in k3s, Weka off) are shown as skipped, with
    the reason. Exit 1 when any check fails. `-e verify_cuda_image=...` names a local CUDA image.
    """
    from rich.console import Console
    from rich.table import Table

    from toolkit import verify as acceptance
    from toolkit.checks import STYLE
    from toolkit.cli.display import run_playbook_command
    from toolkit.runner import RunOutcome

    def playbook(name: str, extra: list[str]) -> RunOutcome:
        return run_playbook_command(
            name, inventory_path, extra_vars=extra, quiet_recap=True, progress_to_stderr=output is Output.json
        )

    report = acceptance.run(playbook, extra_vars or [])
    if not report.checks:
        raise typer.Exit(report.exit_code)
    if output is Output.json:
        print_json([asdict(c) for c in report.checks])
    else:
        table = Table("check", "host", "result", "detail")
        for item in report.checks:
            table.add_row(item.check, item.host, f"[{STYLE[item.status]}]{item.status}[/]", item.detail)
        console = Console(highlight=False)
        console.print(table)
        counts = Counter(str(c.status) for c in report.checks)
        console.print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    raise typer.Exit(report.exit_code)
