"""`toolkit shell`: a user's own GPU shell on the cluster (SSH, optional web terminal)."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolkit.cli import Output, command_group, present, print_json
from toolkit.cli.options import (
    ContextOption,
    ForOption,
    GithubUrlOption,
    HoursOption,
    KubeconfigOption,
    OutputOption,
    UserOption,
    lifetime,
)
from toolkit.errors import EXIT_TASK_FAILED, BadInputError, MissingToolError, ToolkitError
from toolkit.tenancy import user_from_context

if TYPE_CHECKING:
    from rich.console import Console

    from toolkit.kube import Kube
    from toolkit.shell_create import CreatedShell

app = command_group(
    "Your own GPU shell on the cluster: SSH (and a web terminal with --web) on a persistent home.\n\n"
    "Users run these with the kubeconfig [bold]toolkit user add[/bold] gave them; operators act for "
    "any user with [bold]--user[/bold]."
)

NameArgument = Annotated[
    str, typer.Argument(help="The shell's name (lowercase letters, digits, '-').", show_default=False)
]
SshKeyOption = Annotated[
    list[Path] | None,
    typer.Option("--ssh-key", "-k", help="OpenSSH public key file (.pub). Repeatable.", show_default=False),
]
GithubOption = Annotated[
    list[str] | None,
    typer.Option(
        "--github", help="Use the SSH keys GitHub publishes for this user. Repeatable.", show_default=False
    ),
]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for the shell to be ready.")]


class Expose(StrEnum):
    nodeport = "nodeport"
    loadbalancer = "loadbalancer"


def _connect(kubeconfig: Path | None, context: str | None, user: str | None) -> tuple[Kube, str]:
    from toolkit import kube

    connection = kube.connect(kubeconfig, context)
    return connection, user_from_context(connection, user)


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


@app.command()
def create(
    name: NameArgument,
    *,
    gpus: Annotated[
        int, typer.Option(help="GPUs per node (at most the largest node's; all nodes' within your quota).")
    ] = 1,
    nodes: Annotated[
        int,
        typer.Option(
            help="Nodes: one pod of --gpus GPUs on each, started together or not at all, for "
            "torchrun, DeepSpeed or MPI across nodes. The pods reach each other as NAME-0.NAME-peers, "
            "NAME-1.NAME-peers... and log in to each other without a password; each has the hostfile "
            "/etc/shell/hostfile and MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK, NPROC_PER_NODE and "
            "WORLD_SIZE set. You land on pod 0. The site sets the most nodes.",
        ),
    ] = 1,
    cpu: Annotated[str | None, typer.Option(help="CPUs.", show_default="the GPUs' share of the node")] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory, e.g. 64Gi.", show_default="the GPUs' share")
    ] = None,
    shm: Annotated[str | None, typer.Option(help="Size of a memory-backed /dev/shm, e.g. 16Gi.")] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Any image as the shell, e.g. nvcr.io/nvidia/pytorch:24.08-py3: it needs only a /bin/sh "
            "(x86_64); sshd, the web terminal and the agent come from the cluster's shell image, and "
            "sessions get the image's own PATH, Python and CUDA. The site may limit registries.",
            show_default="the cluster's, from images/shell",
        ),
    ] = None,
    node_selector: Annotated[
        list[str] | None, typer.Option("--node-selector", help="KEY=VALUE a node must have. Repeatable.")
    ] = None,
    gpu_type: Annotated[
        str | None,
        typer.Option(
            help="GPU product: h100, h100-nvl, h200, or the full name in the node label "
            "nvidia.com/gpu.product (NVIDIA-H100-80GB-HBM3). Matches every product with those words in "
            "a row; the cluster's products are in `toolkit shell avail`."
        ),
    ] = None,
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Also start a web terminal, at https://NAME--USER.<the cluster's web domain>/ "
            "(plain HTTP on a node port where the site opted for it).",
        ),
    ] = False,
    jupyter: Annotated[
        bool,
        typer.Option(
            "--jupyter",
            help="Also start JupyterLab (the shell image has it; another image needs its own "
            "jupyter-lab), at the web terminal's address under /jupyter/lab with a token of its own, "
            "shown once; implies --web. Through SSH too: ssh -L 8888:127.0.0.1:8888.",
        ),
    ] = False,
    hours: HoursOption = None,
    for_: ForOption = None,
    idle_minutes: Annotated[
        int | None,
        typer.Option(
            "--idle-minutes",
            help="Pause the shell (home kept) after this many minutes with no terminal input, "
            "idle GPUs and CPUs; 0 never, where the cluster allows. Its terminals are warned first.",
            show_default="the cluster's",
        ),
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Size of the persistent home volume.", show_default="100Gi")
    ] = None,
    storage_class: Annotated[
        str | None, typer.Option(help="StorageClass of the home.", show_default="the cluster's")
    ] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            help="Mount this disk of yours as the home instead of a new one ('toolkit disk list'), "
            "e.g. the home a deleted shell kept.",
            show_default=False,
        ),
    ] = None,
    forward_agent: Annotated[
        bool,
        typer.Option(
            "--forward-agent",
            help="Let the shell use your local ssh agent (ForwardAgent in its ssh config entry). "
            "Whoever is root on the shell's node can use it too while you are logged in.",
        ),
    ] = False,
    expose: Annotated[
        Expose | None, typer.Option(help="How SSH is reached.", show_default="nodeport")
    ] = None,
    sudo: Annotated[
        bool,
        typer.Option(
            "--sudo",
            help="Passwordless sudo in the shell, where the cluster allows it to you (apt install; "
            "root there keeps the shell's few capabilities and does not reach the host).",
        ),
    ] = False,
    ssh_key: SshKeyOption = None,
    github: GithubOption = None,
    github_url: GithubUrlOption = "https://github.com",
    identity_file: Annotated[
        Path | None, typer.Option(help="Private key the ssh-config entry should use (IdentityFile).")
    ] = None,
    keep_on_failure: Annotated[
        bool, typer.Option(help="Keep what was created when the shell fails to start.")
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="Return once the shell is queued (with its place) or starting; 'toolkit shell list' "
            "follows it.",
        ),
    ] = False,
    no_queue: Annotated[
        bool,
        typer.Option(
            "--no-queue",
            help="Fail at once when the GPUs are taken, instead of waiting in the cluster's queue.",
        ),
    ] = False,
    timeout: TimeoutOption = 300,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Create a GPU shell and wait until it is ready; print how to get in.

    It gets a home volume kept across pauses, restarts and deletes (unless --purge), its own SSH
    host key pinned in the toolkit's ssh config, and only your keys. On failure the cause is
    printed in one line and everything created is removed (unless --keep-on-failure).

    Where the cluster queues shells (Kueue) and the GPUs are taken, the shell waits its turn with
    its place shown; its lifetime starts when it runs, and --timeout counts from then. Ctrl-C
    leaves the queue and removes the shell; --no-wait returns and keeps its place.
    """
    from toolkit import shell_create, sshconfig, users
    from toolkit import shell_manifests as manifests
    from toolkit.shell_plan import CreateRequest

    selector: dict[str, str] = {}
    for item in node_selector or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInputError(f"--node-selector {item!r} is not KEY=VALUE")
        selector[key] = value
    manifests.check_shell_name(name)
    if identity_file is not None:
        sshconfig.check_path(identity_file.expanduser().resolve())
    sshconfig.check_path(sshconfig.config_dir(), included=True)
    connection, who = _connect(kubeconfig, context, user)
    keys = users.shell_keys(connection, who, list(ssh_key or []), list(github or []), github_url)
    request = CreateRequest(
        name=name,
        user=who,
        authorized_keys=tuple(keys),
        gpus=gpus,
        nodes=nodes,
        cpu=cpu,
        memory=memory,
        shm=shm,
        image=image,
        node_selector=selector,
        gpu_type=gpu_type,
        web=web,
        jupyter=jupyter,
        hours=lifetime(hours, for_),
        idle_minutes=idle_minutes,
        storage=storage,
        storage_class=storage_class,
        disk=disk,
        forward_agent=forward_agent,
        sudo=sudo,
        expose={"nodeport": "NodePort", "loadbalancer": "LoadBalancer"}[expose.value] if expose else None,
        timeout=timeout,
        keep_on_failure=keep_on_failure,
        queue=not no_queue,
        wait=not no_wait,
    )
    console = _console()
    with present.phases(console, f"shell {name}") as report:
        created = shell_create.create(connection, request, report)
    if created.status != "ready":
        _print_not_yet_ready(console, created)
        return
    expires = f"{created.expires_at:%Y-%m-%d %H:%M} UTC" if created.expires_at else "never"
    placed = ", ".join(created.nodes) if created.nodes else created.node
    console.print(f"[green]shell {name} is ready[/] on {placed}; it expires {expires}")
    if created.nodes:
        console.print(
            f"  {len(created.nodes)} nodes x {created.gpus} GPUs: ssh lands on pod 0; "
            f"torchrun --nnodes $NNODES --nproc-per-node $NPROC_PER_NODE --node-rank $NODE_RANK "
            "--master-addr $MASTER_ADDR --master-port $MASTER_PORT on each (hosts in /etc/shell/hostfile)",
            markup=False,
            soft_wrap=True,
        )
    if created.ssh_host:
        entry = sshconfig.Entry(
            created.user, created.name, created.ssh_host, created.ssh_port, created.host_key,
            identity_file.expanduser().resolve() if identity_file else None, forward_agent,
        )  # fmt: skip
        config_file = sshconfig.write_entry(entry)
        # A line to copy as it is: the path quoted for a shell (macOS's "Application Support"),
        # never wrapped, never read as markup.
        console.print(f"  ssh -F {shlex.quote(str(config_file))} {entry.alias}", markup=False, soft_wrap=True)
        console.print(f"  (or 'ssh {entry.alias}' after 'toolkit shell ssh-config enable')")
        known_hosts = config_file.parent / "known_hosts"
        console.print(f"  its host key is pinned in {known_hosts}", markup=False, soft_wrap=True)
    else:
        console.print(f"  the load balancer has no address yet: 'toolkit shell connect {name}' once it has")
    if created.web_credential:
        url = created.web_url or "(address pending)"
        console.print(f"  web terminal: {url}  user:password {created.web_credential}")
        console.print("  [yellow]the web credential is shown only now[/]")
        if created.web_is_plain_http:
            console.print(
                "  [yellow]warning: this cluster serves web terminals as plain HTTP on node ports "
                "(shells_platform_web_expose: nodeport): the credential and the session cross the "
                "network unencrypted[/]"
            )
    _print_jupyter(console, created)


