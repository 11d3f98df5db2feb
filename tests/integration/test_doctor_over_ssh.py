"""`toolkit doctor` against a real sshd on loopback, this machine as the host: the probe runs the
collection's nvidia_host.py with the host's python3, and its GPU and NVSwitch counts come back."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import toolkit
from toolkit import doctor

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture
def inventory(tmp_path: Path) -> Iterator[Path]:
    """An inventory whose one host is this machine, behind a key-only sshd on 127.0.0.1."""
    if not SSHD.exists():
        pytest.fail("openssh-server is not installed: scripts/install installs it")
    port = free_port()
    host_key = keygen(tmp_path / "host_key")
    (tmp_path / "authorized_keys").write_text(keygen(tmp_path / "client_key") + "\n")
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(tmp_path / "sshd_config")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    host = {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": getpass.getuser(),
        "ansible_ssh_private_key_file": str(tmp_path / "client_key"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={tmp_path / 'known_hosts'}",
    }
    groups = {
        "k3s_servers": {"hosts": {"loopback": host}},
        "k3s_agents": {},
        "gpu_nodes": {},
        "weka_clients": {},
    }
    (tmp_path / "hosts.yml").write_text(json.dumps({"cluster": {"children": groups}}))
    yield tmp_path / "hosts.yml"
    server.terminate()
    server.wait(timeout=10)


def test_the_hosts_python3_counts_its_gpus_with_the_collections_code(inventory: Path) -> None:
    result = toolkit("doctor", "-i", str(inventory), "--output", "json")
    (report,) = json.loads(result.stdout)
    assert report["reachable"] is True, result.stdout + result.stderr
    counted = doctor.nvidia_host().pci_inventory()  # the same bus, read in this process
    assert report["checks"]["gpus"] == {"status": "pass", "detail": str(counted["gpus"])}
    assert report["checks"]["nvswitch"] == {"status": "pass", "detail": str(counted["nvswitches"])}
