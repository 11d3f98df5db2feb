"""Install benchmark: the users' install against the operators', measured in one run.

Builds the toolkit's wheel, installs it into two fresh virtualenvs, `toolkit` alone and
`toolkit[operator]` (dependencies from the package index, as a user's laptop gets them), and
prints:
1. each install's size on disk: what it added to a fresh virtualenv's site-packages;
2. in the users' install, `toolkit shell list --help` and a real `toolkit shell list` (against
   the stand-in API server on loopback) against `toolkit --help` (target: as fast, <= 1.1x),
   beside what importing the official kubernetes client costs alone.

Run: .venv/bin/python -m bench.install
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.standins.kube_apiserver import FakeApiServer
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
                users_bin = bin_dir
        toolkit, python = str(users_bin / "toolkit"), str(users_bin / "python")
        help_time = wall([toolkit, "--help"])
        list_help_time = wall([toolkit, "shell", "list", "--help"])
        client_time = wall([python, "-c", "import kubernetes.client"]) - wall([python, "-c", "pass"])
        with FakeApiServer() as server:
            admin = server.kubeconfig(root / "admin.kubeconfig")
            list_time = wall([toolkit, "shell", "list", "-A", "--kubeconfig", str(admin)])
        print(f"toolkit --help         {help_time:7.3f} s  (users' install)")
        print(f"shell list --help      {list_help_time:7.3f} s  {list_help_time / help_time:5.2f}x")
        print(f"shell list -A          {list_time:7.3f} s  {list_time / help_time:5.2f}x  (target <= 1.1x)")
        print(f"  of which importing kubernetes.client: {client_time:.3f} s")


if __name__ == "__main__":
    main()
