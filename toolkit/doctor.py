"""`toolkit doctor`: a fast parallel preflight of every host over SSH, without Ansible.

One SSH connection per host runs one probe script; its `key=value` lines are judged here.
Host keys are checked strictly against the inventory's known_hosts; `accept_new` accepts
unknown keys and saves them, as OpenSSH's StrictHostKeyChecking=accept-new does.

The GPU count and the Fabric Manager version rule are the toolkit.nvidia collection's
(module_utils/nvidia_host.py), as the roles apply them: the probe runs that file with the
host's python3 to count, and the judging imports it here.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from toolkit.checks import Check, Status
from toolkit.errors import ToolkitError
from toolkit.inventory import Inventory
from toolkit.paths import project_dir

SUPPORTED_OS = ("debian 12", "ubuntu 22.04", "ubuntu 24.04")
K3S_PORTS = (6443, 2379, 2380, 10250, 8472)
MIN_FREE_GIB = 50

NVIDIA_HOST = Path("collections/ansible_collections/toolkit/nvidia/plugins/module_utils/nvidia_host.py")

# Runs as the login user; `sudo -n` tells whether the toolkit's become will work.
SHELL_PROBE = r"""
. /etc/os-release 2>/dev/null; echo "os=$ID $VERSION_ID"
echo "kernel=$(uname -r)"
if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi
echo "headers=$(apt-cache policy "linux-headers-$(uname -r)" 2>/dev/null | awk '/Candidate:/ {print $2}')"
dir=/var/lib/rancher; [ -d "$dir" ] || dir=/
echo "disk_free_kib=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')"
echo "time_synced=$(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
echo "chrony=$(chronyc -n tracking 2>/dev/null | awk -F': ' '/Leap status/ {print $2}')"
echo "ports_busy=$(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -un | tr '\n' ' ')"
echo "driver=$(cat /sys/module/nvidia/version 2>/dev/null)"
fm=$(dpkg-query -W -f='${Version}\n' nvidia-fabricmanager 'nvidia-fabricmanager-*' 2>/dev/null \
  | grep . | head -1)
