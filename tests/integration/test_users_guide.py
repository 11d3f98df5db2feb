"""docs/users.md, run: every command in its `console` blocks, in order, as a new user would type
them, against the STAND-IN API server whose STAND-IN kubelet runs each shell as a real podman
container of the shell image (tests/standins/podman_kubelet.py), so `connect` and `ssh` reach a
real sshd.

Each `$ COMMAND` line runs in bash with the user's own HOME (a fresh one, holding only an SSH key
pair) and the guide's working directory, which holds the operator's admin kubeconfig for the
operator's lines and a colleague's public key. The cluster has published its GPU counts once,
by running the capacity publisher shells_platform deploys. A command succeeds unless the guide
shows an `error:` line after it; then it must fail, and that line must be exactly what it
printed on stderr (with the home written `~`). So the guide can't drift.

ssh takes `~` from the password database, not from $HOME, and the tests run as root: an `ssh`
first on PATH runs the real one as it would run for a user whose home is $HOME (their
~/.ssh/config unless -F says otherwise, and their key), in batch mode.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from tests.standins.podman_kubelet import PodmanKubelet
from tests.support import gpu_cluster, load_script

PROJECT = Path(__file__).resolve().parents[2]
GUIDE = PROJECT / "docs" / "users.md"
PUBLISHER = PROJECT / "roles" / "shells_platform" / "files" / "publish-capacity.py"
SSH_AS_THE_USER = """#!/bin/sh
config="-F $HOME/.ssh/config"
for argument in "$@"; do [ "$argument" = -F ] && config=""; done
exec /usr/bin/ssh $config -o BatchMode=yes -o IdentityFile="$HOME/.ssh/id_ed25519" "$@"
"""


@dataclass(frozen=True)
class Step:
    line: int
    command: str
    shown: tuple[str, ...]  # what the guide shows it print; an "error: " line means it fails


def steps(text: str) -> list[Step]:
    """The `$ ` lines of the guide's console blocks, with the lines shown after each."""
    found, block = [], False
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            block = line.strip() == "```console" if not block else False
            continue
        if block and line.startswith("$ "):
            shown = []
            for after in lines[number:]:
                if after.startswith(("$ ", "```")):
                    break
                shown.append(after)
            found.append(Step(number, line[2:], tuple(shown)))
    return found


def normal(text: str, home: Path) -> list[str]:
    """Lines as the guide writes them: the home as ~, and any digit (times, ports, node numbers)
    as 0."""
    return [re.sub(r"\d", "0", line.replace(str(home), "~")).strip() for line in text.splitlines()]


def test_the_guide_shows_commands_and_errors_and_no_command_runs_untested() -> None:
    text = GUIDE.read_text()
    found = steps(text)
    assert len(found) >= 20
    assert any(line.startswith("error: ") for step in found for line in step.shown)
    # Every other block is the install, which test_user_install.py runs in a fresh virtualenv.
    others = re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
    assert [(kind, body) for kind, body in others if kind != "console"] == [
        (
            "bash",
            "pipx install ./toolkit-0.1.0-py3-none-any.whl    "
            "# or: pip install ./toolkit-0.1.0-py3-none-any.whl\n",
        )
    ]


@pytest.fixture
def cluster(tmp_path: Path, shell_image: str) -> Iterator[FakeApiServer]:
    server = gpu_cluster("gpu-1", "gpu-2", kubelet=PodmanKubelet(tmp_path / "kubelet"))
    server.seed("Namespace", {"metadata": {"name": "toolkit-system"}})
    server.seed("ConfigMap", {
        "metadata": {"name": "shells", "namespace": "toolkit-system",
                     "labels": {"toolkit.dev/shells-config": "true"}},
        "data": {"image": shell_image, "sshHost": "127.0.0.1", "webDomain": "shells.example.org",
                 "sharedStorage": "10Gi"},
    })  # fmt: skip
    yield server
    server.stop()


def publish_capacity(cluster: FakeApiServer, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the capacity publisher's CronJob does each minute, once."""
    directory.mkdir()
    (directory / "token").write_text(cluster.admin_token)
    (directory / "ca.crt").write_bytes(cluster.ca_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.port))
    publisher = load_script(PUBLISHER)
    monkeypatch.setattr(publisher, "ACCOUNT_DIR", directory)
    publisher.publish()


@pytest.mark.lab
def test_every_command_of_the_users_guide_runs_as_shown(
    cluster: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_capacity(cluster, tmp_path / "serviceaccount", monkeypatch)
    home, work, shims = tmp_path / "home", tmp_path / "work", tmp_path / "shims"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    work.mkdir()
    shims.mkdir()
    (shims / "ssh").write_text(SSH_AS_THE_USER)
    (shims / "ssh").chmod(0o755)
    key = home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "bob")], check=True)
    cluster.kubeconfig(work / "admin.kubeconfig")
    env = {
        "HOME": str(home),
        "PATH": f"{shims}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "COLUMNS": "200",
        "TERM": "dumb",
    }
    for step in steps(GUIDE.read_text()):
        result = subprocess.run(
            ["bash", "-c", step.command], cwd=work, env=env, input="", capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        where = f"docs/users.md:{step.line}: {step.command}\n{result.stdout}{result.stderr}"
        errors = [line for line in step.shown if line.startswith("error: ")]
        assert (result.returncode != 0) == bool(errors), where
        printed = normal(result.stdout + result.stderr, home)
        for line in step.shown:
            assert re.sub(r"\d", "0", line).strip() in printed, f"{where}\nnot printed: {line}"
        if errors:
            assert [line for line in printed if line.startswith("error: ")] == normal(errors[0], home), where
    # What the guide says is left: no shell, no disk but the shared area (the home kept by one
    # delete was given to another shell, then deleted), and no Include line in the user's ssh config.
    assert cluster.list("StatefulSet", "user-alice") == []
    assert [pvc["metadata"]["name"] for pvc in cluster.list("PersistentVolumeClaim", "user-alice")] == [
        "shared"
    ]
    assert "Include" not in (home / ".ssh" / "config").read_text()
