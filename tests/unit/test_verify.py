"""`toolkit cluster verify`'s records: nothing recorded is an error, never a pass; what runs after
verify.yml follows what it recorded; the shell check reports a failure in one line and leaves no
user behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import verify
from toolkit.checks import Check, Status
from toolkit.errors import ToolkitError
from toolkit.runner import HostCounts, Problem, RunOutcome, RunTracker

PASSED = {"verify_checks": [{"check": "k3s service", "host": "s1", "status": "pass", "detail": "running"}]}


def outcome(stats: dict[str, Any], problems: tuple[Problem, ...] = (), **counts: int) -> RunOutcome:
    tracker = RunTracker(hosts={"s1": HostCounts(**counts)}, problems=list(problems), stats_data=stats)
    return RunOutcome(tracker, runner_rc=0, status="successful", artifacts=Path("/nonexistent"))


class Playbooks:
    """In run_playbook_command's place: each playbook's outcome, and what was run with what."""

    def __init__(self, **outcomes: RunOutcome) -> None:
        self.outcomes = outcomes
        self.runs: list[tuple[str, list[str]]] = []

    def __call__(self, playbook: str, extra_vars: list[str]) -> RunOutcome:
        self.runs.append((playbook, extra_vars))
        return self.outcomes[playbook.removesuffix(".yml")]


def test_no_records_is_an_error_not_a_pass() -> None:
    with pytest.raises(ToolkitError, match="recorded no checks"):
        verify.checks_from_stats({})


def test_an_unknown_status_is_an_error() -> None:
    with pytest.raises(ToolkitError, match="with status 'ok'"):
        verify.checks_from_stats({"verify_checks": [{"check": "x", "host": "h", "status": "ok"}]})


def test_records_become_checks() -> None:
    records = {
        "verify_checks": [{"check": "nvidia-smi", "host": "gpu-1", "status": " pass", "detail": "8 of 8\n"}]
    }
    assert verify.checks_from_stats(records) == [verify.Check("nvidia-smi", "gpu-1", "pass", "8 of 8")]


def test_shell_check_that_cannot_log_in_fails_and_cleans_up(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    # The stand-in runs no containers, so nothing answers SSH at the shell's endpoint.
    check = verify.shell_check(admin_kubeconfig, tmp_path, gpus=1, timeout=10)
    assert check.check == "shell over ssh" and check.status == "fail"
    assert "\n" not in check.detail and check.detail
    deadline = time.monotonic() + 5
    while fake_cluster.get("Namespace", "user-toolkit-verify") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_cluster.get("Namespace", "user-toolkit-verify") is None
    assert fake_cluster.get("ClusterRoleBinding", "toolkit-shell-user-toolkit-verify") is None


def test_verify_yml_that_could_not_run_gives_its_exit_code_and_no_checks() -> None:
    playbooks = Playbooks(verify=outcome({}, unreachable=1))
    assert verify.run(playbooks, ["-e", "x=1"]) == verify.Report([], 2)
    assert playbooks.runs == [("verify.yml", ["-e", "x=1"])]


def test_a_failed_task_of_verify_yml_fails_and_the_shell_check_is_skipped() -> None:
    problem = Problem("s1", "Read the services' states", "boom", "failed")
    report = verify.run(Playbooks(verify=outcome(PASSED, (problem,), failed=1)), [])
    assert report.checks[1:] == [
        Check("verify.yml", "s1", Status.FAIL, "Read the services' states: boom"),
        Check(verify.SHELL_CHECK, "-", Status.SKIP, "verify.yml did not finish"),
    ]
    assert report.exit_code == 1


def test_no_kubernetes_api_skips_the_shell_check_with_the_reason() -> None:
    playbooks = Playbooks(verify=outcome(PASSED | {"verify_api_skip": "k3s is not running on s1"}))
    report = verify.run(playbooks, [])
    assert report.checks[-1] == Check(verify.SHELL_CHECK, "-", Status.SKIP, "k3s is not running on s1")
    assert report.exit_code == 0
    assert [playbook for playbook, _ in playbooks.runs] == ["verify.yml"]


def test_the_shell_check_fails_when_the_kubeconfig_cannot_be_fetched() -> None:
    report = verify.run(Playbooks(verify=outcome(PASSED), kubeconfig=outcome({}, failed=1)), [])
    assert report.checks[-1] == Check(verify.SHELL_CHECK, "-", Status.FAIL, "could not fetch the kubeconfig")
    assert report.exit_code == 1


@pytest.mark.parametrize(("gpu_nodes", "gpus"), [(["gpu-1"], 1), ([], 0)])
def test_the_shell_asks_for_a_gpu_when_verify_yml_recorded_a_gpu_node(
    monkeypatch: pytest.MonkeyPatch, gpu_nodes: list[str], gpus: int
) -> None:
    asked: list[int] = []

    def shell_check(kubeconfig: Path, scratch: Path, gpus: int) -> Check:
        asked.append(gpus)
        return Check(verify.SHELL_CHECK, "gpu-1", Status.PASS, "logged in")

    monkeypatch.setattr(verify, "shell_check", shell_check)
    playbooks = Playbooks(verify=outcome(PASSED | {"verify_gpu_nodes": gpu_nodes}), kubeconfig=outcome({}))
    report = verify.run(playbooks, [])
    assert asked == [gpus]
    assert report.checks[-1] == Check(verify.SHELL_CHECK, "gpu-1", Status.PASS, "logged in")
    assert report.exit_code == 0
    (_, fetch_vars) = playbooks.runs[1]
    assert fetch_vars[0].startswith("k3s_kubeconfig_dest=") and fetch_vars[0].endswith("/admin.yaml")
