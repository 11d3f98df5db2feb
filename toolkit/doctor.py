"""`toolkit doctor`: a fast parallel preflight of every host over SSH, without Ansible.

One SSH connection per host runs one probe script; its `key=value` lines are judged here.
Host keys are checked strictly against the inventory's known_hosts; `accept_new` accepts
unknown keys and saves them, as OpenSSH's StrictHostKeyChecking=accept-new does.
"""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.inventory import Inventory

SUPPORTED_OS = ("debian 12", "ubuntu 22.04", "ubuntu 24.04")
K3S_PORTS = (6443, 2379, 2380, 10250, 8472)
MIN_FREE_GIB = 50

# Runs as the login user; `sudo -n` tells whether the toolkit's become will work.
PROBE = r"""
. /etc/os-release 2>/dev/null; echo "os=$ID $VERSION_ID"
echo "kernel=$(uname -r)"
if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi
echo "headers=$(apt-cache policy "linux-headers-$(uname -r)" 2>/dev/null | awk '/Candidate:/ {print $2}')"
gpus=0; switches=0
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue
  case "$(cat "$d/class")" in 0x03*) gpus=$((gpus + 1));; 0x0680*) switches=$((switches + 1));; esac
done
echo "gpus=$gpus"; echo "nvswitches=$switches"
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


@dataclass(frozen=True)
class Check:
    status: str  # ok, warn, fail
    detail: str


@dataclass
class HostReport:
    host: str
    address: str
    reachable: bool
    error: str = ""
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return not self.reachable or any(check.status == "fail" for check in self.checks.values())


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


def judge(target: Target, facts: dict[str, str]) -> dict[str, Check]:
    """Each check's verdict from the probe's facts."""
    checks: dict[str, Check] = {}
    checks["sudo"] = (
        Check("ok", "yes") if facts.get("sudo") == "yes" else Check("fail", "no passwordless sudo")
    )
    os_name = facts.get("os", "?")
    checks["os"] = Check("ok" if os_name in SUPPORTED_OS else "fail", os_name)
    headers = facts.get("headers", "")
    checks["kernel"] = (
        Check("ok", f"{facts.get('kernel')} (headers {headers})")
        if headers and headers != "(none)"
        else Check("warn", f"{facts.get('kernel')}: no headers package; DKMS cannot build the driver")
    )
    gpus = int(facts.get("gpus", "0") or 0)
    if target.expected_gpus and gpus != target.expected_gpus:
        checks["gpus"] = Check("fail", f"{gpus} found, {target.expected_gpus} expected")
    elif target.gpu_node and gpus == 0:
        checks["gpus"] = Check("warn", "0 on a host in gpu_nodes")
    else:
        checks["gpus"] = Check("ok", str(gpus))
    checks["nvswitch"] = Check("ok", facts.get("nvswitches", "0"))
    free_gib = int(facts.get("disk_free_kib", "0") or 0) // (1024 * 1024)
    checks["disk"] = Check("ok" if free_gib >= MIN_FREE_GIB else "warn", f"{free_gib} GiB free")
    synced = facts.get("time_synced") == "yes" or facts.get("chrony") == "Normal"
    checks["time"] = Check("ok", "synchronised") if synced else Check("warn", "not synchronised")
    busy = {int(port) for port in facts.get("ports_busy", "").split() if port.isdigit()}
    taken = sorted(busy.intersection(K3S_PORTS))
    if facts.get("k3s"):
        checks["ports"] = Check("ok", "in use by k3s")
    else:
        checks["ports"] = (
            Check("fail", "busy: " + ", ".join(map(str, taken))) if taken else Check("ok", "free")
        )
    driver, fabric_manager = facts.get("driver", ""), facts.get("fabricmanager", "")
    fm_version = fabric_manager.split("-")[0]
    if driver and fabric_manager and fm_version != driver:
        checks["nvidia"] = Check(
            "fail", f"driver {driver}, Fabric Manager {fm_version}: mismatch (CUDA error 802)"
        )
    else:
        parts = [f"driver {driver}" if driver else "no driver loaded"]
        if fabric_manager:
            parts.append(f"FM {fm_version}")
        checks["nvidia"] = Check("ok", ", ".join(parts))
    checks["k3s"] = Check("ok", facts.get("k3s") or "not installed")
    return checks


def _probe(target: Target, accept_new: bool, timeout: float) -> HostReport:
    import paramiko

    report = HostReport(target.host, target.address, reachable=False)
    client = paramiko.SSHClient()
    try:
        if target.known_hosts.exists():
            client.load_host_keys(str(target.known_hosts))
        if accept_new:
            target.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            target.known_hosts.touch(exist_ok=True)
            client.load_host_keys(str(target.known_hosts))
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
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
        if accept_new:
            client.save_host_keys(str(target.known_hosts))
        _, stdout, _ = client.exec_command(PROBE, timeout=timeout * 4)
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
    return report


def run(
    inventory: Inventory, *, accept_new: bool = False, timeout: float = 5.0, workers: int = 32
) -> list[HostReport]:
    """Probe every cluster host in parallel; unreachable hosts come back as reports too."""
    found = targets(inventory)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(found)))) as pool:
        return list(pool.map(lambda target: _probe(target, accept_new, timeout), found))