def _print_jupyter(console: Console, created: CreatedShell) -> None:
    """JupyterLab's address (behind the web terminal's credential), the SSH way to it, and its token,
    shown this once: apart from the address, so it stays out of proxies' logs and browser history."""
    from toolkit import shell_manifests as manifests
    from toolkit import sshconfig

    if not created.jupyter_token:
        return
    console.print(f"  JupyterLab: {created.jupyter_url or '(address pending)'}", markup=False, soft_wrap=True)
    tunnel = f"ssh -F {shlex.quote(str(sshconfig.config_dir() / 'ssh_config'))} -L {manifests.JUPYTER_TUNNEL}"
    console.print(
        f"  or through SSH: {tunnel} {sshconfig.alias(created.user, created.name)}, then "
        f"http://127.0.0.1:{manifests.JUPYTER_PORT}{manifests.JUPYTER_PATH}",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"  JupyterLab's token: {created.jupyter_token}", markup=False, soft_wrap=True)
    console.print("  [yellow]JupyterLab's token is shown only now[/]")


def _print_not_yet_ready(console: Console, created: CreatedShell) -> None:
    """--no-wait: where the shell stands, and how to follow it."""
    lifetime = ""
    if created.lifetime:
        lifetime = f"; its {present.remaining(created.lifetime.total_seconds())} lifetime starts when it runs"
    if created.status == "queued":
        where = f"position {created.position}" if created.position else "waiting for its place"
        gpus = f"{created.gpus} GPU{'s' if created.gpus != 1 else ''}"
        if created.nodes_asked > 1:
            gpus = f"{created.nodes_asked} nodes x {gpus}"
        console.print(f"shell {created.name} is queued ({where}) for {gpus}{lifetime}")
    else:
        console.print(f"shell {created.name} is starting{lifetime}")
    console.print(
        f"  'toolkit shell list' follows it; 'toolkit shell connect {created.name}' once it is ready"
    )
    if created.web_credential:
        console.print(f"  web terminal: user:password {created.web_credential}")
        console.print("  [yellow]the web credential is shown only now[/]")
    _print_jupyter(console, created)


