"""Options shared by several commands, declared once: the inventory and run options of the
playbook commands, and the connection options of the Kubernetes commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import Output

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
