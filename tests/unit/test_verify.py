"""`toolkit cluster verify`'s records: nothing recorded is an error, never a pass; the shell check
reports a failure in one line and leaves no user behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import verify
from toolkit.errors import ToolkitError


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
