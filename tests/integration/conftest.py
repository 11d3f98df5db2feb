from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def toolkit(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `toolkit` command, as an operator would, without a terminal."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=PROJECT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def lab_image() -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: the integration tests need it (see .ci/run)")
    result = toolkit("lab", "image", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return "localhost/toolkit-lab-host:bookworm"
