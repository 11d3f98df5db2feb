"""The `toolkit` command line: commands parse arguments and present results; logic lives elsewhere."""

from __future__ import annotations

from enum import StrEnum

import typer

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def command_group(help_text: str) -> typer.Typer:
    """A sub-command group with the toolkit's help conventions (rich markup, -h, help when bare)."""
    return typer.Typer(
        help=help_text, rich_markup_mode="rich", no_args_is_help=True, context_settings=HELP_OPTIONS
    )


class Output(StrEnum):
    """How listing commands print: a table for people, JSON for scripts."""

    table = "table"
    json = "json"


def print_json(value: object) -> None:
    """`--output json`: the value, indented. json is imported here, not by every command's help."""
    import json

    typer.echo(json.dumps(value, indent=2))
