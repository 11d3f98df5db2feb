"""A multi-node shell end to end on real processes: `toolkit shell create --nodes 2` against the
STAND-IN API server, whose STAND-IN kubelet (tests/standins/podman_kubelet.py) runs each pod as a
real podman container of the shell image on a podman network with DNS, and whose STAND-IN network
policy controller (tests/standins/network_policy.py) enforces the NetworkPolicy `user add` wrote.

A real `ssh` lands on pod 0; from there the user logs in to pod 1 by its stable name without a
password; each pod reads the same hostfile and its own NODE_RANK; a TCP rendezvous in the manner
of torchrun's TCPStore meets at MASTER_ADDR:MASTER_PORT; another user's shell is refused by the
network policy; and pause, resume and delete act on both pods.

What stands in: the API server and the scheduler (two GPU nodes that are objects only: both pods
run on this machine), the kubelet (podman, no GPU runtime), cluster DNS (aardvark-dns answering
for the pods' names under the headless Service), k3s's network policy controller (an iptables
chain) and the node's address (127.0.0.1, from the shells' sshHost setting).
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import toolkit
from tests.integration.test_shell_end_to_end import free_port, ssh
from tests.standins.kube_apiserver import FakeApiServer
from tests.standins.network_policy import NetworkPolicyEnforcer
from tests.standins.podman_kubelet import PodmanKubelet
from tests.support import eventually

pytestmark = pytest.mark.lab

# Rank 0 listens on MASTER_PORT until every other rank has said its rank, then tells each the
# world it met, as torchrun's TCPStore rendezvous does on the master's port.
RENDEZVOUS_SERVER = """
import os, socket
world = int(os.environ["NNODES"])
listener = socket.create_server(("", int(os.environ["MASTER_PORT"])))
peers, ranks = [], [os.environ["NODE_RANK"]]
while len(ranks) < world:
    connection, _ = listener.accept()
    rank = connection.recv(16).decode()
    if not rank:  # a probe that the master is listening, not a rank
        connection.close()
        continue
    ranks.append(rank)
    peers.append(connection)
for connection in peers:
    connection.sendall(("world " + ",".join(sorted(ranks))).encode())
    connection.close()
print("met", ",".join(sorted(ranks)))
"""
RENDEZVOUS_CLIENT = """
import os, socket, time
for attempt in range(50):
    try:
        connection = socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])), 3)
        break
    except OSError:
        time.sleep(0.2)
connection.sendall(os.environ["NODE_RANK"].encode())
print(connection.recv(64).decode())
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as error:
    print("refused" if isinstance(error, ConnectionRefusedError) else type(error).__name__)
"""


def python(script: str, *args: str) -> str:
    """A remote command that runs `script` with python3, whatever shells and quotes lie between."""
    encoded = base64.b64encode(script.encode()).decode()
    return f"f=$(mktemp) && echo {encoded} | base64 -d > $f && python3 $f {' '.join(args)}"


@pytest.fixture
def cluster(tmp_path: Path, shell_image: str) -> Iterator[tuple[FakeApiServer, Path]]:
    suffix = secrets.token_hex(3)
    network = f"standin-pods-{suffix}"
    subprocess.run(["podman", "network", "create", network], capture_output=True, check=True)
    enforcer = NetworkPolicyEnforcer(chain=f"STANDIN-NETPOL-{suffix}")
    kubelet = PodmanKubelet(tmp_path / "kubelet", network=network, network_policy=enforcer)
    server = FakeApiServer(first_node_port=free_port(), kubelet=kubelet).start()
    try:
        for node in ("gpu-1", "gpu-2"):
            server.add_gpu_node(node)
        server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
        server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
        server.seed("Namespace", {"metadata": {"name": "toolkit-system"}})
        subnet = subprocess.run(
            ["podman", "network", "inspect", network, "--format", "{{range .Subnets}}{{.Subnet}},{{end}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip(",\n")  # fmt: skip
        server.seed("ConfigMap", {
            "metadata": {"name": "shells", "namespace": "toolkit-system",
                         "labels": {"toolkit.dev/shells-config": "true"}},
            "data": {"image": shell_image, "sshHost": "127.0.0.1", "podCidrs": subnet,
                     "webExpose": "nodeport", "accessMode": "ReadWriteMany", "maxNodes": "2"},
        })  # fmt: skip
        yield server, server.kubeconfig(tmp_path / "admin.kubeconfig")
    finally:
        server.stop()
        enforcer.close()
        subprocess.run(["podman", "network", "rm", "--force", network], capture_output=True, check=False)


def a_user_with_a_key(admin: Path, tmp_path: Path, user: str, gpus: int) -> tuple[list[str], list[str]]:
    """`user add USER` and an SSH key of theirs: their --kubeconfig and the create's key options."""
    kubeconfig = tmp_path / f"{user}.kubeconfig"
    added = toolkit(
        "user", "add", user, "--max-gpus", str(gpus), "-o", str(kubeconfig), "--kubeconfig", str(admin)
    )
    assert added.returncode == 0, added.stderr
    key = tmp_path / f"id_{user}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return ["--kubeconfig", str(kubeconfig)], ["--ssh-key", f"{key}.pub", "--identity-file", str(key)]


