"""Real ansible-runner runs. Every run checks host keys, whatever ansible-runner's default: against
a real sshd on loopback, an unknown host key makes the host unreachable, and a pinned one lets the
run through. Ctrl-C stops a run, and works again after it."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.errors import EXIT_OK, EXIT_UNREACHABLE, Interrupted
from toolkit.runner import RunRequest, RunTracker, run_playbook


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Linux routes all of 127.0.0.0/8 to loopback.
LOOPBACK_ADDRESSES = tuple(f"127.0.0.{last}" for last in range(1, 9))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A real sshd on loopback that lets root in with one key: (port, client key, host public key).
    It listens on LOOPBACK_ADDRESSES, so a test can list it as that many hosts."""
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        "".join(f"ListenAddress {address}\n" for address in LOOPBACK_ADDRESSES)
        + f"Port {port}\nHostKey {tmp_path / 'host'}\nUsePAM no\n"
        f"PasswordAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                server.poll()
                assert server.returncode is None, "sshd did not start"
                subprocess.run(["sleep", "0.05"], check=True)
        yield port, tmp_path / "client", tmp_path / "host.pub"
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_ping(project: Path, port: int, client_key: Path, known_hosts: Path) -> int:
    (project / "playbooks").mkdir(parents=True, exist_ok=True)
    (project / "playbooks" / "ping.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
    )
    (project / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = true\ninterpreter_python = /usr/bin/python3\n"
    )
    inventory = project / "hosts.yml"
    inventory.write_text(
        f"all:\n  hosts:\n    loopback:\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n"
        f"      ansible_user: root\n      ansible_ssh_private_key_file: {client_key}\n"
        f"      ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts} -o ControlMaster=no\n"
    )
    request = RunRequest(playbook=project / "playbooks" / "ping.yml", inventory=inventory)
    return run_playbook(project, request, RunTracker()).exit_code


def test_an_unknown_host_key_is_unreachable_and_a_pinned_one_is_not(
    sshd: tuple[int, Path, Path], tmp_path: Path
) -> None:
    port, client_key, host_key = sshd
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    assert run_ping(tmp_path / "project", port, client_key, known_hosts) == EXIT_UNREACHABLE
    algorithm, blob = host_key.read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {algorithm} {blob}\n")
    assert run_ping(tmp_path / "project", port, client_key, known_hosts) == EXIT_OK


def test_ctrl_c_stops_a_run_and_leaves_ctrl_c_working_after_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "playbooks").mkdir(parents=True)
    (project / "playbooks" / "wait.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.wait_for:\n        timeout: 60\n"
    )
    (project / "ansible.cfg").write_text("[defaults]\ninterpreter_python = /usr/bin/python3\n")
    inventory = project / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    local:\n      ansible_connection: local\n")
    request = RunRequest(playbook=project / "playbooks" / "wait.yml", inventory=inventory)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(5, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(Interrupted, match=r"^interrupted; the run stopped where it was") as stopped:
        run_playbook(project, request, RunTracker())
    timer.join()
    assert time.monotonic() - started < 40 and stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
