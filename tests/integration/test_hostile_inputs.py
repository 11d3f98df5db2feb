"""Hostile and careless inputs across `shell`, `user`, `inventory`, `doctor` and `cluster`, as a
new user or operator would type them: each is refused with one line on stderr and its exit code,
never a traceback, and leaves nothing on the (stand-in) API server or on disk."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import PROJECT, toolkit
from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube, users

LONG = "1" + "0" * 30


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    message: str  # a part of the one line on stderr
    code: int = 3


def case(command: str, message: str, code: int = 3) -> Case:
    return Case(tuple(command.split(" ")), message, code)


# {pub}: alice's public key; {files}: a folder of odd files (see `files`); {admin}: the admin
# kubeconfig. The user's kubeconfig is appended to shell commands, the admin's to user commands.
SHELL_CASES = [
    *(
        case(f"create {name} --ssh-key {{pub}}", f"shell name {name!r} is invalid")
        for name in ("Bad_Name", "a" * 41, "9lives", "trail-", "with.dot", "UPPER", "ünï")
    ),
    case("create -lead --ssh-key {pub}", "No such option: -l"),
    case(
        "create train --web --ssh-key {pub}",
        "--web: this cluster serves web terminals through its ingress but has no web domain",
    ),
    case("create x;rm --ssh-key {pub}", "shell name 'x;rm' is invalid"),
    case("create $(id) --ssh-key {pub}", "shell name '$(id)' is invalid"),
    *(
        case(f"create train --ssh-key {{pub}} --gpus {gpus}", message)
        for gpus, message in (
            ("-1", "--gpus must be 0 or more, not -1"),
            ("abc", "Invalid value for '--gpus'"),
            ("1.5", "Invalid value for '--gpus'"),
            (LONG, "--gpus 1000000000000000000000000000000 is more than any node has"),
            ("9", "--gpus 9 is more than any node has (the largest, gpu-1, has 8)"),
            ("3", "--gpus 3 is more than alice's quota allows: 2 GPUs"),
            ("0", "--gpus 0: this cluster's shells need a GPU"),
        )
    ),
    *(
        case(f"create train --ssh-key {{pub}} --cpu {cpu}", message)
        for cpu, message in (
            ("lots", "--cpu 'lots' is not a Kubernetes quantity"),
            ("-1", "--cpu '-1' is not a Kubernetes quantity"),
            ("0", "--cpu and --memory must be more than 0"),
            ("1e3", "--cpu '1e3' is not a Kubernetes quantity"),
            ("1000000000", "--cpu 1000000000 / --memory 256Gi is more than gpu-1 has"),
            ("1Ki", "--cpu 1024 / --memory 256Gi is more than gpu-1 has"),
        )
    ),
    *(
        case(f"create train --ssh-key {{pub}} --memory {memory}", message)
        for memory, message in (
            ("lots", "--memory 'lots' is not a Kubernetes quantity"),
            ("1Pi", "--memory 1024Ti is more than gpu-1 has"),
            ("0", "--cpu and --memory must be more than 0"),
            ("-5Gi", "--memory '-5Gi' is not a Kubernetes quantity"),
            ("12XB", "--memory '12XB' is not a Kubernetes quantity"),
        )
    ),
    *(
        case(f"create train --ssh-key {{pub}} --shm {shm}", message)
        for shm, message in (
            ("900Ti", "--shm 900Ti is more than the shell's memory (256Gi)"),
            ("lots", "--shm 'lots' is not a Kubernetes quantity"),
            ("-1", "--shm '-1' is not a Kubernetes quantity"),
        )
    ),
    case("create train --ssh-key {pub} --storage lots", "--storage 'lots' is not a Kubernetes quantity"),
    *(
        case(
            f"create train --ssh-key {{pub}} --image {image}", f"--image {image!r} is not an image reference"
        )
        for image in ("nvcr.io/x;rm", "UPPER:Case:x", "img@sha256:abc", "a/../b", "$(id)", "python:tagé")
    ),
    case("create train --ssh-key {pub} --storage -1Gi", "--storage '-1Gi' is not a Kubernetes quantity"),
    *(
        case(f"create train --ssh-key {{pub}} --hours {hours}", message)
        for hours, message in (
            ("0", "--hours/--for must be between 5 minutes and 168 hours"),
            ("169", "--hours/--for must be between 5 minutes and 168 hours"),
            ("-3", "--hours '-3' is not a number of hours"),
            (
                "0.01",
                "--hours/--for must be between 5 minutes and 168 hours (this cluster's maximum), not 0m",
            ),
            (LONG, "--hours/--for must be between 5 minutes and 168 hours"),
            ("abc", "--hours 'abc' is not a number of hours"),
            ("1e3", "--hours '1e3' is not a number of hours"),
        )
    ),
    case("create train --ssh-key {pub} --expose bogus", "Invalid value for '--expose'"),
    case("create train --ssh-key {pub} --expose ClusterIP", "Invalid value for '--expose'"),
    case("create train --ssh-key {pub} --node-selector gpu", "--node-selector 'gpu' is not KEY=VALUE"),
    case("create train --ssh-key {pub} --node-selector =x", "--node-selector '=x' is not KEY=VALUE"),
    case("create train --ssh-key {pub} --node-selector zone=mars", "no ready node matches zone=mars"),
    case(
        "create train --ssh-key {pub} --gpu-type A100",
        "--gpu-type A100 is none of this cluster's GPUs: NVIDIA-H100-80GB-HBM3",
    ),
    case("create train --ssh-key {pub} --gpu-type h100;id", "--gpu-type 'h100;id' is not a GPU product"),
    case("create train --ssh-key {pub} --storage-class nope", "StorageClass 'nope' does not exist"),
    *(
        case(f"create train --ssh-key {{files}}/{name}", message)
        for name, message in (
            ("id", "is a PRIVATE key: pass the public key"),
            ("notakey.pub", "not an OpenSSH public key"),
            ("badblob.pub", "key's data is not valid base64 key data"),
            ("empty.pub", "holds no SSH public key"),
            ("huge.pub", "is larger than 256 KiB"),
            ("binary.pub", "is not text"),
            ("fifo", "is not a regular file"),
            ("missing.pub", "cannot read SSH key file"),
            ("", "is not a regular file"),
        )
    ),
    case("create train --ssh-key /dev/zero", "SSH key file /dev/zero is not a regular file"),
    case("create train", "no SSH key given: pass --ssh-key FILE or --github USER"),
    case("create train --github bad/name", "'bad/name' is not a GitHub user name"),
    case("create train --github " + "g" * 40, "is not a GitHub user name"),
    case("create train --ssh-key {pub} --frobnicate", "No such option: --frobnicate"),
    case("frobnicate", "toolkit shell: No such command 'frobnicate'"),
    *(
        case(f"{command} ghost", "alice has no shell named 'ghost'")
        for command in (
            "show",
            "logs",
            "pause",
            "resume",
            "connect",
            "delete --yes",
            "add-key --ssh-key {pub}",
        )
    ),
    case("extend ghost --hours 2", "alice has no shell named 'ghost'"),
    case("extend ghost --hours 0", "--hours/--for must be between 5 minutes and 168 hours"),
    case(f"extend ghost --hours {LONG}", "--hours/--for must be between 5 minutes and 168 hours"),
    case("extend ghost --hours x", "--hours 'x' is not a number of hours"),
    case(
        "extend ghost --for 99999999999999999999999999999999d",
        "--hours/--for must be between 5 minutes and 168 hours",
    ),
    case("extend ghost --for 1h1h", "--for '1h1h' is not a duration"),
    case("show Ghost", "shell name 'Ghost' is invalid"),
    *(
        case(f"list --user {name}", f"user name {name!r} is invalid")
        for name in ("Alice", "root!", "a" * 33, "-x", "x_y", "../etc")
    ),
    case("list --output xml", "Invalid value for '--output'"),
]
USER_CASES = [
    case("add Alice -o {out}/k", "user name 'Alice' is invalid"),
    case("add bob --max-gpus -1 -o {out}/k", "--max-gpus must be 0 or more, not -1"),
    case("add bob --max-gpus 99 -o {out}/k", "--max-gpus 99 is more than the cluster's 16 GPUs"),
    case("add bob --max-gpus many -o {out}/k", "Invalid value for '--max-gpus'"),
    case("add bob -o {admin}", "exists: pass --force to overwrite it"),
    case("add bob -o {files}/notakey.pub/k", "Not a directory"),
    case("add bob -o /proc/bob.kubeconfig", "cannot write --output /proc/bob.kubeconfig"),
    case("add bob -o {out}", "is a directory: name the file to write"),
    case("add bob --force -o {files}/link.kubeconfig", "is a symbolic link: name the file itself"),
    case("add bob --cpu lots -o {out}/k", "--cpu 'lots' is not a Kubernetes quantity"),
    case("remove nobody --yes", "there is no user 'nobody'"),
    case("remove No_Body --yes", "user name 'No_Body' is invalid"),
]
CONNECTION_CASES = [
    case("shell list --kubeconfig {files}/missing.kubeconfig", "no kubeconfig at"),
    case("shell list --kubeconfig {files}/notakey.pub", "is not a usable kubeconfig"),
    case("shell list --kubeconfig {files}", "no kubeconfig at"),
    case("shell list --kubeconfig {admin} --context elsewhere", "elsewhere"),
]

# {inv}: a folder of inventories (see `write_inventories`), each a hosts.yml of its own.
OPERATOR_CASES = [
    case("inventory validate -i {inv}/missing", "does not exist"),
    case("inventory validate -i {inv}/latin1", "is not UTF-8"),
    case("inventory validate -i {inv}/broken-yaml", "invalid YAML at line 2"),
    case("inventory validate -i {inv}/no-servers", "k3s_servers"),
    case("inventory validate -i {inv}/two-servers", "odd"),
    case("inventory validate -i {inv}/shell-name", "host name 's1;touch x' is not a valid host name"),
    case(
        "inventory validate -i {inv}/shell-address",
        "ansible_host '$(touch x)' of s1 is not a host name or IP address",
    ),
    case("inventory validate -i {inv}/bad-port", "ansible_port 'x' of s1 is not a port number"),
    case("inventory validate -i {inv}/big-port", "ansible_port '70000' of s1 is not a port number"),
    case("doctor -i {inv}/shell-address", "ansible_host '$(touch x)' of s1 is not a host name or IP address"),
    case("doctor -i {inv}/bad-port", "ansible_port 'x' of s1 is not a port number"),
    case("doctor -i {inv}/latin1", "is not UTF-8"),
    case("doctor -i {inv}/missing", "does not exist"),
    case("cluster up -i {inv}/missing", "does not exist"),
    case("cluster up", "Missing option '--inventory'"),
    case(
        "cluster up -i {inv}/valid -e k3s_token=K10abc::server:x", "secrets are not taken on the command line"
    ),
    case("cluster up -i {inv}/valid -e justaword", "expected key=value"),
    case("cluster up -i {inv}/valid -e @{inv}/none.yml", "no such file"),
    case("cluster up -i {inv}/valid --frobnicate", "No such option: --frobnicate"),
    case("cluster reset -i {inv}/valid", "refusing to reset without --yes"),
    case("node drain ghost -i {inv}/valid", "ghost is not a k3s server or agent"),
    case("inventory init {inv}", "exists and is not empty"),
    case("--frobnicate", "No such option: --frobnicate"),
]
VALID_INVENTORY = """\
cluster:
  children:
    k3s_servers:
      hosts:
        s1: {ansible_host: 192.0.2.11}
    k3s_agents: {}
    gpu_nodes: {}
    weka_clients: {}