WATCH_SECONDS = 5  # between redraws of `shell list --watch`


@app.command("list")
def list_(
    *,
    all_users: Annotated[
        bool, typer.Option("--all-users", "-A", help="Every user's shells (operators).")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help=f"Redraw every {WATCH_SECONDS} s until Ctrl-C (a queued shell's place, its start).",
        ),
    ] = False,
    output: OutputOption = Output.table,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Your shells: name, user, GPUs, status, GPU use, age, expiry and SSH endpoint.

    GPU use is each running shell's mean GPU utilisation and memory, as the cluster's lifecycle
    last read it from dcgm-exporter (each minute); "n/a" without figures from the last 10 minutes.

    One API call; three while a shell is starting, to tell whether it waits in the cluster's
    queue for GPUs ("queued (2)": second in line) and when its lifetime starts.
    """
    from toolkit import kube, shells

    if watch and output is Output.json:
        raise BadInputError("--watch redraws a table: drop --output json, or drop --watch")
    connection = kube.connect(kubeconfig, context)
    who = None if all_users else user_from_context(connection, user)

    def read() -> list[shells.Shell]:
        return shells.with_places(connection, shells.list_shells(connection, who))

    found = read()
    if output is Output.json:
        print_json([s.as_dict() for s in found])
        return
    console = _console()
    if not watch:
        console.print(_shells_view(found, datetime.now(UTC)))
        return
    import time

    from rich.live import Live

    if not console.is_terminal:  # a log or a pipe: one table after another, as `kubectl get -w` does
        try:
            while True:
                console.print(_shells_view(found, datetime.now(UTC)))
                time.sleep(WATCH_SECONDS)
                found = read()
        except KeyboardInterrupt:
            return  # Ctrl-C is how a watch ends
    with Live(_shells_view(found, datetime.now(UTC)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(WATCH_SECONDS)
                live.update(_shells_view(read(), datetime.now(UTC)), refresh=True)
        except KeyboardInterrupt:
            pass  # the last table stays on screen


def _shells_view(found: list[Any], now: datetime) -> Any:
    """The shells' table, each refused annotation's warning and the under-an-hour warnings."""
    from rich.console import Group
    from rich.table import Table

    table = Table("name", "user", "gpus", "status", "gpu use", "age", "expires", "endpoint")
    uses = [present.gpu_use(shell, now) for shell in found]
    for shell, use in zip(found, uses, strict=True):
        table.add_row(
            shell.name,
            shell.user,
            shell.size,
            present.status(shell),
            use,
            present.age(shell.created, now),
            present.expiry(shell, now),
            shell.endpoint,
        )
    lines: list[Any] = [table if found else "no shells", *present.problem_lines(found)]
    if "n/a" in uses:
        lines.append(
            "gpu use: n/a where the cluster published no figures in the last 10 minutes (its lifecycle "
            "writes them each minute from dcgm-exporter; a shell just started has none yet)"
        )
    for shell in found:
        if shell.expires_at and 0 < (shell.expires_at - now).total_seconds() < 3600:
            left = present.remaining((shell.expires_at - now).total_seconds())
            hint = f"toolkit shell extend {shell.name} --hours H"
            lines.append(f"[yellow]warning:[/] {shell.name} expires in {left}: {hint}")
    return Group(*lines)


@app.command()
def show(
    name: NameArgument,
    *,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Everything about one shell as JSON, with the ssh command and a VS Code link.

    "ssh" logs in with the toolkit's ssh config; "vscode" opens the home in VS Code's Remote-SSH
    once 'toolkit shell ssh-config enable' has made the shells' names known to ssh. A shell with
    JupyterLab has its address ("jupyter_url"; the token was shown once, at create) and the ssh
    command that forwards it to http://127.0.0.1:8888/jupyter/lab ("jupyter_through_ssh").
    """
    from toolkit import shell_manifests as manifests
    from toolkit import shells, sshconfig
    from toolkit.shell_settings import platform

    connection, who = _connect(kubeconfig, context, user)
    shell = shells.with_places(connection, [shells.get_shell(connection, who, name)])[0]
    alias = sshconfig.alias(who, name)
    ssh_config = sshconfig.config_dir() / "ssh_config"
    ways_in: dict[str, str | None] = {
        "ssh": f"ssh -F {shlex.quote(str(ssh_config))} {alias}",
        "vscode": f"vscode://vscode-remote/ssh-remote+{alias}/home/{who}",
    }
    if shell.jupyter:
        ways_in["jupyter_url"] = shell.jupyter_url(platform(connection))
        ways_in["jupyter_through_ssh"] = (
            f"ssh -F {shlex.quote(str(ssh_config))} -L {manifests.JUPYTER_TUNNEL} {alias}"
        )
    print_json(shell.as_dict() | ways_in)


