"""Options shared by several commands, declared once: the inventory and run options of the
playbook commands, and the connection options of the Kubernetes commands."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import Output
from toolkit.errors import BadInputError

InventoryOption = Annotated[
    Path,
    typer.Option(
        "--inventory",
        "-i",
        help="Inventory file or directory (see inventory/example/).",
        envvar="TOOLKIT_INVENTORY",
        show_default=False,
    ),
]
LimitOption = Annotated[str | None, typer.Option("--limit", "-l", help="Only these hosts or groups.")]
TagsOption = Annotated[str | None, typer.Option("--tags", "-t", help="Only tasks with these tags.")]
SkipTagsOption = Annotated[str | None, typer.Option("--skip-tags", help="Skip tasks with these tags.")]
ExtraVarsOption = Annotated[
    list[str] | None,
    typer.Option("--extra-vars", "-e", help="key=value, a JSON mapping, or @FILE. Repeatable."),
]

KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        envvar="KUBECONFIG",
        help="Kubeconfig to use (default ~/.kube/config).",
        show_default=False,
    ),
]
ContextOption = Annotated[
    str | None, typer.Option("--context", help="Kubeconfig context (default: current).")
]
UserOption = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Act for this user (operators). Users' kubeconfigs name their own."),
]
GithubUrlOption = Annotated[
    str,
    typer.Option(
        "--github-url",
        envvar="TOOLKIT_GITHUB_URL",
        help="Where USER.keys is fetched from (a mirror, or tests).",
    ),
]
OutputOption = Annotated[Output, typer.Option(help="table, or json for scripts.")]
HoursOption = Annotated[
    str | None,
    typer.Option("--hours", help="How long, in hours (fractions too: 1.5).", show_default=False),
]
ForOption = Annotated[
    str | None,
    typer.Option("--for", help="How long, with units: 30m, 2h30m, 1d.", show_default=False),
]


def lifetime(hours: str | None, duration: str | None) -> Fraction | None:
    """--hours or --for, as hours; None when neither is given. Both is bad input."""
    from toolkit import durations

    if hours is not None and duration is not None:
        raise BadInputError("give --hours or --for, not both")
    if hours is not None:
        return durations.hours(hours)
    return durations.duration(duration, "--for") if duration is not None else None
