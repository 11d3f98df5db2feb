"""A user writes what they like into their own shell's annotations; every operator command that
reads them (`shell list -A`, `shell reap -A`, `shell connect --user`, `cluster status`) warns
once naming the shell, goes on for the others, and writes nothing of it to ssh config or
known_hosts. Against the STAND-IN API server, through the real CLI."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import toolkit
from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube, users
from toolkit.errors import EXIT_REFUSED
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
INJECTED = 'Match exec "touch /tmp/toolkit-pwned"'

TAMPERED = {
    "newline-endpoint": (
        {"toolkit.dev/ssh-endpoint": f"10.0.0.1:30022\n{INJECTED}"},
        "SSH endpoint is not HOST:PORT",
    ),
    "word-port": ({"toolkit.dev/ssh-endpoint": "10.0.0.1:ssh"}, "SSH endpoint is not HOST:PORT"),
    "option-host": ({"toolkit.dev/ssh-endpoint": "-oProxyCommand=x:22"}, "SSH endpoint is not HOST:PORT"),
    "forged-key": (
        {"toolkit.dev/ssh-host-key": f"ssh-ed25519 AAAA\n{INJECTED}"},
        "host key is not one public key",
    ),
    "two-keys": ({"toolkit.dev/ssh-host-key": f"{KEY}\n{KEY}"}, "host key is not one public key"),
    "not-a-date": ({"toolkit.dev/expires-at": "soon"}, "expiry is not a time: it counts as expired"),
    "far-future": ({"toolkit.dev/expires-at": "2099-01-01T00:00:00Z"}, "past the 24h lifetime"),
    "gpu-words": ({"toolkit.dev/gpus": "lots"}, "GPU count is not a number"),
}


@pytest.fixture
def tampered(fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    """One shell of alice's per tampering, and an honest shell of bob's; a 24-hour lifetime."""
    fake_cluster.seed("ConfigMap", {
        "metadata": {"name": "shells", "namespace": "toolkit-system",
                     "labels": {"toolkit.dev/shells-config": "true"}},
        "data": {"maxHours": "12", "defaultHours": "4", "maxLifetimeHours": "24"},
    })  # fmt: skip
    admin = kube.connect(admin_kubeconfig)
    for user in ("alice", "bob"):
        users.add(admin, user, 16, tmp_path / f"{user}.kubeconfig", None, None)
    alice = kube.connect(tmp_path / "alice.kubeconfig")
    bob = kube.connect(tmp_path / "bob.kubeconfig")
    create(bob, CreateRequest(name="honest", user="bob", authorized_keys=(KEY,)), lambda _: None)
    for name, (written, _) in TAMPERED.items():
        create(alice, CreateRequest(name=name, user="alice", authorized_keys=(KEY,)), lambda _: None)
        alice.merge_patch("StatefulSet", name, "user-alice", {"metadata": {"annotations": written}})
    return {"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}


# shell list and cluster status don't read the cluster's lifetime (list is one request): only
# the reaper, which does, sees past it.
LISTED = {name: case for name, case in TAMPERED.items() if name != "far-future"}


def warnings_in(output: str) -> dict[str, str]:
    return {
        line.split()[2].rstrip(":"): line
        for line in output.splitlines()
        if line.startswith("warning: shell alice/")
    }


def assert_nothing_written(env: dict[str, str]) -> None:
    for name in ("ssh_config", "known_hosts"):
        path = Path(env["TOOLKIT_CONFIG_DIR"]) / name
        assert not path.exists() or "Match" not in path.read_text(), path.read_text()


def test_shell_list_all_warns_per_tampered_shell_and_lists_everyone(
    tampered: dict[str, str], admin_kubeconfig: Path
) -> None:
    result = toolkit("shell", "list", "-A", "--kubeconfig", str(admin_kubeconfig), env=tampered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    found = warnings_in(result.stdout)
    assert set(found) == {f"alice/{name}" for name in LISTED}
    for name, (_, problem) in LISTED.items():
        assert problem in found[f"alice/{name}"]
    assert INJECTED not in result.stdout
    assert "honest" in result.stdout and "warning: shell bob/" not in result.stdout
    assert_nothing_written(tampered)


def test_cluster_status_warns_and_goes_on(tampered: dict[str, str], admin_kubeconfig: Path) -> None:
    result = toolkit("cluster", "status", "--kubeconfig", str(admin_kubeconfig), env=tampered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(warnings_in(result.stdout)) == {f"alice/{name}" for name in LISTED}
    assert "honest" in result.stdout


def test_reap_pauses_unparseable_and_far_future_expiries_once_past_the_lifetime(
    tampered: dict[str, str], admin_kubeconfig: Path, fake_cluster: FakeApiServer
) -> None:
    now = toolkit("shell", "reap", "-A", "--dry-run", "--kubeconfig", str(admin_kubeconfig), env=tampered)
    assert now.returncode == 0, now.stdout + now.stderr
    assert "alice/not-a-date would be paused" in now.stdout
    assert "alice/far-future would be" not in now.stdout
    # A day on: the far-future shell is past creation plus the 24-hour lifetime, whatever it says.
    with fake_cluster._lock:
        sts = fake_cluster.objects[("statefulsets.apps", "user-alice", "far-future")]
        born = datetime.now(UTC) - timedelta(hours=25)
        sts["metadata"]["creationTimestamp"] = born.strftime("%Y-%m-%dT%H:%M:%SZ")
    later = toolkit("shell", "reap", "-A", "--kubeconfig", str(admin_kubeconfig), env=tampered)
    assert later.returncode == 0, later.stdout + later.stderr
    assert "alice/far-future paused" in later.stdout
    assert "warning: shell alice/far-future: its expiry is past the 24h lifetime" in later.stdout
    assert "bob/honest" not in later.stdout
    assert fake_cluster.get("StatefulSet", "far-future", "user-alice")["spec"]["replicas"] == 0  # type: ignore[index]
    assert fake_cluster.get("StatefulSet", "honest", "user-bob")["spec"]["replicas"] == 1  # type: ignore[index]


@pytest.fixture
def stub_ssh(tmp_path: Path) -> str:
    """PATH with an `ssh` first that records its arguments and exits 0, so connect's exec ends."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "ssh-args"}\n')
    (bin_dir / "ssh").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("name", ["newline-endpoint", "word-port", "option-host"])
