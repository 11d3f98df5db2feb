"""Install benchmark: the users' install against the operators', measured in one run.

Builds the toolkit's wheel, installs it into two fresh virtualenvs, `toolkit` alone and
`toolkit[operator]` (dependencies from the package index, as a user's laptop gets them), and
prints:
1. each install's size on disk: what it added to a fresh virtualenv's site-packages;
2. in the users' install, `toolkit shell list --help` against `toolkit --help` (target: as fast,
   ratio <= 1.1x): the shell commands import nothing heavy before they run.

Run: .venv/bin/python -m bench.install
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit import images

PROJECT = Path(__file__).resolve().parent.parent


def size_of(directory: Path) -> int:
    files = (path for path in directory.rglob("*") if path.is_file() and not path.is_symlink())
    return sum(path.stat().st_size for path in files)


def install(root: Path, wheel: Path, extra: str) -> tuple[Path, int]:
    """A fresh virtualenv with `wheel[extra]`: its bin directory, and the bytes the install added
    (not the virtualenv's own pip and setuptools)."""
    venv = root / (extra or "users")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    [site] = (venv / "lib").glob("python3*/site-packages")
    empty = size_of(site)
    target = f"toolkit[{extra}] @ {wheel.as_uri()}" if extra else str(wheel)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", target], check=True)
    return venv / "bin", size_of(site) - empty


def wall(command: list[str], runs: int = 7) -> float:
    """Median wall time of `runs` runs; each must succeed."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-install-") as scratch:
        root = Path(scratch)
        images.build_own_wheel(PROJECT, root / "wheels", root / "wheel.log")
        [wheel] = (root / "wheels").glob("toolkit-*.whl")
        for extra in ("", "operator"):
            bin_dir, added = install(root, wheel, extra)
            label = "toolkit[operator]" if extra else "toolkit (users)"
            print(f"{label:22} {added / 2**20:7.1f} MiB installed")
            if not extra:
                help_time = wall([str(bin_dir / "toolkit"), "--help"])
                list_time = wall([str(bin_dir / "toolkit"), "shell", "list", "--help"])
        print(f"toolkit --help         {help_time:7.3f} s  (users' install)")
        print(f"shell list --help      {list_time:7.3f} s")
        print(f"ratio                  {list_time / help_time:7.2f}x  (target <= 1.1x)")


if __name__ == "__main__":
    main()
