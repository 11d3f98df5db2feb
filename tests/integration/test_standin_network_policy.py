"""The STAND-IN NetworkPolicy controller (tests/standins/network_policy.py) enforcing a policy on
real podman containers with iptables: three containers on their own podman network, modelled as
pods of two users' namespaces, and real TCP connects between them before, under and after the
policy.

What stands in: the pods are plain podman containers (no API server, no kubelet), and the policy
engine is the stand-in's iptables chain in kube-router's place.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.standins.network_policy import NetworkPolicyEnforcer

BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("podman", "iptables", "iptables-restore")),
        reason="needs podman, iptables and iptables-restore",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="programs iptables: needs root"),
    pytest.mark.skipif(
        not BRIDGE_NF.exists() or BRIDGE_NF.read_text().strip() != "1",
        reason="bridged traffic passes iptables only with br_netfilter and bridge-nf-call-iptables=1",
    ),
]

Obj = dict[str, Any]

# Listens on each port given, accepting and closing every connection.
LISTENER = """
import socket, sys, threading
def serve(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("", port))
    listener.listen(16)
    while True:
        listener.accept()[0].close()
for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(port),)).start()
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timed out")
except OSError as error:
    print(type(error).__name__, error)
"""
SSH, OTHER = 22, 8000


@dataclass(frozen=True)
class Container:
    name: str
    namespace: str
    pod: str
    ip: str

    def as_pod(self) -> Obj:
        return {
            "metadata": {"namespace": self.namespace, "name": self.pod, "labels": {"app": self.pod}},
            "spec": {"containers": [{"name": "main", "image": "lab"}]},
            "status": {"phase": "Running", "podIP": self.ip},
        }


@dataclass(frozen=True)
class Lab:
    suffix: str
    alice_a: Container
    alice_b: Container
    bob: Container

    @property
    def pods(self) -> list[Obj]:
        return [self.alice_a.as_pod(), self.alice_b.as_pod(), self.bob.as_pod()]


NAMESPACES = [
    {"metadata": {"name": "u-alice", "labels": {"kubernetes.io/metadata.name": "u-alice"}}},
    {"metadata": {"name": "u-bob", "labels": {"kubernetes.io/metadata.name": "u-bob"}}},
]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=False)
    assert not check or done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done


def connect(source: Container, destination: Container, port: int) -> str:
    """A real TCP connect from inside `source`: "connected", "refused", "timed out", or the error."""
    return podman("exec", source.name, "python3", "-c", CONNECT, destination.ip, str(port)).stdout.strip()


def chains() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def lab(lab_image: str) -> Iterator[Lab]:
    """Three containers on a podman network of their own, each listening on 22 and 8000."""
    suffix = secrets.token_hex(3)
    network = f"standin-netpol-{suffix}"
    names = {key: f"{network}-{key}" for key in ("alice-a", "alice-b", "bob")}
    podman("network", "create", network)
    try:
        for name in names.values():
            podman("run", "-d", "--rm", "--name", name, "--network", network, lab_image,
                   "python3", "-c", LISTENER, str(SSH), str(OTHER))  # fmt: skip
        ips = {
            key: json.loads(podman("inspect", name).stdout)[0]["NetworkSettings"]["Networks"][network][
                "IPAddress"
            ]
            for key, name in names.items()
        }
        yield Lab(
            suffix,
            Container(names["alice-a"], "u-alice", "alice-a", ips["alice-a"]),
            Container(names["alice-b"], "u-alice", "alice-b", ips["alice-b"]),
            Container(names["bob"], "u-bob", "bob", ips["bob"]),
        )
    finally:
        for name in names.values():
            podman("rm", "--force", "--time", "0", name, check=False)
        podman("network", "rm", "--force", network, check=False)


@pytest.fixture
def enforcer(lab: Lab) -> Iterator[NetworkPolicyEnforcer]:
    """An enforcer on a chain of this run's own, never left behind."""
    chain = f"STANDIN-NETPOL-{lab.suffix}"
    assert chain not in chains()
    enforcing = NetworkPolicyEnforcer(chain)
    try:
        yield enforcing
    finally:
        enforcing.close()
        assert chain not in chains()


# Alice's pods reach each other on any port; anyone reaches them on 22.
ALICE_POLICY = {
    "metadata": {"namespace": "u-alice", "name": "own-namespace-and-ssh"},
    "spec": {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}]}, {"ports": [{"port": SSH, "protocol": "TCP"}]}],
    },
}


def test_an_ingress_policy_refuses_what_it_does_not_allow_between_real_containers(
    lab: Lab, enforcer: NetworkPolicyEnforcer
) -> None:
    assert connect(lab.bob, lab.alice_a, OTHER) == "connected"  # the listener answers without a policy
    assert enforcer.sync(lab.pods, NAMESPACES, [ALICE_POLICY])
    assert not enforcer.sync(lab.pods, NAMESPACES, [ALICE_POLICY])  # unchanged: no iptables run
    assert connect(lab.alice_b, lab.alice_a, OTHER) == "connected"
    assert connect(lab.alice_a, lab.alice_b, OTHER) == "connected"
    assert connect(lab.bob, lab.alice_a, SSH) == "connected"
    assert connect(lab.bob, lab.alice_b, SSH) == "connected"
    # Refused as kube-router refuses: an ICMP port-unreachable, so the connect fails at once.
    assert connect(lab.bob, lab.alice_a, OTHER) == "refused"
    assert connect(lab.bob, lab.alice_b, OTHER) == "refused"
    # Ingress only, and only alice's: alice's pods still reach bob's, which is not isolated.
    assert connect(lab.alice_a, lab.bob, OTHER) == "connected"


def test_an_egress_policy_refuses_outgoing_connections_it_does_not_allow(
    lab: Lab, enforcer: NetworkPolicyEnforcer
) -> None:
    ssh_out_only = {
        "metadata": {"namespace": "u-bob", "name": "ssh-out-only"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": SSH}]}]},
    }
    enforcer.sync(lab.pods, NAMESPACES, [ssh_out_only])
    assert connect(lab.bob, lab.alice_a, SSH) == "connected"
    assert connect(lab.bob, lab.alice_a, OTHER) == "refused"
    assert connect(lab.alice_a, lab.bob, OTHER) == "connected"  # bob's ingress is not isolated


def test_after_close_the_chain_is_gone_and_the_refused_connection_goes_through(
    lab: Lab, enforcer: NetworkPolicyEnforcer
) -> None:
    enforcer.sync(lab.pods, NAMESPACES, [ALICE_POLICY])
    forward = [rule for rule in chains().splitlines() if rule.startswith("-A FORWARD ")]
    assert forward[0].endswith(f"-j {enforcer.chain}"), forward  # first, before podman's own rules
    assert connect(lab.bob, lab.alice_a, OTHER) == "refused"
    enforcer.close()
    assert enforcer.chain not in chains()
    assert connect(lab.bob, lab.alice_a, OTHER) == "connected"
    # A policy removed (not the enforcer closed) lets traffic through as well.
    enforcer.sync(lab.pods, NAMESPACES, [ALICE_POLICY])
    assert connect(lab.bob, lab.alice_a, OTHER) == "refused"
    assert enforcer.sync(lab.pods, NAMESPACES, [])
    assert connect(lab.bob, lab.alice_a, OTHER) == "connected"
