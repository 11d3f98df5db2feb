"""`toolkit cluster verify`: the checks playbooks/verify.yml recorded, and the shell check.

The playbook records each check as pass, fail or skip with its reason (set_stats), and the GPU
nodes its checks ran on. The shell check needs the toolkit itself: a throwaway user gets a shell
(with one GPU when there is a GPU node), the toolkit logs in over SSH with the host key it pinned,
and both are removed again.
"""

from __future__ import annotations

import base64
import contextlib
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.checks import Check, Status
from toolkit.errors import EXIT_OK, EXIT_TASK_FAILED, ToolkitError

if TYPE_CHECKING:
    from toolkit.runner import RunOutcome

VERIFY_USER = "toolkit-verify"
SHELL_CHECK = "shell over ssh"
RECORDED = (Status.PASS, Status.FAIL, Status.SKIP)  # what verify.yml may record

# Runs a playbook of the project with these extra vars (the CLI's, with its progress display).
PlaybookRunner = Callable[[str, list[str]], "RunOutcome"]


@dataclass(frozen=True)
class Report:
    checks: list[Check]  # empty when verify.yml could not run at all
    exit_code: int  # 0 nothing failed, 1 a check or verify.yml failed, else verify.yml's own code


def checks_from_stats(stats: dict[str, Any]) -> list[Check]:
    """The playbook's records; an empty or malformed set is itself an error, never a pass."""
    records = stats.get("verify_checks")
    if not isinstance(records, list) or not records:
        raise ToolkitError("verify.yml recorded no checks: the run did not get to its checks")
    found = []
    for record in records:
        status = str(record.get("status", "")).strip()
        if status not in RECORDED:
            raise ToolkitError(f"verify.yml recorded check {record.get('check')!r} with status {status!r}")
        found.append(
            Check(
                str(record["check"]),
                str(record["host"]),
                Status(status),
                str(record.get("detail", "")).strip(),
            )
        )
    return found


def gpu_nodes(stats: dict[str, Any]) -> list[str]:
    """The GPU nodes verify.yml ran its GPU checks on, as it recorded them."""
    nodes = stats.get("verify_gpu_nodes", [])
    if not isinstance(nodes, list):
        raise ToolkitError(f"verify.yml recorded verify_gpu_nodes as {nodes!r}, not a list")
    return [str(node) for node in nodes]


def playbook_checks(outcome: RunOutcome) -> list[Check]:
    """verify.yml's records, and each of its own tasks that failed: the checks after such a task
    are missing, so it is a failure of its own."""
    checks = checks_from_stats(outcome.tracker.stats_data)
    if outcome.exit_code:
        checks += [
            Check("verify.yml", p.host, Status.FAIL, f"{p.task}: {p.message}")
            for p in outcome.tracker.problems
        ]
    return checks


def shell_skip(outcome: RunOutcome) -> Check | None:
    """Why the shell check cannot run (verify.yml did not finish, or found no Kubernetes API to
    ask), or None when it can."""
    if outcome.exit_code:
        return Check(SHELL_CHECK, "-", Status.SKIP, "verify.yml did not finish")
    api_skip = str(outcome.tracker.stats_data.get("verify_api_skip") or "").strip()
    return Check(SHELL_CHECK, "-", Status.SKIP, api_skip) if api_skip else None


def run(run_playbook: PlaybookRunner, extra_vars: list[str]) -> Report:
    """verify.yml with these extra vars, then the shell check against the kubeconfig that
    kubeconfig.yml fetches."""
    outcome = run_playbook("verify.yml", extra_vars)
    if outcome.exit_code not in (EXIT_OK, EXIT_TASK_FAILED):
        return Report([], outcome.exit_code)
    checks = playbook_checks(outcome)
    skipped = shell_skip(outcome)
    if skipped is not None:
        checks.append(skipped)
    else:
        with tempfile.TemporaryDirectory(prefix="toolkit-verify-") as scratch:
            fetched = Path(scratch) / "admin.yaml"
            if run_playbook("kubeconfig.yml", [f"k3s_kubeconfig_dest={fetched}"]).exit_code != EXIT_OK:
                checks.append(Check(SHELL_CHECK, "-", Status.FAIL, "could not fetch the kubeconfig"))
            else:
                gpus = 1 if gpu_nodes(outcome.tracker.stats_data) else 0
                checks.append(shell_check(fetched, Path(scratch), gpus))
    failed = outcome.exit_code or any(check.failed for check in checks)
    return Report(checks, EXIT_TASK_FAILED if failed else EXIT_OK)


def shell_check(kubeconfig: Path, scratch: Path, gpus: int, timeout: float = 300) -> Check:
    """Create a shell for a throwaway user, run `id -un` in it over SSH, remove both."""
    import paramiko

    from toolkit import kube, shell_create, users
    from toolkit.shell_plan import CreateRequest
    from toolkit.sshkeys import generate_key_pair

    admin = kube.connect(kubeconfig)
    client_key = generate_key_pair()
    request = CreateRequest(
        name="verify", user=VERIFY_USER, authorized_keys=(f"{client_key.public} toolkit-verify",), gpus=gpus,
        storage="1Gi", hours=Fraction(1), timeout=timeout,
    )  # fmt: skip
    try:
        users.add(admin, VERIFY_USER, gpus, scratch / "verify.kubeconfig", None, None)
        created = shell_create.create(admin, request, lambda _: None)
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
            return Check(SHELL_CHECK, created.node, Status.FAIL, f"logged in as {who!r}, not {VERIFY_USER}")
        endpoint = f"{created.ssh_host}:{created.ssh_port}"
        return Check(SHELL_CHECK, created.node, Status.PASS, f"created, logged in over SSH at {endpoint}")
    except (ToolkitError, paramiko.SSHException, OSError) as error:
        return Check(
            SHELL_CHECK, "-", Status.FAIL, str(error).splitlines()[0] if str(error) else type(error).__name__
        )
    finally:
        with contextlib.suppress(ToolkitError):  # nothing was created, or the API is gone
            users.remove(admin, VERIFY_USER, purge=True)
