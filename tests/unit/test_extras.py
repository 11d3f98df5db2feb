"""The users' install and the operators': an operator command without its extra stops at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from toolkit import extras
from toolkit.errors import BadInputError


def test_an_operator_command_without_the_extra_stops_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    @extras.operator_command("cluster up")
    def up() -> None:
        ran.append("up")

    monkeypatch.setattr(
        extras.importlib.util, "find_spec", lambda name: None if name == "ansible_runner" else object()
    )
    with pytest.raises(BadInputError) as refused:
        up()
    assert str(refused.value) == (
        "toolkit cluster up is an operator command and this install lacks ansible_runner: install the "
        "operator extra, pip install -e '.[operator]' in the toolkit's checkout (./scripts/install does)"
    )
    assert ran == []
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: object())
    up()
    assert ran == ["up"]


def test_an_error_is_printed_as_written_brackets_and_all() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "shell", "create", "x[bold]y"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert "'x[bold]y'" in result.stderr, result.stderr