def test_connect_as_the_operator_takes_the_endpoint_from_the_service_and_node_not_the_annotation(
    tampered: dict[str, str], admin_kubeconfig: Path, fake_cluster: FakeApiServer, stub_ssh: str, name: str
) -> None:
    env = {**tampered, "PATH": stub_ssh}
    result = toolkit(
        "shell", "connect", name, "--user", "alice", "--kubeconfig", str(admin_kubeconfig), env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pod = fake_cluster.get("Pod", f"{name}-0", "user-alice")
    service = fake_cluster.get("Service", name, "user-alice")
    assert pod is not None and service is not None
    node = fake_cluster.get("Node", pod["spec"]["nodeName"])
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")  # type: ignore[index]
    ssh_config = (Path(tampered["TOOLKIT_CONFIG_DIR"]) / "ssh_config").read_text()
    assert f"    HostName {address}\n    Port {service['spec']['ports'][0]['nodePort']}\n" in ssh_config
    assert "Match" not in ssh_config and "ProxyCommand" not in ssh_config


@pytest.mark.parametrize("name", ["forged-key", "two-keys"])
def test_connect_as_the_operator_refuses_a_tampered_host_key_and_writes_nothing(
    tampered: dict[str, str], admin_kubeconfig: Path, stub_ssh: str, name: str
) -> None:
    env = {**tampered, "PATH": stub_ssh}
    result = toolkit(
        "shell", "connect", name, "--user", "alice", "--kubeconfig", str(admin_kubeconfig), env=env
    )
    assert result.returncode == EXIT_REFUSED, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: shell alice/{name}: its host key is not one public key"), line
    assert line.endswith("nothing was written") and INJECTED not in line
    assert not (Path(tampered["TOOLKIT_CONFIG_DIR"]) / "ssh_config").exists()


@pytest.mark.parametrize(
    ("written", "refused"),
    [({"authorized_keys": base64.b64encode(b"justoneword\n\n").decode()}, False),
     ({"authorized_keys": base64.b64encode(b"\xff\xfe").decode()}, True),
     ({"authorized_keys": "not base64!"}, True),
     ({}, True)],
    ids=["one-word-line", "not-utf8", "not-base64", "no-keys"],
)  # fmt: skip
def test_add_key_as_the_operator_reads_a_tampered_secret_as_input(
    tampered: dict[str, str],
    admin_kubeconfig: Path,
    fake_cluster: FakeApiServer,
    tmp_path: Path,
    written: dict[str, str],
    refused: bool,
) -> None:
    with fake_cluster._lock:
        fake_cluster.objects[("secrets", "user-alice", "gpu-words-ssh")]["data"] = written
    key = tmp_path / "collaborator.pub"
    key.write_text(KEY.replace("alice@laptop", "bob@laptop") + "\n")
    result = toolkit(
        "shell", "add-key", "gpu-words", "--user", "alice", "--ssh-key", str(key),
        "--kubeconfig", str(admin_kubeconfig), env=tampered,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    if not refused:  # a line that is no key is the user's own: kept, and the new key added
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == EXIT_REFUSED
    assert result.stderr.strip() == (
        "error: shell gpu-words's Secret gpu-words-ssh holds no readable authorized_keys: recreate the shell"
    )