echo "fabricmanager=$fm"
echo "k3s=$(/usr/local/bin/k3s --version 2>/dev/null | awk 'NR == 1 {print $3}')"
"""
# Appended to nvidia_host.py's source: what the host's python3 prints, one `pci=<JSON>` line.
PCI_REPORT = 'import json\nprint("pci=" + json.dumps(pci_inventory()))'
NO_PCI_REPORT = "not counted: the host's python3 did not report its PCI bus"


@dataclass(frozen=True)
class Target:
    host: str
    address: str
    port: int
    user: str
    key_file: str | None
    known_hosts: Path
    expected_gpus: int
    gpu_node: bool


@dataclass
class HostReport:
    host: str
    address: str
    reachable: bool
    error: str = ""
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return not self.reachable or any(check.failed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """For --output json: each check under its name."""
        return {
            "host": self.host,
            "address": self.address,
            "reachable": self.reachable,
            "error": self.error,
            "checks": {
                check.check: {"status": check.status, "detail": check.detail} for check in self.checks
            },
        }


@functools.cache
def nvidia_host() -> ModuleType:
    """The collection's nvidia_host module_utils, loaded from the checkout's collection."""
    path = project_dir() / NVIDIA_HOST
    spec = importlib.util.spec_from_file_location("toolkit_nvidia_host", path)
    if spec is None or spec.loader is None:
        raise ToolkitError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_script() -> str:
    """The shell probe, then nvidia_host.py's own source run by the host's python3 to count GPUs."""
    source = Path(str(nvidia_host().__file__)).read_text()
    return f"{SHELL_PROBE}python3 - <<'TOOLKIT_NVIDIA_HOST'\n{source}\n{PCI_REPORT}\nTOOLKIT_NVIDIA_HOST\n"


def _option(args: str, name: str) -> str | None:
    """The value of `-o Name=value` in an ansible_ssh_common_args string."""
    words = shlex.split(args)
    for index, word in enumerate(words):
        candidate = words[index + 1] if word == "-o" and index + 1 < len(words) else word.removeprefix("-o")
        key, _, value = candidate.partition("=")
        if key.lower() == name.lower() and value:
            return value
    return None


def targets(inventory: Inventory) -> list[Target]:
    """How to reach each cluster host, from the same variables Ansible uses."""
    found = []
    for host in inventory.hosts("cluster"):
        settings: dict[str, Any] = inventory.host_vars.get(host, {})
        args = str(settings.get("ansible_ssh_common_args", ""))
        known_hosts = _option(args, "UserKnownHostsFile") or "~/.ssh/known_hosts"
        found.append(
            Target(
                host=host,
                address=str(settings.get("ansible_host", host)),
                port=int(settings.get("ansible_port", 22)),
                user=str(settings.get("ansible_user", "root")),
                key_file=settings.get("ansible_ssh_private_key_file"),
                known_hosts=Path(known_hosts).expanduser(),
                expected_gpus=int(settings.get("nvidia_driver_expected_gpus", 0) or 0),
                gpu_node=host in inventory.hosts("gpu_nodes"),
            )
        )
    return found


def parse_probe(output: str) -> dict[str, str]:
    facts = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def _pci(facts: dict[str, str]) -> tuple[int, int] | None:
    """GPUs and NVSwitches from the `pci` line nvidia_host.py printed; None without one."""
    try:
        counted = json.loads(facts["pci"])
        return int(counted["gpus"]), int(counted["nvswitches"])
    except (KeyError, TypeError, ValueError):
        return None


def judge(target: Target, facts: dict[str, str]) -> list[Check]:
    """Each check's verdict from the probe's facts."""
    verdicts: dict[str, tuple[Status, str]] = {}
    verdicts["sudo"] = (
        (Status.PASS, "yes") if facts.get("sudo") == "yes" else (Status.FAIL, "no passwordless sudo")
    )
    os_name = facts.get("os", "?")
    verdicts["os"] = (Status.PASS if os_name in SUPPORTED_OS else Status.FAIL, os_name)
    headers = facts.get("headers", "")
    verdicts["kernel"] = (
        (Status.PASS, f"{facts.get('kernel')} (headers {headers})")
        if headers and headers != "(none)"
        else (Status.WARN, f"{facts.get('kernel')}: no headers package; DKMS cannot build the driver")
    )
    pci = _pci(facts)
    if pci is None:
        verdicts["gpus"] = verdicts["nvswitch"] = (Status.FAIL, NO_PCI_REPORT)
    else:
        gpus, nvswitches = pci
        if target.expected_gpus and gpus != target.expected_gpus:
            verdicts["gpus"] = (Status.FAIL, f"{gpus} found, {target.expected_gpus} expected")
        elif target.gpu_node and gpus == 0:
            verdicts["gpus"] = (Status.WARN, "0 on a host in gpu_nodes")
        else:
            verdicts["gpus"] = (Status.PASS, str(gpus))
        verdicts["nvswitch"] = (Status.PASS, str(nvswitches))
    free_gib = int(facts.get("disk_free_kib", "0") or 0) // (1024 * 1024)
    verdicts["disk"] = (Status.PASS if free_gib >= MIN_FREE_GIB else Status.WARN, f"{free_gib} GiB free")
    synced = facts.get("time_synced") == "yes" or facts.get("chrony") == "Normal"
    verdicts["time"] = (Status.PASS, "synchronised") if synced else (Status.WARN, "not synchronised")
    busy = {int(port) for port in facts.get("ports_busy", "").split() if port.isdigit()}
    taken = sorted(busy.intersection(K3S_PORTS))
    if facts.get("k3s"):
        verdicts["ports"] = (Status.PASS, "in use by k3s")
    else:
        verdicts["ports"] = (
            (Status.FAIL, "busy: " + ", ".join(map(str, taken))) if taken else (Status.PASS, "free")
        )
    driver, fabric_manager = facts.get("driver", ""), facts.get("fabricmanager", "")
    rules = nvidia_host()
    fm_version = rules.upstream_version(fabric_manager)
    if rules.fabric_manager_mismatch(driver, fabric_manager):
        verdicts["nvidia"] = (
            Status.FAIL,
            f"driver {driver}, Fabric Manager {fm_version}: mismatch (CUDA error 802)",
        )
    else:
        parts = [f"driver {driver}" if driver else "no driver loaded"]
        if fabric_manager:
            parts.append(f"FM {fm_version}")
        verdicts["nvidia"] = (Status.PASS, ", ".join(parts))
    verdicts["k3s"] = (Status.PASS, facts.get("k3s") or "not installed")
    return [Check(name, target.host, status, detail) for name, (status, detail) in verdicts.items()]


def _probe(target: Target, script: str, accept_new: bool, timeout: float) -> tuple[HostReport, str]:
    """The host's report and, under `accept_new`, the known_hosts line of a key first seen on a
    connection that then logged in (as before: a key is saved only once authentication passed)."""
    import paramiko

    class RecordNewKey(paramiko.MissingHostKeyPolicy):
        line = ""

        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            self.line = f"{hostname} {key.get_name()} {key.get_base64()}\n"

    report = HostReport(target.host, target.address, reachable=False)
    new_key, accepted = RecordNewKey(), ""
    client = paramiko.SSHClient()
    try:
        if target.known_hosts.exists():
            client.load_host_keys(str(target.known_hosts))
        client.set_missing_host_key_policy(new_key if accept_new else paramiko.RejectPolicy())
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=target.key_file,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=target.key_file is None,
        )
        accepted = new_key.line
        _, stdout, _ = client.exec_command(script, timeout=timeout * 4)
        facts = parse_probe(stdout.read().decode(errors="replace"))
        report.reachable = True
        report.checks = judge(target, facts)
    except paramiko.BadHostKeyException:
        report.error = "host key CHANGED from the one in known_hosts: refusing"
    except paramiko.SSHException as error:
        message = str(error)
        if "not found in known_hosts" in message:
            message = f"unknown host key (not in {target.known_hosts}); use --accept-new to trust it"
        report.error = message
    except OSError as error:
        report.error = error.strerror or str(error) or type(error).__name__
    finally:
        client.close()
    return report, accepted


def _save_new_keys(lines_by_file: dict[Path, list[str]]) -> None:
    """Append the keys accepted in one run, each file written once: probes run in parallel, and
    each rewriting a shared known_hosts from its own copy would drop or mangle the others' lines."""
    for known_hosts, lines in lines_by_file.items():
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with known_hosts.open("a") as file:
            file.writelines(lines)


def run(
    inventory: Inventory, *, accept_new: bool = False, timeout: float = 5.0, workers: int = 32
) -> list[HostReport]:
    """Probe every cluster host in parallel; unreachable hosts come back as reports too."""
    found, script = targets(inventory), probe_script()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(found)))) as pool:
        results = list(pool.map(lambda target: _probe(target, script, accept_new, timeout), found))
    new_keys: dict[Path, list[str]] = {}
    for target, (_, line) in zip(found, results, strict=True):
        if line:
            new_keys.setdefault(target.known_hosts, []).append(line)
    _save_new_keys(new_keys)
    return [report for report, _ in results]