"""
INVENTORIES = {
    "valid": VALID_INVENTORY,
    "broken-yaml": "cluster: [unclosed\n",
    "no-servers": VALID_INVENTORY.replace("k3s_servers", "k3s_masters"),
    "two-servers": VALID_INVENTORY.replace(
        "{ansible_host: 192.0.2.11}", "{ansible_host: 192.0.2.11, k3s_api_endpoint: 192.0.2.10}\n        s2:"
    ),
    "shell-name": VALID_INVENTORY.replace("s1:", "s1;touch x:"),
    "shell-address": VALID_INVENTORY.replace("192.0.2.11", '"$(touch x)"'),
    "bad-port": VALID_INVENTORY.replace(
        "{ansible_host: 192.0.2.11}", "{ansible_host: 192.0.2.11, ansible_port: x}"
    ),
    "big-port": VALID_INVENTORY.replace(
        "{ansible_host: 192.0.2.11}", "{ansible_host: 192.0.2.11, ansible_port: 70000}"
    ),
}


def write_inventories(root: Path) -> Path:
    inventories = root / "inventories"
    for name, text in INVENTORIES.items():
        (inventories / name).mkdir(parents=True)
        (inventories / name / "hosts.yml").write_text(text)
    (inventories / "latin1").mkdir()
    (inventories / "latin1" / "hosts.yml").write_bytes(
        VALID_INVENTORY.replace("s1", "s\xe9").encode("latin-1")
    )
    return inventories


@dataclass
class World:
    server: FakeApiServer
    alice: Path
    admin: Path
    files: Path
    out: Path
    inventories: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One stand-in cluster for every row (the rows change nothing): alice with a 2-GPU quota."""
    root = tmp_path_factory.mktemp("hostile")
    server = FakeApiServer().start()
    for name in ("gpu-1", "gpu-2"):
        server.add_gpu_node(name, labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    admin = server.kubeconfig(root / "admin.kubeconfig")
    users.add(kube.connect(admin), "alice", 2, root / "alice.kubeconfig", None, None)
    files = root / "files"
    files.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(files / "id")], check=True)
    (files / "notakey.pub").write_text("hello world\n")
    (files / "badblob.pub").write_text("ssh-ed25519 !!!notbase64!!! alice\n")
    (files / "empty.pub").write_text("# only a comment\n")
    (files / "huge.pub").write_text((files / "id.pub").read_text() * 4000)
    (files / "binary.pub").write_bytes(b"\xff\xfe\x00ssh-ed25519")
    os.mkfifo(files / "fifo")
    (files / "link.kubeconfig").symlink_to(files / "notakey.pub")
    out = root / "out"
    out.mkdir()
    yield World(server, root / "alice.kubeconfig", admin, files, out, write_inventories(root))
    server.stop()


