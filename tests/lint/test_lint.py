"""The linters, run as tests so one pytest run is the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ansible-lint", "--profile", "production", "--offline"],
        ["yamllint", "--strict", "."],
        ["ruff", "check", "toolkit", "tests", "bench", "collections"],
        ["ruff", "format", "--check", "toolkit", "collections"],
        ["mypy", "--strict", "toolkit"],
    ],
    ids=["ansible-lint", "yamllint", "ruff", "ruff-format", "mypy"],
)
def test_linter_is_clean(command: list[str]) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(
        command, cwd=PROJECT, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
