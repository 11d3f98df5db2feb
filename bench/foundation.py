"""Foundation benchmark: prints a ratio measured in one run (not a timed test).

`toolkit --help` wall time against `python -c 'import typer'` (target <= 1.5x): the CLI must keep
ansible_runner and kubernetes out of its import path. For scale it also times a two-command typer
app with the same rich help: typer's rich renderer alone imports markdown-it and most of rich.
The no-op re-run of site.yml is bench.rerun's.

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
# Bytecode is written as an installed package's is (pip compiles on install), whatever this shell says.
ENV = {
    **{key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"},
    "PATH": f"{BIN}:{os.environ['PATH']}",
    "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
}


def wall(command: Sequence[str], runs: int) -> float:
    """Median wall time of `runs` runs; each must succeed."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=PROJECT, env=ENV, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fastest_pair(first: Sequence[str], second: Sequence[str], runs: int) -> tuple[float, float]:
    """The fastest of `runs` runs of each, taken in turns, so that a slow spell of a shared
    machine slows both alike; noise only ever adds time."""
    first_times, second_times = [], []
    for _ in range(runs):
        for command, times in ((first, first_times), (second, second_times)):
            start = time.perf_counter()
            subprocess.run(command, cwd=PROJECT, env=ENV, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return min(first_times), min(second_times)


BARE_TYPER_APP = """
import typer
app = typer.Typer(rich_markup_mode="rich", no_args_is_help=True)
@app.command()
def one() -> None: ...
@app.command()
def two() -> None: ...
app()
"""


def print_help_against_bare_typer() -> None:
    """`toolkit --help` against a bare typer app with the same rich help (target <= 1.1x)."""
    help_time, bare_time = fastest_pair(
        [str(BIN / "toolkit"), "--help"], [sys.executable, "-c", BARE_TYPER_APP, "--help"], runs=20
    )
    print(f"toolkit --help        {help_time:6.2f}s  (fastest of 20, in turns with the bare app)")
    print(f"bare typer app --help {bare_time:6.2f}s")
    print(f"ratio                 {help_time / bare_time:6.2f}x  (target <= 1.1x)")


def main() -> None:
    help_time = wall([str(BIN / "toolkit"), "--help"], runs=7)
    typer_time = wall([sys.executable, "-c", "import typer"], runs=7)
    bare_time = wall([sys.executable, "-c", BARE_TYPER_APP, "--help"], runs=7)
    print(f"toolkit --help        {help_time:6.2f}s")
    print(f"import typer          {typer_time:6.2f}s")
    print(f"ratio                 {help_time / typer_time:6.2f}x  (target <= 1.5x)")
    print(f"bare typer app --help {bare_time:6.2f}s  ({bare_time / typer_time:.2f}x import typer)")
    print_help_against_bare_typer()


if __name__ == "__main__":
    main()
