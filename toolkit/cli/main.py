"""Entry point of the `toolkit` command."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

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


class ToolkitGroup(TyperGroup):
    """The root command. A usage error anywhere is bad input like any other, one line and exit
    3, instead of click's usage box and exit 2; Ctrl-C, at a prompt too, is exit 130."""

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


app.add_typer(cluster.app, name="cluster")
app.add_typer(lab.app, name="lab")
app.add_typer(images.app, name="images")
app.add_typer(inventory.app, name="inventory")
app.command("doctor")(doctor.doctor)
app.add_typer(node.app, name="node")
shell.app.add_typer(ssh_config.app, name="ssh-config")
app.add_typer(shell.app, name="shell")
app.add_typer(disk.app, name="disk")
app.add_typer(user.app, name="user")


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
