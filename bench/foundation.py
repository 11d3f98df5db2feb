"""Foundation benchmark: prints two ratios measured in one run (not a timed test).

1. `toolkit --help` wall time against `python -c 'import typer'` (target <= 1.5x): the CLI must keep
   ansible_runner and kubernetes out of its import path. For scale it also times a two-command typer
   app with the same rich help: typer's rich renderer alone imports markdown-it and most of rich.
2. A no-op re-run of site.yml on a 3-host lab against `ansible all -m setup` on the same hosts
   (target <= 2x): the roles must not do needless work on a converged host.

It starts a 3-host lab when none is running and removes it again at the end.
Run: .venv/bin/python -m bench.foundation
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}


def wall(command: Sequence[str], runs: int) -> float:
    """Median wall time of `runs` runs; each must succeed."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=PROJECT, env=ENV, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


BARE_TYPER_APP = """
import typer
app = typer.Typer(rich_markup_mode="rich", no_args_is_help=True)
@app.command()
def one() -> None: ...
@app.command()
def two() -> None: ...
app()
"""


def lab_running() -> bool:
    out = subprocess.run(
        ["podman", "ps", "--filter", "label=io.toolkit.lab", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.split()) >= 3


def main() -> None:
    help_time = wall([str(BIN / "toolkit"), "--help"], runs=7)
    typer_time = wall([sys.executable, "-c", "import typer"], runs=7)
    bare_time = wall([sys.executable, "-c", BARE_TYPER_APP, "--help"], runs=7)
    print(f"toolkit --help        {help_time:6.2f}s")
    print(f"import typer          {typer_time:6.2f}s")
    print(f"ratio                 {help_time / typer_time:6.2f}x  (target <= 1.5x)")
    print(f"bare typer app --help {bare_time:6.2f}s  ({bare_time / typer_time:.2f}x import typer)")

    started_lab = not lab_running()
    if started_lab:
        subprocess.run([str(BIN / "toolkit"), "lab", "up", "--hosts", "3"], cwd=PROJECT, check=True)
    try:
        up = [str(BIN / "toolkit"), "cluster", "up", "-i", "inventory/lab"]
        subprocess.run(up, cwd=PROJECT, env=ENV, check=True, capture_output=True)  # converge once
        noop_time = wall(up, runs=3)
        setup_time = wall([str(BIN / "ansible"), "all", "-i", "inventory/lab", "-m", "setup"], runs=3)
    finally:
        if started_lab:
            subprocess.run([str(BIN / "toolkit"), "lab", "down"], cwd=PROJECT, check=True)
    print(f"no-op site.yml        {noop_time:6.2f}s  (3 hosts)")
    print(f"ansible all -m setup  {setup_time:6.2f}s  (3 hosts)")
    print(f"ratio                 {noop_time / setup_time:6.2f}x  (target <= 2x)")


if __name__ == "__main__":
    main()
