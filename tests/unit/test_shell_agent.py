"""The shell image's agent (images/shell/shell-agent.py): when it warns, and what the banner says.
Its keys, banner and warnings inside a running container: tests/integration/test_shell_image.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from tests.support import load_script

AGENT = Path(__file__).resolve().parents[2] / "images" / "shell" / "shell-agent.py"
EXPIRES = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


def agent() -> ModuleType:
    return load_script(AGENT)


def test_each_threshold_is_warned_about_once_as_the_expiry_nears() -> None:
    shell_agent, warned, said = agent(), set[int](), []
    for minutes_left in range(90, 0, -1):
        now = EXPIRES - timedelta(minutes=minutes_left)
        threshold = shell_agent.due_warning(EXPIRES, now, warned)
        if threshold is not None:
            warned |= {m for m in shell_agent.WARN_AT_MINUTES if m >= threshold}
            said.append(minutes_left)
    assert said == [60, 15, 5]


def test_a_shell_started_late_warns_once_for_the_nearest_threshold_only() -> None:
    shell_agent = agent()
    assert shell_agent.due_warning(EXPIRES, EXPIRES - timedelta(minutes=10), set()) == 15
    assert shell_agent.due_warning(EXPIRES, EXPIRES - timedelta(minutes=10), {15, 60}) is None
    assert shell_agent.due_warning(EXPIRES, EXPIRES + timedelta(seconds=1), set()) is None  # past: paused


def test_the_banner_names_the_expiry_written_as_the_toolkit_writes_it() -> None:
    shell_agent = agent()
    expires = shell_agent.parse_expiry("2026-12-03T18:00:00Z\n")
    assert expires == EXPIRES
    assert "This shell expires at 2026-12-03T18:00:00Z." in shell_agent.banner(
        "GPU shell of alice.\n", expires
    )
    assert shell_agent.parse_expiry("soon") is None
    assert "expires" not in shell_agent.banner("GPU shell of alice.\n", None)
