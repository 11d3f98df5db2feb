"""`toolkit cluster verify`: the checks playbooks/verify.yml recorded, and the shell check.

The playbook records each check as pass, fail or skip with its reason (set_stats). The shell
check needs the toolkit itself: a throwaway user gets a one-GPU shell, the toolkit logs in over
SSH with the host key it pinned, and both are removed again.
"""

from __future__ import annotations

import base64
import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

VERIFY_USER = "toolkit-verify"
SHELL_CHECK = "shell over ssh"


@dataclass(frozen=True)
class Check:
    check: str
    host: str
    status: str  # pass, fail or skip
    detail: str


def checks_from_stats(stats: dict[str, Any]) -> list[Check]:
    """The playbook's records; an empty or malformed set is itself an error, never a pass."""
    records = stats.get("verify_checks")
    if not isinstance(records, list) or not records:
        raise ToolkitError("verify.yml recorded no checks: the run did not get to its checks")
    found = []
    for record in records:
        status = str(record.get("status", "")).strip()
        if status not in ("pass", "fail", "skip"):
            raise ToolkitError(f"verify.yml recorded check {record.get('check')!r} with status {status!r}")
        found.append(
            Check(str(record["check"]), str(record["host"]), status, str(record.get("detail", "")).strip())
        )
    return found


def shell_check(kubeconfig: Path, scratch: Path, gpus: int, timeout: float = 300) -> Check:
    """Create a shell for a throwaway user, run `id -un` in it over SSH, remove both."""
    import paramiko

    from toolkit import kube, shells, users
    from toolkit.sshkeys import generate_key_pair

    admin = kube.connect(kubeconfig)
    client_key = generate_key_pair()
    request = shells.CreateRequest(
        name="verify", user=VERIFY_USER, authorized_keys=(f"{client_key.public} toolkit-verify",), gpus=gpus,
        storage="1Gi", hours=1, timeout=timeout,
    )  # fmt: skip
    try:
        users.add(admin, VERIFY_USER, gpus, scratch / "verify.kubeconfig", None, None)
        created, _ = shells.create(admin, request, lambda _: None)
        algorithm, blob = created.host_key.split()[:2]
        address = created.ssh_host if created.ssh_port == 22 else f"[{created.ssh_host}]:{created.ssh_port}"
        ssh = paramiko.SSHClient()  # knows only the shell's pinned key, nothing from ~/.ssh
        ssh.get_host_keys().add(
            address, algorithm, paramiko.PKey.from_type_string(algorithm, base64.b64decode(blob))
        )
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(client_key.private_openssh))
        ssh.connect(created.ssh_host, port=created.ssh_port, username=VERIFY_USER, pkey=pkey,
                    look_for_keys=False, allow_agent=False, timeout=30)  # fmt: skip
        try:
            _, stdout, _ = ssh.exec_command("id -un", timeout=30)
            who = stdout.read().decode().strip()
        finally:
            ssh.close()
        if who != VERIFY_USER:
            return Check(SHELL_CHECK, created.node, "fail", f"logged in as {who!r}, not {VERIFY_USER}")
        endpoint = f"{created.ssh_host}:{created.ssh_port}"
        return Check(SHELL_CHECK, created.node, "pass", f"created, logged in over SSH at {endpoint}")
    except (ToolkitError, paramiko.SSHException, OSError) as error:
        return Check(
            SHELL_CHECK, "-", "fail", str(error).splitlines()[0] if str(error) else type(error).__name__
        )
    finally:
        with contextlib.suppress(ToolkitError):  # nothing was created, or the API is gone
            users.remove(admin, VERIFY_USER, purge=True)