def containers_of(shell: str, user: str) -> list[str]:
    found = subprocess.run(
        ["podman", "ps", "--format", "{{.Names}}", "--filter", f"name=standin-kubelet-user-{user}-{shell}-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted(found.stdout.split())


def test_a_two_node_shell_is_one_environment_for_torchrun_and_closed_to_other_users(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")}
    alice, alice_keys = a_user_with_a_key(admin, tmp_path, "alice", gpus=2)
    bob, bob_keys = a_user_with_a_key(admin, tmp_path, "bob", gpus=1)

    created = toolkit(
        "shell",
        "create",
        "big",
        "--nodes",
        "2",
        "--gpus",
        "1",
        *alice_keys,
        "--timeout",
        "180",
        *alice,
        env=env,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert "shell big is ready on gpu-1, gpu-2" in created.stdout, created.stdout
    found = re.search(r"ssh -F (\S+) (toolkit-alice-big)", created.stdout)
    assert found, created.stdout
    config, alias = found.group(1), found.group(2)
    assert containers_of("big", "alice") == [
        "standin-kubelet-user-alice-big-0",
        "standin-kubelet-user-alice-big-1",
    ]

    # The user lands on pod 0 and logs in to pod 1 by its stable name, without a password; each
    # pod has the same hostfile and its own rank.
    hostfile = "big-0.big-peers slots=1\nbig-1.big-peers slots=1\n"
    on_0 = ssh(config, alias, "hostname; echo rank=$NODE_RANK world=$WORLD_SIZE; cat /etc/shell/hostfile")
    assert on_0.returncode == 0, on_0.stderr
    assert on_0.stdout == f"big-0\nrank=0 world=2\n{hostfile}", on_0.stdout
    hop = "ssh -o BatchMode=yes big-1.big-peers 'hostname; echo rank=$NODE_RANK; cat /etc/shell/hostfile'"
    on_1 = ssh(config, alias, hop)
    assert on_1.returncode == 0, on_1.stderr
    assert on_1.stdout == f"big-1\nrank=1\n{hostfile}", on_1.stdout + on_1.stderr
    # The peer key, which sessions can read, opens only the pods' own port: never SSH's, where
    # users come in (so a collaborator who copied it is out once remove-key drops their key).
    on_22 = ssh(config, alias, "ssh -o BatchMode=yes -p 22 big-1.big-peers true; echo exit=$?")
    assert on_22.stdout.strip().endswith("exit=255") and "Permission denied" in on_22.stderr, on_22

    # A rendezvous at MASTER_ADDR:MASTER_PORT, rank 0 serving and rank 1 joining from its pod.
    master = subprocess.Popen(
        ["ssh", "-F", config, "-o", "BatchMode=yes", alias, python(RENDEZVOUS_SERVER)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        listening = python("import socket; socket.create_connection(('127.0.0.1', 29500), 1)")
        assert eventually(lambda: ssh(config, alias, listening).returncode == 0)
        # Bob's shell is another namespace's: the NetworkPolicy refuses it the rendezvous port,
        # which alice's own pod reaches next.
        bob_created = toolkit("shell", "create", "other", *bob_keys, "--timeout", "180", *bob, env=env)
        assert bob_created.returncode == 0, bob_created.stdout + bob_created.stderr
        bob_ssh = re.search(r"ssh -F (\S+) (toolkit-bob-other)", bob_created.stdout)
        assert bob_ssh, bob_created.stdout
        target = "big-0.big-peers.user-alice.svc.cluster.local 29500"
        from_bob = ssh(bob_ssh.group(1), bob_ssh.group(2), python(CONNECT, target))
        assert from_bob.stdout.strip() == "refused", from_bob.stdout + from_bob.stderr
        joined = ssh(config, alias, f"ssh -o BatchMode=yes big-1.big-peers '{python(RENDEZVOUS_CLIENT)}'")
        assert joined.stdout.strip() == "world 0,1", joined.stdout + joined.stderr
        out, err = master.communicate(timeout=30)
        assert out.strip() == "met 0,1", out + err
    finally:
        master.kill()

    listed = toolkit("shell", "list", *alice, env=env)
    assert re.search(r"big\W+alice\W+2x1\W+ready", listed.stdout), listed.stdout

    # One shell, one lifecycle: pause stops both pods, resume starts both, delete removes all.
    assert toolkit("shell", "pause", "big", *alice, env=env).returncode == 0
    assert eventually(lambda: containers_of("big", "alice") == [])
    assert server.list("Pod", "user-alice") == []
    resumed = toolkit("shell", "resume", "big", "--timeout", "180", *alice, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(containers_of("big", "alice")) == 2
    again = ssh(config, alias, "ssh -o BatchMode=yes big-1.big-peers 'echo rank=$NODE_RANK'")
    assert again.stdout == "rank=1\n", again.stdout + again.stderr
    deleted = toolkit("shell", "delete", "big", "--yes", *alice, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert "Service/big-peers" in deleted.stdout, deleted.stdout
    assert server.list("Pod", "user-alice") == [] and server.list("Service", "user-alice") == []
