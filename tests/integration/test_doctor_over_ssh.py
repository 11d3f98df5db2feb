"""`toolkit doctor` against a real sshd on loopback, this machine as the host: the probe runs the
collection's nvidia_host.py with the host's python3, and its GPU and NVSwitch counts come back.
Listed as eight hosts, one per loopback address, it accepts every new host key in one run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import toolkit
from tests.integration.test_runner_host_keys import LOOPBACK_ADDRESSES, sshd  # noqa: F401  (the fixture)
from toolkit import doctor


def loopback_inventory(tmp_path: Path, port: int, client_key: Path, addresses: tuple[str, ...]) -> Path:
    """hosts.yml listing the sshd once per address, as one server and agents, with its own known_hosts."""
    hosts = {
        f"loopback-{index}": {
            "ansible_host": address,
            "ansible_port": port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(client_key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={tmp_path / 'known_hosts'}",
        }
        for index, address in enumerate(addresses, start=1)
    }
    server = next(iter(hosts))
    groups = {
        "k3s_servers": {"hosts": {server: hosts.pop(server)}},
        "k3s_agents": {"hosts": hosts} if hosts else {},
        "gpu_nodes": {},
        "weka_clients": {},
    }
    (tmp_path / "hosts.yml").write_text(json.dumps({"cluster": {"children": groups}}))
    return tmp_path / "hosts.yml"


def test_the_hosts_python3_counts_its_gpus_with_the_collections_code(
    sshd: tuple[int, Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    port, client_key, host_key = sshd
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.read_text()}")
    inventory = loopback_inventory(tmp_path, port, client_key, ("127.0.0.1",))

    result = toolkit("doctor", "-i", str(inventory), "--output", "json")
    (report,) = json.loads(result.stdout)
    assert report["reachable"] is True, result.stdout + result.stderr
    counted = doctor.nvidia_host().pci_inventory()  # the same bus, read in this process
    assert report["checks"]["gpus"] == {"status": "pass", "detail": str(counted["gpus"])}
    assert report["checks"]["nvswitch"] == {"status": "pass", "detail": str(counted["nvswitches"])}


def test_accept_new_saves_every_hosts_key_from_one_parallel_run(
    sshd: tuple[int, Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    port, client_key, host_key = sshd
    inventory = loopback_inventory(tmp_path, port, client_key, LOOPBACK_ADDRESSES)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("# the operator's own line, kept\n")

    accepted = toolkit("doctor", "-i", str(inventory), "--accept-new", "--output", "json")
    assert [report["reachable"] for report in json.loads(accepted.stdout)] == [True] * len(LOOPBACK_ADDRESSES)
    key = host_key.read_text().split()[:2]
    kept, *saved = known_hosts.read_text().splitlines()
    assert kept == "# the operator's own line, kept"
    assert sorted(saved) == sorted(f"[{address}]:{port} {key[0]} {key[1]}" for address in LOOPBACK_ADDRESSES)

    strict = toolkit("doctor", "-i", str(inventory), "--output", "json")
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert len(known_hosts.read_text().splitlines()) == 1 + len(LOOPBACK_ADDRESSES)
