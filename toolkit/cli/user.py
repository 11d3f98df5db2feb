"""`toolkit user`: the people who get shells, each with a namespace, a GPU quota and a kubeconfig."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import Output, command_group, print_json
from toolkit.cli.options import ContextOption, GithubUrlOption, KubeconfigOption, OutputOption
from toolkit.tenancy import check_user_name

app = command_group(
    "Shell users (operators, with the admin kubeconfig): a namespace, a GPU quota and a kubeconfig each."
)

# How `user list` names each quota'd resource besides GPUs.
QUOTA_NAMES = {
    "requests.cpu": "cpu",
    "requests.memory": "memory",
    "requests.storage": "storage",
    "persistentvolumeclaims": "volumes",
    "services.nodeports": "node ports",
    "services.loadbalancers": "load balancers",
}

UserArgument = Annotated[
    str, typer.Argument(help="The user's name (lowercase, as their login).", show_default=False)
]


@app.command()
def add(
    name: UserArgument,
    *,
    max_gpus: Annotated[int, typer.Option(help="GPUs the user's shells may hold together.")] = 1,
    cpu: Annotated[
        str | None, typer.Option(help="CPU quota.", show_default="the GPUs' share of the largest node")
    ] = None,
    memory: Annotated[str | None, typer.Option(help="Memory quota.", show_default="the GPUs' share")] = None,
    max_storage: Annotated[
        str | None,
        typer.Option(
            help="Storage all their volumes may request together, e.g. 2Ti.",
            show_default="the cluster's userMaxStorage",
        ),
    ] = None,
    max_volumes: Annotated[
        int | None,
        typer.Option(
            help="Volumes (one home per shell) they may hold.", show_default="the cluster's userMaxVolumes"
        ),
    ] = None,
    max_node_ports: Annotated[
        int | None,
        typer.Option(
            help="Node ports their shells may open (SSH, and the web terminal).",
            show_default="the cluster's userMaxNodePorts",
        ),
    ] = None,
    max_load_balancers: Annotated[
        int | None,
        typer.Option(
            help="LoadBalancer Services they may hold.", show_default="the cluster's userMaxLoadBalancers"
        ),
    ] = None,
    max_shells: Annotated[
        int | None,
        typer.Option(
            help="Shells they may hold at once (and so pods, Services and Secrets).",
            show_default="the cluster's userMaxShells",
        ),
    ] = None,
    github: Annotated[
        str, typer.Option(help="The user's GitHub account: their shells get its keys when none is given.")
    ] = "",
    github_url: GithubUrlOption = "https://github.com",
    sudo: Annotated[
        bool | None,
        typer.Option(
            "--sudo/--no-sudo",
            help="Let their shells have passwordless sudo (shell create --sudo), where the site "
            "does not allow it to everyone (shells_platform_allow_sudo); --no-sudo takes it back "
            "(shells made with it then start only once made again without).",
            show_default="as it was; none for a new user",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Where to write the user's kubeconfig.", show_default="./NAME.kubeconfig"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the kubeconfig file when it exists.")
    ] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Create (or update) a user and write their kubeconfig, mode 0600. Hand it to the user."""
    from rich.console import Console

    from toolkit import kube, users

    check_user_name(name)
    target = output or Path(f"{name}.kubeconfig")
    added = users.add(
        kube.connect(kubeconfig, context), name, max_gpus, target, cpu, memory, github, github_url, force,
        storage=max_storage, volumes=max_volumes,
        node_ports=max_node_ports, load_balancers=max_load_balancers, shells=max_shells, sudo=sudo,
    )  # fmt: skip
    console = Console(highlight=False)
    console.print(f"user {added.name}: namespace {added.namespace}, up to {added.max_gpus} GPU(s)")
    console.print(
        f"kubeconfig for {added.name}: {target} (0600; it holds their token, hand it over privately)"
    )
    for warning in added.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


@app.command("list")
def list_(
    *,
    output: OutputOption = Output.table,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Every user, the GPUs their shells hold, and their use of each quota (used/limit)."""
    from rich.console import Console
    from rich.table import Table

    from toolkit import kube, users

    found = users.list_users(kube.connect(kubeconfig, context))
    if output is Output.json:
        print_json([asdict(u) for u in found])
        return
    table = Table(
        "user", "namespace", "max gpus", "gpus used", "quota (used/limit)", "github", "state", "created"
    )
    for user in found:
        state = "active" if user.active else "removed (homes kept)"
        quota = ", ".join(
            f"{QUOTA_NAMES[name]} {used}/{limit}"
            for name, (used, limit) in user.quota.items()
            if name in QUOTA_NAMES
        )
        table.add_row(
            user.name,
            user.namespace,
            str(user.max_gpus),
            str(user.gpus_used),
            quota or "-",
            user.github or "-",
            state,
            user.created,
        )
    Console().print(table if found else "no users")


@app.command()
def remove(
    name: UserArgument,
    *,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the user's home volumes and namespace.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Remove a user's shells and access. Their home volumes are kept unless --purge."""
    from rich.console import Console

    from toolkit import kube, users

    connection = kube.connect(kubeconfig, context)
    what = "and ALL their home volumes" if purge else "(their home volumes are kept)"
    if not yes and not typer.confirm(f"remove user {name}, their shells and access {what}?"):
        raise typer.Exit(1)
    removed = users.remove(connection, name, purge)
    Console(highlight=False).print(f"removed {', '.join(removed) or 'nothing'}")
