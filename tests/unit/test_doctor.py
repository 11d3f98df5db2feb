"""Judging the doctor's probe output (the format its probe script prints on a host)."""

from __future__ import annotations

from pathlib import Path

from toolkit import doctor
from toolkit.checks import Check, Status

HEALTHY = """\
os=ubuntu 22.04
kernel=6.8.0-40-generic
sudo=yes
headers=6.8.0-40.40~22.04.3
pci={"gpus": 8, "nvswitches": 4, "gpu_device_ids": ["0x2330"]}
disk_free_kib=524288000
time_synced=yes
chrony=
ports_busy=22 53
driver=580.105.08
fabricmanager=580.105.08-1
k3s=
"""


def target(**overrides: object) -> doctor.Target:
    fields: dict[str, object] = {
        "host": "hgx-01",
        "address": "192.0.2.21",
        "port": 22,
        "user": "ubuntu",
        "key_file": None,
        "known_hosts": Path("/dev/null"),
        "expected_gpus": 8,
        "gpu_node": True,
    }
    return doctor.Target(**(fields | overrides))  # type: ignore[arg-type]


def verdicts(probe: str, **overrides: object) -> dict[str, str]:
    return {check.check: check.status for check in judged(probe, **overrides).values()}


def judged(probe: str, **overrides: object) -> dict[str, Check]:
    return {check.check: check for check in doctor.judge(target(**overrides), doctor.parse_probe(probe))}


def test_a_healthy_hgx_host_passes_every_check() -> None:
    assert set(verdicts(HEALTHY).values()) == {Status.PASS}


def test_fabric_manager_of_another_version_fails() -> None:
    checks = judged(HEALTHY.replace("fabricmanager=580.105.08-1", "fabricmanager=590.44.01-1"))
    assert checks["nvidia"].status == "fail"
    assert "mismatch" in checks["nvidia"].detail


def test_gpu_count_other_than_expected_fails() -> None:
    checks = judged(HEALTHY.replace('"gpus": 8', '"gpus": 7'))
    assert checks["gpus"] == Check("gpus", "hgx-01", Status.FAIL, "7 found, 8 expected")


def test_gpu_node_without_gpus_is_a_warning_when_no_count_is_expected() -> None:
    assert verdicts(HEALTHY.replace('"gpus": 8', '"gpus": 0'), expected_gpus=0)["gpus"] == "warn"


def test_busy_k3s_port_fails_unless_k3s_holds_it() -> None:
    busy = HEALTHY.replace("ports_busy=22 53", "ports_busy=22 6443 10250")
    assert judged(busy)["ports"] == Check("ports", "hgx-01", Status.FAIL, "busy: 6443, 10250")
    assert verdicts(busy.replace("k3s=", "k3s=v1.33.5+k3s1"))["ports"] == Status.PASS


def test_unsupported_os_and_missing_sudo_fail() -> None:
    result = verdicts(HEALTHY.replace("os=ubuntu 22.04", "os=centos 7").replace("sudo=yes", "sudo=no"))
    assert result["os"] == "fail" and result["sudo"] == "fail"


def test_missing_headers_and_unsynchronised_clock_warn() -> None:
    result = verdicts(
        HEALTHY.replace("headers=6.8.0-40.40~22.04.3", "headers=(none)").replace(
            "time_synced=yes", "time_synced=no"
        )
    )
    assert result["kernel"] == "warn" and result["time"] == "warn"


def test_known_hosts_file_comes_from_the_ssh_args_ansible_uses() -> None:
    args = "-o UserKnownHostsFile=/srv/lab/known_hosts -o StrictHostKeyChecking=yes"
    assert doctor._option(args, "UserKnownHostsFile") == "/srv/lab/known_hosts"
    assert doctor._option("-oUserKnownHostsFile=/k", "userknownhostsfile") == "/k"
    assert doctor._option("", "UserKnownHostsFile") is None


def test_gpus_fail_when_the_hosts_python3_did_not_count_them() -> None:
    checks = judged("\n".join(line for line in HEALTHY.splitlines() if not line.startswith("pci=")))
    assert checks["gpus"] == Check("gpus", "hgx-01", Status.FAIL, doctor.NO_PCI_REPORT)
    assert checks["nvswitch"].status == Status.FAIL


def test_the_probe_counts_with_the_collections_own_code() -> None:
    source = (doctor.project_dir() / doctor.NVIDIA_HOST).read_text()
    assert "def pci_inventory(" in source
    assert source in doctor.probe_script()
