"""`toolkit cluster`: build and change the cluster from an inventory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Build and change the cluster described by an inventory.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

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


def _run_site(
    inventory_path: Path,
    *,
    limit: str | None,
    tags: str | None,
    skip_tags: str | None,
    extra_vars: list[str] | None,
    check: bool,
    diff: bool,
) -> None:
    # Imported here so `toolkit --help` does not pay for Ansible, rich's live display and YAML.
    from rich.console import Console
    from rich.live import Live

    from toolkit import inventory
    from toolkit.cli.display import LiveView, PlainProgress, print_recap
    from toolkit.paths import project_dir
    from toolkit.runner import RunRequest, RunTracker, run_playbook, validate_extra_vars

    project = project_dir()
    inventory.load_and_check(inventory_path)
    extras = tuple(extra_vars or ())
    validate_extra_vars(extras)
    request = RunRequest(
        playbook=project / "playbooks" / "site.yml",
        inventory=inventory_path,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
        extra_vars=extras,
        check=check,
        diff=diff,
    )
    console = Console()
    tracker = RunTracker()
    if console.is_terminal:
        with Live(LiveView(tracker), console=console, refresh_per_second=8, transient=True):
            outcome = run_playbook(project, request, tracker)
    else:
        outcome = run_playbook(project, request, tracker, on_event=PlainProgress(console, tracker))
    print_recap(console, outcome)
    raise typer.Exit(outcome.exit_code)


@app.command()
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
    _run_site(
        inventory_path,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
        extra_vars=extra_vars,
        check=check,
        diff=diff,
    )


@app.command()
def plan(
    *,
    inventory_path: InventoryOption,
    limit: LimitOption = None,
    tags: TagsOption = None,
    skip_tags: SkipTagsOption = None,
    extra_vars: ExtraVarsOption = None,
) -> None:
    """Show what `cluster up` would change, changing nothing (check mode with diffs)."""
    _run_site(
        inventory_path,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
        extra_vars=extra_vars,
        check=True,
        diff=True,
    )
