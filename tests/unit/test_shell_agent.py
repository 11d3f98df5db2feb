"""The shell image's agent (images/shell/shell-agent.py): when it warns, and what the banner says.
Its keys, banner and warnings inside a running container: tests/integration/test_shell_image.py."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

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


# --- activity and idle warnings ------------------------------------------------------------------

STANDIN_NVIDIA_SMI = Path(__file__).resolve().parents[1] / "standins" / "nvidia-smi"
H100_XML = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "nvidia"
    / "h100-hgx8-k8s-test-infra-nvidia-smi-q-x.xml"
)
MIG_XML = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "nvidia"
    / "a100-sxm4-x4-mig-telegraf-nvidia-smi-q-x.xml"
)


def test_idle_warnings_go_out_10_and_2_minutes_before_the_pause_once_each() -> None:
    shell_agent, warned, said = agent(), set[int](), []
    for idle_minutes in range(0, 61):
        threshold = shell_agent.due_idle_warning(60, idle_minutes * 60, warned)
        if threshold is not None:
            warned |= {m for m in shell_agent.IDLE_WARN_AT_MINUTES if m >= threshold}
            said.append(idle_minutes)
    assert said == [50, 58]
    # A 5-minute limit has no 10-minute warning: only the 2-minute one.
    assert shell_agent.due_idle_warning(5, 0, set()) is None
    assert shell_agent.due_idle_warning(5, 3 * 60, set()) == 2


def test_a_job_keeping_a_quarter_of_a_cpu_busy_keeps_a_shell_active_and_upkeep_does_not() -> None:
    activity = agent().Activity(started=1000.0)
    # (monotonic time of the read, CPU seconds by then): the interval is the reads', not the round's.
    assert activity.measure(1600.0, 1000.0, 1, None, cpu=(5.0, 50.0)) == 600  # the first sample
    assert activity.measure(1610.0, 1000.0, 1, None, cpu=(15.0, 50.1)) == 610  # 1% of a CPU: upkeep
    assert activity.measure(1620.0, 1000.0, 1, None, cpu=(25.0, 55.0)) == 0  # half a CPU: a job runs
    assert activity.measure(1630.0, 1000.0, 1, None, cpu=(35.0, 57.5)) == 0  # a quarter: still busy
    assert activity.measure(2230.0, 1000.0, 1, None, cpu=(635.0, 57.6)) == 600  # it finished
    assert activity.measure(2240.0, 1000.0, 1, None, cpu=None) == 610  # no cgroup: judged without CPU
    # A wall clock stepped back does not shorten the interval: the monotonic reads set it (0.1 s of
    # CPU in 10 s: not busy), and idleness counts from the last activity on the wall clock.
    assert activity.measure(2000.0, 1000.0, 1, None, cpu=(645.0, 57.7)) == 2000.0 - 1630.0


def test_the_containers_cpu_time_comes_from_its_cgroup_v2_or_v1(tmp_path: Path) -> None:
    shell_agent = agent()
    v2, v1 = tmp_path / "cpu.stat", tmp_path / "cpuacct.usage"
    v2.write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    v1.write_text("7500000000\n")
    assert shell_agent.cpu_seconds((str(v2), str(v1))) == 2.5
    assert shell_agent.cpu_seconds((str(tmp_path / "none"), str(v1))) == 7.5
    assert shell_agent.cpu_seconds((str(tmp_path / "none"),)) is None
    v2.write_text("usage_usec lots\n")
    assert shell_agent.cpu_seconds((str(v2),)) is None


def test_terminal_input_or_a_busy_gpu_keeps_a_shell_active_and_nothing_else_does() -> None:
    activity = agent().Activity(started=1000.0)
    assert activity.measure(1600.0, None, 0, None) == 600  # no terminal, no GPU measured: idle
    assert activity.measure(1700.0, 1690.0, 1, 0) == 10  # a keystroke at 1690
    assert activity.measure(2300.0, 1690.0, 1, 0) == 610  # a session open, nobody typing: idle
    assert activity.measure(2400.0, 1690.0, 1, 37) == 0  # the GPU at 37%: active
    assert activity.measure(2500.0, 1690.0, 0, 0) == 100  # it finished
    assert activity.measure(2600.0, 9999.0, 0, None, 30) == 0  # an input time past now counts as now
    assert json.loads(activity.body()) == {
        "idleSeconds": 0, "terminals": 0, "gpuUtilization": None, "idleMinutes": 30
    }  # fmt: skip


def test_the_last_input_is_the_newest_terminal_access_time(tmp_path: Path) -> None:
    for number, accessed in ((0, 1000.0), (3, 1500.0)):
        terminal = tmp_path / str(number)
        terminal.touch()
        os.utime(terminal, (accessed, 0))
    assert agent().last_terminal_input(str(tmp_path / "[0-9]*")) == 1500.0
    assert agent().last_terminal_input(str(tmp_path / "none-[0-9]*")) is None


def nvidia_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xml: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").symlink_to(STANDIN_NVIDIA_SMI)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_QUERY_XML", str(xml))


def test_gpu_utilisation_is_the_busiest_gpus_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = tmp_path / "busy.xml"
    text = H100_XML.read_text()
    third = text.replace("<gpu_util>0 %</gpu_util>", "<gpu_util>X</gpu_util>", 3)
    busy.write_text(third.replace("<gpu_util>X</gpu_util>", "<gpu_util>0 %</gpu_util>", 2).replace(
        "<gpu_util>X</gpu_util>", "<gpu_util>87 %</gpu_util>"))  # fmt: skip
    nvidia_smi_on_path(tmp_path, monkeypatch, busy)
    assert agent().gpu_utilization() == 87
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_QUERY_XML", str(H100_XML))
    assert agent().gpu_utilization() == 0


def test_no_gpu_utilisation_is_measured_without_nvidia_smi_or_a_measurable_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert agent().gpu_utilization() is None
    nvidia_smi_on_path(tmp_path, monkeypatch, MIG_XML)  # MIG: utilization.gpu is [N/A]
    assert agent().gpu_utilization() is None
    monkeypatch.setenv(
        "NVIDIA_SMI_STANDIN_ERROR", str(H100_XML.parent / "nvidia-smi-error-driver-not-communicating.txt")
    )
    assert agent().gpu_utilization() is None


def test_the_lifecycle_reads_the_agents_report_as_the_agent_serves_it() -> None:
    from toolkit import lifecycle

    shell_agent = agent()
    activity = shell_agent.Activity(started=1000.0)
    activity.measure(1900.0, 1300.0, 2, 0, 45)
    server = shell_agent.serve_activity(activity, port=0)
    assert server is not None
    try:
        port = server.server_address[1]
        assert lifecycle.read_activity("127.0.0.1", port) == lifecycle.Activity(600, 2, 0, 45)
        # A second agent cannot have the port: it says so and goes on without a report.
        assert shell_agent.serve_activity(activity, port=port) is None
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    finally:
        server.shutdown()


def test_a_shell_that_waited_in_the_queue_counts_its_lifetime_from_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell_agent = agent()
    secrets = tmp_path / "secret"
    secrets.mkdir()
    (secrets / "expires-at").write_text("")  # not written yet: the shell has only now started
    monkeypatch.delenv("SHELL_EXPIRES_AT", raising=False)
    monkeypatch.setenv("SHELL_LIFETIME_SECONDS", "7200")
    started = datetime.now(UTC)
    counted = shell_agent.Agent("alice", secrets, "head\n")
    assert counted.from_start is not None
    assert abs(counted.from_start - (started + timedelta(hours=2))) < timedelta(seconds=5)
    # However long it waited, never past the end of its maximum lifetime.
    monkeypatch.setenv("SHELL_LATEST_EXPIRY", (started + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    capped = shell_agent.Agent("alice", secrets, "head\n").from_start
    assert capped is not None and abs(capped - (started + timedelta(hours=1))) < timedelta(seconds=5)
    # Garbage counts as nothing, never as an error.
    monkeypatch.setenv("SHELL_LIFETIME_SECONDS", "2h; rm -rf /")
    assert shell_agent.Agent("alice", secrets, "head\n").from_start is None
