"""The users' install: a fresh virtualenv with `pip install toolkit` alone (no operator extra), its
dependencies from the package index as a user's laptop gets them, running the shell flow against
the STAND-IN API server; Ansible absent, and operator commands answering with the extra to add."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from tests.support import gpu_cluster
from toolkit import images

PROJECT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


@pytest.fixture(scope="module")
def user_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `toolkit` command of a virtualenv holding the users' install and nothing else."""
    root = tmp_path_factory.mktemp("user-install")
    images.build_own_wheel(PROJECT, root / "wheels", root / "wheel.log")
    [wheel] = (root / "wheels").glob("toolkit-*.whl")
    # The users' guide names the very file users are handed.
    assert f"pipx install ./{wheel.name}" in (PROJECT / "docs" / "users.md").read_text()
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    installed = subprocess.run(
        [str(root / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return root / "venv" / "bin"


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    server = gpu_cluster()
    yield server
    server.stop()


def run(bin_dir: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "COLUMNS": "200", "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(bin_dir / "toolkit"), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_the_users_install_has_no_operator_packages(user_install: Path) -> None:
    for module in ("ansible", "ansible_runner", "paramiko", "fabric", "jinja2"):
        found = subprocess.run([str(user_install / "python"), "-c", f"import {module}"], capture_output=True)
        assert found.returncode != 0, f"{module} is in the users' install"


def test_operator_commands_name_the_extra_in_one_line(user_install: Path, tmp_path: Path) -> None:
    for command in (["cluster", "up", "-i", "inventory/lab"], ["doctor", "-i", "x"], ["lab", "status"],
                    ["inventory", "validate", "-i", "x"], ["node", "drain", "gpu-1", "-i", "x"]):  # fmt: skip
        result = run(user_install, *command, home=tmp_path)
        assert result.returncode == 3, (command, result.stderr)
        assert result.stderr.splitlines() == [
            f"error: toolkit {' '.join(command[:2]) if command[0] != 'doctor' else 'doctor'} is an operator "
            "command and this install lacks ansible, ansible_runner, paramiko, fabric, jinja2: install the "
            "operator extra, pip install -e '.[operator]' in the toolkit's checkout (./scripts/install does)"
        ], result.stderr
    # Their help still shows, so a user can see what the command is.
    assert run(user_install, "cluster", "up", "--help", home=tmp_path).returncode == 0


def test_a_user_runs_the_shell_flow_with_the_users_install(
    user_install: Path, cluster: FakeApiServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    admin = cluster.kubeconfig(tmp_path / "admin.kubeconfig")
    added = run(user_install, "user", "add", "alice", "--max-gpus", "2", "-o", str(tmp_path / "alice"),
                "--kubeconfig", str(admin), home=home)  # fmt: skip
    assert added.returncode == 0, added.stderr
    # The user's kubeconfig where kubectl and the toolkit look by default.
    (home / ".kube").mkdir()
    os.replace(tmp_path / "alice", home / ".kube" / "config")
    (home / "id.pub").write_text(KEY + "\n")
    steps = [
        ("shell", "create", "train", "--ssh-key", str(home / "id.pub"), "--timeout", "30"),
        ("shell", "list"),
        ("shell", "pause", "train"),
        ("shell", "resume", "train", "--timeout", "30"),
        ("shell", "delete", "train", "--yes"),
        ("shell", "list"),
    ]
    outputs = []
    for step in steps:
        result = run(user_install, *step, home=home)
        assert result.returncode == 0, (step, result.stdout + result.stderr)
        outputs.append(result.stdout)
    assert "shell train is ready" in outputs[0]
    assert "train" in outputs[1] and "ready" in outputs[1]
    assert "train" not in outputs[5]
    # Its ssh config went where the platform keeps a user's configuration.
    assert (home / ".config" / "toolkit" / "ssh_config").is_file()