def snapshot(world: World) -> tuple[set[tuple[str, str, str]], list[str], list[str]]:
    objects = {key for key in world.server.objects if key[0] != "events"}
    runs = PROJECT / ".cache" / "runs"
    return (
        objects,
        sorted(str(p) for p in [*world.out.rglob("*"), *world.inventories.rglob("*")]),
        sorted(p.name for p in runs.iterdir()) if runs.is_dir() else [],
    )


def check_refused(world: World, args: list[str], expected: Case, tmp_path: Path) -> None:
    values = {"pub": f"{world.files}/id.pub", "files": str(world.files), "admin": str(world.admin),
              "out": str(world.out), "inv": str(world.inventories)}  # fmt: skip
    argv = [arg.format(**values) for arg in args]
    before = snapshot(world)
    config_dir = tmp_path / "config"
    result = toolkit(*argv, env={"TOOLKIT_CONFIG_DIR": str(config_dir)}, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == expected.code, output
    assert "Traceback" not in output, output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), output
    assert expected.message in result.stderr, output
    after = snapshot(world)
    assert after == before
    assert not config_dir.exists()


@pytest.mark.parametrize("row", SHELL_CASES, ids=[" ".join(c.args)[:60] for c in SHELL_CASES])
def test_hostile_shell_input(world: World, row: Case, tmp_path: Path) -> None:
    check_refused(world, ["shell", *row.args, "--kubeconfig", str(world.alice)], row, tmp_path)


@pytest.mark.parametrize("row", USER_CASES, ids=[" ".join(c.args)[:60] for c in USER_CASES])
def test_hostile_user_input(world: World, row: Case, tmp_path: Path) -> None:
    check_refused(world, ["user", *row.args, "--kubeconfig", str(world.admin)], row, tmp_path)


@pytest.mark.parametrize("row", CONNECTION_CASES, ids=[" ".join(c.args)[:60] for c in CONNECTION_CASES])
def test_hostile_connection_input(world: World, row: Case, tmp_path: Path) -> None:
    check_refused(world, list(row.args), row, tmp_path)


@pytest.mark.parametrize("row", OPERATOR_CASES, ids=[" ".join(c.args)[:60] for c in OPERATOR_CASES])
def test_hostile_operator_input(world: World, row: Case, tmp_path: Path) -> None:
    check_refused(world, list(row.args), row, tmp_path)


def test_the_table_has_at_least_a_hundred_rows() -> None:
    assert len(SHELL_CASES) + len(USER_CASES) + len(CONNECTION_CASES) + len(OPERATOR_CASES) >= 100
