"""How shells' times and progress read in a terminal."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from toolkit.shells import Shell


def age(moment: datetime, now: datetime) -> str:
    """A duration in its largest whole unit: 3d, 7h, 12m, 40s."""
    seconds = int((now - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def remaining(seconds: float) -> str:
    """Time left in its two largest units, rounded up to the minute, so that a fresh 8-hour shell
    reads 8h, not 7h: 2d 3h, 7h 30m, 45m."""
    minutes = math.ceil(seconds / 60)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m")]
    first = next(index for index, (amount, _) in enumerate(units) if amount or index == 2)
    return " ".join(f"{amount}{unit}" for amount, unit in units[first : first + 2] if amount)


def status(shell: Shell) -> str:
    """ready, starting, "queued (2)" (second in the cluster's queue), or why it is paused."""
    if shell.paused_why:
        return f"paused ({shell.paused_why})"
    if shell.status == "queued" and shell.position:
        return f"queued ({shell.position})"
    return shell.status


def gpu_use(shell: Shell, now: datetime) -> str:
    """What its GPUs did, as the lifecycle last published it: "87% · 60/159 GiB"; "-" for a shell
    with no GPU running; "n/a" without figures from the last 10 minutes."""
    from toolkit import gpu_metrics

    if not shell.gpus or shell.status != "ready":
        return "-"
    published = gpu_metrics.read_published(shell.gpu_use)
    if published is None or now - published[0] > gpu_metrics.STALE_AFTER:
        return "n/a"
    return published[1].describe()


def expiry(shell: Shell, now: datetime) -> str:
    """When the shell expires, in yellow under an hour, red once past."""
    if shell.lifetime_from_start is not None:
        return f"{remaining(shell.lifetime_from_start.total_seconds())} once it runs"
    if shell.expires_at is None:
        return "never"
    left = (shell.expires_at - now).total_seconds()
    if left <= 0:
        return "[bold red]expired[/]"
    text = f"in {remaining(left)}"
    return f"[yellow]{text}[/]" if left < 3600 else text


def problem_lines(shells: Iterable[Shell]) -> list[str]:
    """One warning line (markup) per value a shell's owner wrote that did not pass the checks."""
    return [
        f"[yellow]warning:[/] shell {shell.user}/{shell.name}: {problem}"
        for shell in shells
        for problem in shell.problems
    ]


def problems(console: Console, shells: Iterable[Shell]) -> None:
    for line in problem_lines(shells):
        console.print(line, markup=True)


@contextmanager
def phases(console: Console, what: str) -> Iterator[Callable[[str], None]]:
    """A phase reporter: a spinner on a terminal, one line per phase otherwise (logs, CI)."""
    if not console.is_terminal:
        yield lambda phase: console.print(f"{what}: {phase}")
        return
    with console.status(f"{what}: scheduling") as status:
        yield lambda phase: status.update(f"{what}: {phase}")
