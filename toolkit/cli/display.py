"""Drawing a playbook run: a live view while it runs, a recap table when it ends."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from toolkit.paths import project_dir
from toolkit.runner import HostCounts, RunOutcome, RunTracker, prepare_run, run_playbook


def _counts_table(tracker: RunTracker, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("host")
    for column in ("ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(column, justify="right")
    for name in sorted(tracker.hosts):
        counts: HostCounts = tracker.hosts[name]
        table.add_row(
            name,
            str(counts.ok),
            Text(str(counts.changed), style="yellow" if counts.changed else ""),
            Text(str(counts.failed), style="bold red" if counts.failed else ""),
            Text(str(counts.unreachable), style="bold red" if counts.unreachable else ""),
            str(counts.skipped),
        )
    return table


class LiveView:
    """What a rich Live shows while the playbook runs."""

    def __init__(self, tracker: RunTracker) -> None:
        self.tracker = tracker

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.tracker.started_at
        heading = Text.assemble(
            ("play ", "dim"),
            (self.tracker.play or "…", "bold"),
            ("  task ", "dim"),
            (self.tracker.task or "…", "cyan"),
            (f"  {elapsed:5.0f}s", "dim"),
        )
        return Group(heading, _counts_table(self.tracker))


class PlainProgress:
    """Progress for a non-terminal (CI logs): one line per play and task as they start."""

    def __init__(self, console: Console, tracker: RunTracker) -> None:
        self.console = console
        self.tracker = tracker
        self._shown: tuple[str, str] = ("", "")

    def __call__(self) -> None:
        current = (self.tracker.play, self.tracker.task)
        if current != self._shown:
            if current[0] != self._shown[0]:
                self.console.print(f"PLAY {current[0]}")
            if current[1]:
                self.console.print(f"  TASK {current[1]}")
            self._shown = current


def print_recap(console: Console, outcome: RunOutcome) -> None:
    tracker = outcome.tracker
    for note in tracker.notices:
        console.print(f"[blue]note:[/blue] {note}")
    console.print(_counts_table(tracker, title="recap"))
    for problem in tracker.problems:
        console.print(
            f"[bold red]{problem.kind}:[/bold red] {problem.host}: {problem.task}: {problem.message}"
        )
    if not tracker.finished:
        stdout = outcome.artifacts / "stdout"
        lines = stdout.read_text(errors="replace").strip().splitlines() if stdout.exists() else []
        reason = lines[-1] if lines else outcome.status
        console.print(f"[bold red]the run stopped before its recap:[/bold red] {reason}")
    console.print(f"full log: {outcome.artifacts / 'stdout'}")


def run_playbook_command(
    playbook: str,
    inventory_path: Path,
    *,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    extra_vars: list[str] | None = None,
    check: bool = False,
    diff: bool = False,
    quiet_recap: bool = False,
    node: str | None = None,
    progress_to_stderr: bool = False,
) -> RunOutcome:
    """Run one playbook of the project with progress, then print the recap; the outcome.

    The inventory and the extra vars are checked first (runner.prepare_run): on bad input
    nothing runs. `progress_to_stderr` keeps stdout for a command's own output, such as JSON.
    """
    project = project_dir()
    request, warnings = prepare_run(
        project, playbook, inventory_path, limit=limit, tags=tags, skip_tags=skip_tags,
        extra_vars=tuple(extra_vars or ()), check=check, diff=diff, node=node,
    )  # fmt: skip
    console = Console(stderr=progress_to_stderr)
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    tracker = RunTracker()
    if console.is_terminal:
        with Live(LiveView(tracker), console=console, refresh_per_second=8, transient=True):
            outcome = run_playbook(project, request, tracker)
    else:
        outcome = run_playbook(project, request, tracker, on_event=PlainProgress(console, tracker))
    if not (quiet_recap and outcome.exit_code == 0):
        print_recap(console, outcome)
    return outcome
