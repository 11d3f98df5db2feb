"""`toolkit doctor` against a real sshd on loopback, this machine as the host: the probe runs the
collection's nvidia_host.py with the host's python3, and its GPU and NVSwitch counts come back."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import toolkit
from tests.integration.test_runner_host_keys import sshd  # noqa: F401  (the fixture)
from toolkit import doctor


def test_the_hosts_python3_counts_its_gpus_with_the_collections_code(
    sshd: tuple[int, Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    port, client_key, host_key = sshd
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.read_text()}")
    host = {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(client_key),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={tmp_path / 'known_hosts'}",
    }
    groups = {
        "k3s_servers": {"hosts": {"loopback": host}},
        "k3s_agents": {},
        "gpu_nodes": {},
        "weka_clients": {},
    }
    (tmp_path / "hosts.yml").write_text(json.dumps({"cluster": {"children": groups}}))

    result = toolkit("doctor", "-i", str(tmp_path / "hosts.yml"), "--output", "json")
    (report,) = json.loads(result.stdout)
    assert report["reachable"] is True, result.stdout + result.stderr
    counted = doctor.nvidia_host().pci_inventory()  # the same bus, read in this process
    assert report["checks"]["gpus"] == {"status": "pass", "detail": str(counted["gpus"])}
    assert report["checks"]["nvswitch"] == {"status": "pass", "detail": str(counted["nvswitches"])}
