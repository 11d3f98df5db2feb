"""End to end on real processes: `toolkit user add` and `toolkit shell create` against the STAND-IN
API server, then the shell image run locally, as the StatefulSet describes it, with the Secret
the toolkit generated. A real `ssh` logs in through the ssh config the toolkit wrote, with strict
host-key checking against the key the toolkit pinned, and ttyd takes the printed credential.

What stands in: the API server (no kubelet runs the pod, so podman does, with the StatefulSet's
env, capabilities and no-new-privileges), and the node's address (127.0.0.1).
"""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import toolkit
from tests.standins.kube_apiserver import FakeApiServer

pytestmark = pytest.mark.lab


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def cluster(tmp_path: Path, shell_image: str) -> Iterator[tuple[FakeApiServer, Path]]:
    ssh_port = free_port()
    server = FakeApiServer(first_node_port=ssh_port).start()
    server.add_gpu_node("gpu-1")
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    server.seed("Namespace", {"metadata": {"name": "toolkit-system"}})
    server.seed("ConfigMap", {
        "metadata": {
            "name": "shells", "namespace": "toolkit-system", "labels": {"toolkit.dev/shells-config": "true"}
        },
        "data": {"image": shell_image, "sshHost": "127.0.0.1"},
    })  # fmt: skip
    yield server, server.kubeconfig(tmp_path / "admin.kubeconfig")
    server.stop()


def run_like_the_statefulset(server: FakeApiServer, root: Path, ports: dict[int, int]) -> str:
    """podman run with the StatefulSet's image, env, capabilities and the Secret's files."""
    sts = server.get("StatefulSet", "train", "user-alice")
    secret = server.get("Secret", "train-ssh", "user-alice")
    assert sts is not None and secret is not None
    secret_dir, home = root / "secret", root / "home"
    secret_dir.mkdir()
    home.mkdir()
    for key, value in secret["data"].items():
        (secret_dir / key).write_bytes(base64.b64decode(value))
        (secret_dir / key).chmod(0o400)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    args = ["podman", "run", "--detach", "--name", f"toolkit-e2e-{ports[22]}", "--cap-drop", "ALL"]
    args += [arg for cap in security["capabilities"]["add"] for arg in ("--cap-add", cap)]
    args += ["--security-opt", "no-new-privileges"]
    args += [arg for env in container["env"] for arg in ("--env", f"{env['name']}={env['value']}")]
    args += [
        arg for inside, outside in ports.items() for arg in ("--publish", f"127.0.0.1:{outside}:{inside}")
    ]
    args += [
        "--volume",
        f"{secret_dir}:/etc/shell/secret:ro",
        "--volume",
        f"{home}:/home/alice",
        container["image"],
    ]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def test_user_logs_in_with_the_toolkits_ssh_config_and_strict_host_keys(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")}
    user_kubeconfig = tmp_path / "alice.kubeconfig"
    added = toolkit(
        "user", "add", "alice", "--max-gpus", "1", "-o", str(user_kubeconfig), "--kubeconfig", str(admin)
    )
    assert added.returncode == 0, added.stderr
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    created = toolkit(
        "shell", "create", "train", "--web", "--ssh-key", f"{key}.pub", "--identity-file", str(key),
        "--kubeconfig", str(user_kubeconfig), env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    ssh_command = re.search(r"ssh -F (\S+) (toolkit-alice-train)", created.stdout)
    web = re.search(r"web terminal: http://127\.0\.0\.1:(\d+)/\s+user:password (\S+)", created.stdout)
    assert ssh_command and web, created.stdout
    ssh_port = int(server.get("Service", "train", "user-alice")["spec"]["ports"][0]["nodePort"])  # type: ignore[index]
    container = run_like_the_statefulset(server, tmp_path, {22: ssh_port, 7681: int(web.group(1))})
    try:
        login: Any = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            login = subprocess.run(
                ["ssh", "-F", ssh_command.group(1), "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                 ssh_command.group(2), "id -un; echo kept > ~/note.txt; cat /etc/motd"],
                capture_output=True, text=True, timeout=20, check=False,
            )  # fmt: skip
            if login.returncode == 0:
                break
            time.sleep(0.5)
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True, check=False)
        assert login.returncode == 0, f"{login.stderr}\ncontainer log:\n{logs.stdout}{logs.stderr}"
        assert login.stdout.splitlines()[0] == "alice"
        assert "expires at" in login.stdout
        assert (tmp_path / "home" / "note.txt").read_text() == "kept\n"
        assert requests.get(f"http://127.0.0.1:{web.group(1)}/", timeout=5).status_code == 401
        user, password = web.group(2).split(":", 1)
        assert (
            requests.get(f"http://127.0.0.1:{web.group(1)}/", auth=(user, password), timeout=5).status_code
            == 200
        )

        # A different host key on that address is refused: the toolkit pinned the shell's own.
        known_hosts = Path(ssh_command.group(1)).parent / "known_hosts"
        pinned = known_hosts.read_text()
        other = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
        )
        assert other.returncode == 0
        forged = (tmp_path / "other.pub").read_text().split()[:2]
        known_hosts.write_text(f"toolkit-alice-train {forged[0]} {forged[1]}\n")
        refused = subprocess.run(
            ["ssh", "-F", ssh_command.group(1), "-o", "BatchMode=yes", ssh_command.group(2), "true"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in refused.stderr
        known_hosts.write_text(pinned)
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--time", "0", container], capture_output=True, check=False
        )
