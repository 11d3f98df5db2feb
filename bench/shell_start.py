"""Shell image benchmark: from `podman run` to the first successful SSH login, median of 5.

Target < 2 s on a 2-core VM. The seeds' shells install openssh, ttyd and Python packages
when the pod starts, which takes 5-10 minutes before a user can log in.

It needs the image built by the integration tests (or `toolkit images build --base
localhost/toolkit-lab-host:bookworm --ttyd ... --tag localhost/toolkit-shell:test`).
Run: .venv/bin/python -m bench.shell_start
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.conftest import SHELL_IMAGE_TAG as TAG
from tests.integration.test_shell_image import Shell

RUNS = 5


def main() -> None:
    times = []
    for run in range(RUNS):
        with tempfile.TemporaryDirectory(prefix="toolkit-bench-shell-") as root:
            shell = Shell(Path(root), TAG)
            try:
                shell.wait_for_ssh()
                times.append(time.monotonic() - shell.started_at)
            finally:
                subprocess.run(
                    ["podman", "rm", "--force", "--time", "0", shell.name], capture_output=True, check=False
                )
        print(f"run {run + 1}: {times[-1]:.2f}s")
    print(f"start to first SSH login, median of {RUNS}: {statistics.median(times):.2f}s (target < 2 s)")


if __name__ == "__main__":
    main()