@app.command()
def logs(
    name: NameArgument,
    *,
    tail: Annotated[int, typer.Option(help="Lines from the end.")] = 200,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """The shell container's log (sshd and ttyd)."""
    from toolkit import shells

    connection, who = _connect(kubeconfig, context, user)
    typer.echo(shells.logs(connection, who, name, tail), nl=False)


@app.command()
def connect(
    name: NameArgument,
    *,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Refuse a paused shell instead of resuming it first.")
    ] = False,
    forward_agent: Annotated[
        bool,
        typer.Option(
            "--forward-agent",
            "-A",
            help="Forward your ssh agent (the shell must be made with --forward-agent).",
        ),
    ] = False,
    timeout: TimeoutOption = 300,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Open an SSH session to the shell with the toolkit's ssh config (strict host keys).

    A paused shell that has not expired is resumed first, with its progress on stderr.
    """
    from rich.console import Console

    from toolkit import shells, sshconfig

    ssh = shutil.which("ssh")  # before anything is resumed or written
    if ssh is None:
        raise MissingToolError("no ssh found on PATH: install OpenSSH's client")
    connection, who = _connect(kubeconfig, context, user)
    shell = shells.with_places(connection, [shells.get_shell(connection, who, name)])[0]
    if forward_agent and not shell.forward_agent:
        raise BadInputError(
            f"shell {name} was made without --forward-agent: its sshd refuses your agent; "
            "create a shell with --forward-agent to use it"
        )
    if shell.status == "queued":
        raise ToolkitError(
            f"shell {name} is queued (position {shell.position}) for its GPUs: it starts when they free "
            "up ('toolkit shell list' follows it)"
        )
    if shell.status == "paused":
        if no_resume:
            raise ToolkitError(
                f"shell {name} is paused: toolkit shell resume {name}, or connect without --no-resume"
            )
        # Progress goes to stderr: stdout is the session's.
        with present.phases(Console(stderr=True, highlight=False), f"shell {name}") as report:
            report("resuming")
            shell = shells.resume(connection, who, name, report, timeout)
    if not shell.host_key:
        # Its owner wrote a host key that was refused: none of it reaches known_hosts.
        why = "; ".join(shell.problems) or "no host key is recorded: delete it and create it again"
        raise ToolkitError(f"shell {who}/{name}: {why}; nothing was written")
    endpoint = shells.reach(connection, shell)
    if not endpoint.host:
        raise ToolkitError(f"shell {name} has no address yet (its load balancer has not assigned one)")
    entry = sshconfig.Entry(who, name, endpoint.host, endpoint.ssh_port, shell.host_key)
    # An entry written by create may name an IdentityFile and forward the agent: both are kept.
    config_file = sshconfig.write_entry(entry, keep_identity=True)
    os.execv(ssh, [ssh, "-F", str(config_file), *(["-A"] if forward_agent else []), entry.alias])


@app.command()
def delete(
    name: NameArgument,
    *,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the home volume and its files.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Delete a shell. Its home volume is kept (a new shell of the same name gets it back) unless --purge."""
    from toolkit import shells, sshconfig

    connection, who = _connect(kubeconfig, context, user)
    shells.get_shell(connection, who, name)
    what = "and its home volume (files are lost)" if purge else "(the home volume is kept)"
    if not yes and not typer.confirm(f"delete {who}'s shell {name} {what}?"):
        raise typer.Exit(1)
    deleted = shells.delete(connection, who, name, purge)
    sshconfig.remove_entry(who, name)
    _console().print(f"deleted {', '.join(deleted)}")


@app.command()
def pause(
    name: NameArgument,
    *,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Stop the shell and free its GPUs; its home and keys are kept for resume."""
    from toolkit import shells

    connection, who = _connect(kubeconfig, context, user)
    shells.pause(connection, who, name)
    _console().print(f"shell {name} is paused; 'toolkit shell resume {name}' starts it again")


@app.command()
def resume(
    name: NameArgument,
    *,
    timeout: TimeoutOption = 300,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Start a paused shell again and wait until it is ready."""
    from toolkit import shells

    connection, who = _connect(kubeconfig, context, user)
    console = _console()
    with present.phases(console, f"shell {name}") as report:
        shells.resume(connection, who, name, report, timeout)
    console.print(f"[green]shell {name} is ready[/]")


@app.command()
def extend(
    name: NameArgument,
    *,
    hours: HoursOption = None,
    for_: ForOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Push the shell's expiry later by --hours (1.5) or --for (2h30m), within the cluster's maximum."""
    from toolkit import shells

    more = lifetime(hours, for_)
    if more is None:
        raise BadInputError("how much longer? give --hours H or --for DURATION (e.g. --for 2h30m)")
    connection, who = _connect(kubeconfig, context, user)
    shell = shells.extend(connection, who, name, more)
    assert shell.expires_at is not None
    _console().print(f"shell {name} now expires {shell.expires_at:%Y-%m-%d %H:%M} UTC")


@app.command("add-key")
def add_key(
    name: NameArgument,
    *,
    ssh_key: SshKeyOption = None,
    github: GithubOption = None,
    github_url: GithubUrlOption = "https://github.com",
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Let a collaborator in: add their public keys. New logins take them within a minute or two; the
    shell does not restart, and running sessions go on."""
    from toolkit import shells, users

    connection, who = _connect(kubeconfig, context, user)
    keys = users.shell_keys(connection, who, list(ssh_key or []), list(github or []), github_url)
    added = shells.add_keys(connection, who, name, keys)
    if added:
        _console().print(f"added {added} key(s) to shell {name}; new logins take them within a minute or two")
    else:
        _console().print(f"shell {name} already has those keys")


@app.command("remove-key")
def remove_key(
    name: NameArgument,
    *,
    ssh_key: SshKeyOption = None,
    github: GithubOption = None,
    github_url: GithubUrlOption = "https://github.com",
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Stop public keys logging in (the last key stays). Within a minute, without a restart;
    sessions already open go on."""
    from toolkit import shells, sshkeys

    if not ssh_key and not github:
        raise BadInputError("which keys? give --ssh-key FILE or --github USER")
    connection, who = _connect(kubeconfig, context, user)
    keys = sshkeys.gather(list(ssh_key or []), list(github or []), github_url)
    removed = shells.remove_keys(connection, who, name, keys)
    if removed:
        _console().print(
            f"removed {removed} key(s) from shell {name}; new logins refuse them within a minute or two"
        )
    else:
        _console().print(f"shell {name} has none of those keys")


@app.command()
def avail(
    *,
    output: OutputOption = Output.table,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """GPUs free per node: allocatable minus what running pods request (for users, as the cluster
    last published it, each minute), and each node's GPU product (what --gpu-type matches)."""
    from rich.table import Table

    from toolkit import capacity, kube

    found = capacity.availability(kube.connect(kubeconfig, context))
    nodes = found.nodes
    if output is Output.json:
        print_json([{**vars(n), "gpus_free": n.gpus_free} for n in nodes])
        return
    table = Table("node", "gpu", "gpus", "used", "free", "state")
    for node in nodes:
        state = "ready" if node.ready and node.schedulable else "cordoned" if node.ready else "not ready"
        gpu = node.gpu_product or ("unknown" if node.gpus else "-")
        table.add_row(node.name, gpu, str(node.gpus), str(node.gpus_used), str(node.gpus_free), state)
    _console().print(table)
    as_of = f" (as the cluster counted them at {found.published_at})" if found.published_at else ""
    _console().print(f"{sum(n.gpus_free for n in nodes)} GPUs free{as_of}")


@app.command()
def reap(
    *,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be done.")] = False,
    all_users: Annotated[
        bool, typer.Option("--all-users", "-A", help="Every user's shells (operators).")
    ] = False,
    idle: Annotated[
        bool,
        typer.Option(
            "--idle",
            help="Also pause the shells idle past their idle minutes, as their agents report it "
            "(with -A, from inside the cluster: the reports come from the pods' addresses).",
        ),
    ] = False,
    record_status: Annotated[
        bool,
        typer.Option(
            "--record-status",
            help="Record this run for --status (with -A; what the cluster's lifecycle CronJob runs).",
        ),
    ] = False,
    status: Annotated[
        bool,
        typer.Option("--status", help="Show the cluster's last lifecycle run instead (operators)."),
    ] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    user: UserOption = None,
) -> None:
    """Pause (or delete, per the cluster's reapPolicy) the shells past their expiry. Homes are kept.

    The cluster runs this itself every minute: CronJob toolkit-lifecycle/toolkit-lifecycle,
    which [bold]toolkit cluster up[/bold] deploys, runs [bold]toolkit shell reap -A --idle
    --record-status[/bold]; [bold]--status[/bold] shows its last run. With -A it also deletes pods
    in users' namespaces that no shell owns any more. A shell that cannot be reaped is named, the
    others are still reaped, and the exit code is 1.
    """
    from toolkit import gpu_metrics, kube, lifecycle, shells

    if status and (dry_run or idle or record_status or all_users or user):
        raise BadInputError("--status only shows the last run: it takes only --kubeconfig and --context")
    if (idle or record_status) and not all_users:
        raise BadInputError("--idle and --record-status act for the whole cluster: add --all-users (-A)")
    if record_status and dry_run:
        raise BadInputError("--record-status records what was done: not with --dry-run")
    connection = kube.connect(kubeconfig, context)
    console = _console()
    if status:
        _print_lifecycle_status(connection, console)
        return
    who = None if all_users else user_from_context(connection, user)
    started = lifecycle.now_utc()
    # The cluster's run (-A) reads the exporters once, for the idle rule and to publish each
    # shell's GPU use; a user's own reap reads and writes neither.
    measured = (
        gpu_metrics.read(connection) if all_users and (idle or record_status) else gpu_metrics.Reading()
    )
    parts: dict[str, Callable[[], Any]] = {
        "reaped": lambda: shells.reap(connection, who, now=started, dry_run=dry_run),
        "orphans": lambda: shells.reap_orphans(connection, dry_run=dry_run) if all_users else [],
        "idle": lambda: (
            lifecycle.pause_idle(connection, started, dry_run=dry_run, measured=measured) if idle else []
        ),
        "published": lambda: (
            lifecycle.publish_gpu_use(connection, started, measured, dry_run=dry_run) if measured.gpus else []
        ),
    }
    done: dict[str, Any] = {}
    stopped: list[tuple[str, Exception]] = []
    for part, act in parts.items():
        try:
            done[part] = act()
        except Exception as error:  # one part stopped short: the others still run, and are recorded
            if not record_status:
                raise
            stopped.append((part, error))
    errors = "; ".join(f"{part}: {error}" for part, error in stopped)
    run = lifecycle.Run(started, lifecycle.now_utc(), **done, error=errors)
    if record_status:
        lifecycle.record(connection, run)
    verb = "would be" if dry_run else ""
    for item in run.reaped:
        console.print(f"{item.shell.user}/{item.shell.name} {verb} {item.action}".replace("  ", " "))
    for check in run.idle:
        if check.action == "paused":
            idle_for = check.activity.idle_seconds // 60 if check.activity else 0
            console.print(
                f"{check.shell.user}/{check.shell.name} {verb} paused: idle {idle_for} min "
                f"(limit {check.limit})".replace("  ", " ")
            )
        elif check.action:
            console.print(f"{check.shell.user}/{check.shell.name} {check.action}", markup=False)
    for orphan in run.orphans:
        done_to = "" if shells.orphan_failed(orphan) else f" {verb} deleted: no shell owns it"
        console.print(f"pod {orphan}{done_to}".replace("  ", " "), markup=False)
    present.problems(console, [item.shell for item in run.reaped])
    console.print(f"{len(run.expired)} expired shell(s) {'found' if dry_run else 'reaped'}")
    if idle:
        found = "found" if dry_run else "paused"
        console.print(f"{len(run.idle_paused)} idle shell(s) {found} of {run.checked} checked")
    for _, failure in stopped:
        if not isinstance(failure, ToolkitError):
            raise failure  # a defect: its traceback, in the Job's log, after the record
    if stopped:
        raise ToolkitError(f"the lifecycle's run stopped short ({errors})")
    if run.failures:
        raise typer.Exit(EXIT_TASK_FAILED)


def _print_lifecycle_status(connection: Kube, console: Console) -> None:
    from toolkit import lifecycle
    from toolkit.kube import ApiError

    try:
        found = lifecycle.last_run(connection)
    except ApiError as error:
        if error.code != 403:
            raise
        raise ToolkitError(
            f"the lifecycle's record (ConfigMap {lifecycle.NAMESPACE}/{lifecycle.RECORD}) is for operators: "
            "use the admin kubeconfig"
        ) from None
    now = lifecycle.now_utc()
    console.print(lifecycle.describe(found, now, lifecycle.diagnosis(connection, found, now)), markup=False)
    for line in found.actions if found else ():
        console.print(f"  {line}", markup=False)
