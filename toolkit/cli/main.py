"""Entry point of the `toolkit` command."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_group, solve_typer_info_defaults
from typer.models import TyperInfo

from toolkit.cli import (
    HELP_OPTIONS,
    cluster,
    disk,
    doctor,
    images,
    inventory,
    lab,
    node,
    shell,
    ssh_config,
    user,
)
from toolkit.errors import BadInputError, Interrupted, ToolkitError


def _kinds(error: BaseException) -> set[str]:
    """The names of an exception's classes. Typer may carry its own copy of click, so click's
    exceptions are recognised by name rather than imported."""
    return {cls.__name__ for cls in type(error).__mro__}


def _bad_usage(error: Exception, fallback: str) -> BadInputError:
    where = getattr(getattr(error, "ctx", None), "command_path", None) or fallback
    message = " ".join(str(error.format_message()).split())  # type: ignore[attr-defined]
    return BadInputError(f"{where}: {message} (see '{where} --help')")


# The command groups under the root, listed after its own commands.
GROUPS: dict[str, typer.Typer] = {
    "cluster": cluster.app,
    "lab": lab.app,
    "images": images.app,
    "inventory": inventory.app,
    "node": node.app,
    "shell": shell.app,
    "disk": disk.app,
    "user": user.app,
}
shell.app.add_typer(ssh_config.app, name="ssh-config")


class GroupListing(TyperGroup):
    """A group as the root's help lists it, its name and help, until it is run."""

    def __init__(self, name: str, group: typer.Typer) -> None:
        info = solve_typer_info_defaults(TyperInfo(group))
        super().__init__(
            name=name,
            help=info.help,
            short_help=info.short_help,
            hidden=bool(info.hidden),
            deprecated=bool(info.deprecated),
            rich_help_panel=info.rich_help_panel,
        )
        self.group = group


class ToolkitGroup(TyperGroup):
    """The root command. A usage error anywhere is bad input like any other, one line and exit
    3, instead of click's usage box and exit 2; Ctrl-C, at a prompt too, is exit 130.

    A group's commands become click's only when the group runs: reading every command's options
    would cost `toolkit --help` a fifth of its time."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands.update({name: GroupListing(name, group) for name, group in GROUPS.items()})

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, GroupListing) and name:
            command = self.commands[name] = get_group(command.group)
            command.name = name
        return name, command, rest

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except Exception as error:
            kinds = _kinds(error)
            if "NoArgsIsHelpError" in kinds:
                # A bare `toolkit` or group: its help, as --help gives it. Rich help is printed as
                # the error is made; plain help is its message.
                text = str(error.format_message())  # type: ignore[attr-defined]
                if text:
                    typer.echo(text)
                sys.exit(0)
            if "Abort" in kinds:  # Ctrl-C or Ctrl-D at a prompt
                raise Interrupted("interrupted; nothing was changed") from None
            if "UsageError" in kinds:
                raise _bad_usage(error, self.name or "toolkit") from None
            raise
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        # Typer turns a Ctrl-C that reaches it into a silent exit 130: say so in one line instead.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None


app = typer.Typer(
    cls=ToolkitGroup,
    name="toolkit",
    help=(
        "Turn bare-metal NVIDIA H100 hosts into a k3s GPU cluster, and give each user a GPU shell on it.\n\n"
        "Operators describe their hosts in an inventory and run [bold]toolkit cluster up[/bold]. "
        "[bold]toolkit lab up[/bold] makes a local rehearsal cluster of real systemd hosts."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"toolkit {version('toolkit')}")
        raise typer.Exit()


@app.callback()
def main(
    *,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Turn bare-metal NVIDIA H100 hosts into a k3s GPU cluster, and give each user a GPU shell on it."""


app.command("doctor")(doctor.doctor)


def run() -> None:
    """Console script: user errors end in one line on stderr and their exit code, never a traceback."""
    try:
        app()
    except ToolkitError as error:
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for line in str(error).splitlines():  # its text as written: "[::1]:22", "toolkit[operator]"
            err.print(f"[bold red]error:[/bold red] {escape(line)}", markup=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
