"""The rehearsal lab: real Debian 12 systemd hosts in podman containers, reachable over SSH.

Each lab host boots systemd as PID 1, runs a real sshd with its own host key, and has a fixed
address on a podman network. The toolkit talks to it exactly as to a bare-metal server:
SSH as root with a key, strict host-key checking against a known_hosts file the lab writes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from toolkit import lab_standins
from toolkit.errors import BadInputError, MissingToolError, ToolkitError
from toolkit.lab_network import DEFAULT_NETWORK, DEFAULT_SUBNET
from toolkit.paths import state_dir

LAB_IMAGE = "localhost/toolkit-lab-host:bookworm"
LAB_LABEL = "io.toolkit.lab"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MAX_HOSTS = 32
SYSTEMD_BOOT_TIMEOUT_S = 60.0
SSH_READY_TIMEOUT_S = 30.0
# A lab host's cached facts: its name, after ansible-core's schema prefix (2.19 writes s1_).
LAB_FACTS_FILE = re.compile(r"(s\d+_)?lab-[-a-z0-9]+")

Report = Callable[[str], None]


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    group: str  # k3s_servers or k3s_agents

    @property
    def container(self) -> str:
        return f"toolkit-{self.name}"


@dataclass(frozen=True)
class LabPaths:
    """Files the lab writes into the checkout; all are gitignored and removed by `lab down`."""

    inventory_dir: Path
    state_dir: Path

    @classmethod
    def for_project(cls, project: Path) -> LabPaths:
        return cls(inventory_dir=project / "inventory" / "lab", state_dir=state_dir(project) / "lab")

    @property
    def hosts_file(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def k3s_standin_dir(self) -> Path:
        return self.state_dir / "k3s-standin"

    @property
    def nfd_standin_dir(self) -> Path:
        return self.state_dir / "nfd-standin"

    @property
    def image_build_log(self) -> Path:
        return self.state_dir.parent / "lab-image-build.log"


@dataclass(frozen=True)
class HostStatus:
    name: str
    container: str
    address: str
    state: str
    ssh: bool


def plan_hosts(count: int, servers: int, subnet: str) -> list[LabHost]:
    """Names and addresses of a lab of `count` hosts, the first `servers` of them k3s servers."""
    if not 1 <= count <= MAX_HOSTS:
        raise BadInputError(f"--hosts must be between 1 and {MAX_HOSTS}, got {count}")
    from toolkit.inventory import ODD_SERVERS_REASON, is_odd_server_count  # YAML: keep --help fast

    if not is_odd_server_count(servers):
        raise BadInputError(f"--servers must be odd, got {servers}: {ODD_SERVERS_REASON}")
    if servers > count:
        raise BadInputError(f"--servers ({servers}) cannot exceed --hosts ({count})")
    try:
        network = ipaddress.ip_network(subnet)
    except ValueError as error:
        raise BadInputError(f"--subnet {subnet!r} is not a network: {error}") from None
    if network.num_addresses < 64:
        raise BadInputError(f"--subnet {subnet} is too small: use a /26 or larger")
    base = network.network_address
    hosts = [LabHost(f"lab-server-{i + 1}", str(base + 11 + i), "k3s_servers") for i in range(servers)]
    hosts += [LabHost(f"lab-agent-{i + 1}", str(base + 31 + i), "k3s_agents") for i in range(count - servers)]
    return hosts


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"{name} is not installed: run `apt-get install -y {package}`")
    return path


def _run(args: list[str], *, input_text: str | None = None, check: bool = True) -> str:
    completed = subprocess.run(args, input=input_text, capture_output=True, text=True, check=False)
    if check and completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit {completed.returncode}"
        raise ToolkitError(f"`{' '.join(args[:3])} …` failed: {last}")
    return completed.stdout


def _podman(*args: str, input_text: str | None = None, check: bool = True) -> str:
    return _run(["podman", *args], input_text=input_text, check=check)


def image_exists(image: str = LAB_IMAGE) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


def build_image(project: Path, paths: LabPaths, report: Report, *, rebuild: bool = False) -> bool:
    """Build the lab host image from Debian packages, unless it is cached. True when it built."""
    require_tool("podman", "podman runc")
    if image_exists() and not rebuild:
        return False
    require_tool("mmdebstrap", "mmdebstrap")
    recipe = project / "images" / "lab-host"
    packages = [
        line.strip()
        for line in (recipe / "packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    mirror = os.environ.get("TOOLKIT_LAB_MIRROR", DEFAULT_MIRROR)
    paths.image_build_log.parent.mkdir(parents=True, exist_ok=True)
    report(f"building the lab host image {LAB_IMAGE} from Debian packages (about a minute, once)")
    with tempfile.TemporaryDirectory(prefix="toolkit-lab-image-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        command = [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            # Keep apt's lists, so roles' `cache_valid_time` does not skip the update and miss packages.
            "--skip=cleanup/apt/lists",
            f"--include={','.join(packages)}",
            f'--customize-hook=sh {recipe / "customize.sh"} "$1"',
            "bookworm",
            str(tarball),
            mirror,
        ]
        with paths.image_build_log.open("w") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise ToolkitError(f"mmdebstrap failed (exit {result.returncode}); see {paths.image_build_log}")
        _podman(
            "import",
            "--change",
            'CMD ["/sbin/init"]',
            "--change",
            "ENV container=podman",
            "--change",
            "STOPSIGNAL SIGRTMIN+3",
            str(tarball),
            LAB_IMAGE,
        )
    return True


def _network_exists(network: str) -> bool:
    return subprocess.run(["podman", "network", "exists", network], check=False).returncode == 0


def _container_state(container: str) -> str | None:
    out = _podman("container", "inspect", "--format", "{{.State.Status}}", container, check=False).strip()
    return out or None


def _ensure_key(paths: LabPaths) -> str:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.state_dir.chmod(0o700)
    if not paths.private_key.exists():
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "toolkit-lab", "-f", str(paths.private_key)]
        )
    return paths.private_key.with_suffix(".pub").read_text()


def _wait_for_systemd(container: str) -> None:
    deadline = time.monotonic() + SYSTEMD_BOOT_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        state = _podman("exec", container, "systemctl", "is-system-running", check=False).strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.3)
    raise ToolkitError(
        f"{container}: systemd did not finish booting in {SYSTEMD_BOOT_TIMEOUT_S:.0f}s ({state})"
    )


def _host_key(container: str) -> str:
    """The host's ed25519 public key, generated by sshd's unit at first boot."""
    deadline = time.monotonic() + SSH_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        key = _podman("exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=False).strip()
        active = _podman("exec", container, "systemctl", "is-active", "ssh", check=False).strip()
        if key and active == "active":
            algorithm, blob = key.split()[:2]
            return f"{algorithm} {blob}"
        time.sleep(0.3)
    raise ToolkitError(f"{container}: sshd did not start in {SSH_READY_TIMEOUT_S:.0f}s")


def _start_host(host: LabHost, network: str, authorized_key: str) -> str:
    _podman(
        "run",
        "--detach",
        "--name",
        host.container,
        "--hostname",
        host.name,
        "--network",
        network,
        "--ip",
        host.address,
        "--privileged",
        "--systemd=always",
        "--label",
        f"{LAB_LABEL}={network}",
        "--label",
        f"{LAB_LABEL}.group={host.group}",
        # Real k3s (on a machine that can download it) wants the host's modules, as k3d gives it.
        *(["--volume", "/lib/modules:/lib/modules:ro"] if Path("/lib/modules").is_dir() else []),
        LAB_IMAGE,
        "/sbin/init",
    )
    _wait_for_systemd(host.container)
    _podman(
        "exec",
        "-i",
        host.container,
        "sh",
        "-c",
        "umask 077 && cat > /root/.ssh/authorized_keys",
        input_text=authorized_key,
    )
    return _host_key(host.container)


def lab_containers(network: str = DEFAULT_NETWORK) -> list[str]:
    out = _podman("ps", "--all", "--filter", f"label={LAB_LABEL}={network}", "--format", "{{.Names}}")
    return sorted(name for name in out.split() if name)


def render_inventory(hosts: list[LabHost], paths: LabPaths, standins: dict[str, object] | None = None) -> str:
    """The lab's hosts.yml: the groups a real site has, how to reach each host, and the settings
    that point roles at stand-ins for what this machine cannot download."""
    import yaml

    servers = {h.name: {"ansible_host": h.address} for h in hosts if h.group == "k3s_servers"}
    agents = {h.name: {"ansible_host": h.address} for h in hosts if h.group == "k3s_agents"}
    inventory = {
        "cluster": {
            "children": {
                "k3s_servers": {"hosts": servers},
                "k3s_agents": {"hosts": agents} if agents else {},
                # As on a real site the agents are the GPU nodes. The lab's have no GPU, so the
                # NVIDIA roles find none on the PCI bus and say they skip those hosts.
                "gpu_nodes": {"hosts": dict.fromkeys(agents)} if agents else {},
                # No Weka backend: inventory/lab/group_vars/all.yml picks the stand-ins.
                "weka_clients": {},
            },
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(paths.private_key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={paths.known_hosts} -o StrictHostKeyChecking=yes"
                ),
                **(standins or {}),
            },
        }
    }
    header = "# Generated by `toolkit lab up`; `toolkit lab down` removes it. Do not edit.\n"
    return header + yaml.safe_dump(inventory, sort_keys=False)


def _existing_hosts(paths: LabPaths) -> dict[str, str]:
    """Host keys already pinned for running lab hosts, by address."""
    if not paths.known_hosts.exists():
        return {}
    pinned = {}
    for line in paths.known_hosts.read_text().splitlines():
        address, _, key = line.partition(" ")
        pinned[address] = key
    return pinned


def up(
    project: Path,
    report: Report,
    *,
    count: int = 3,
    servers: int = 1,
    network: str = DEFAULT_NETWORK,
    subnet: str = DEFAULT_SUBNET,
) -> list[LabHost]:
    """Start (or grow) the lab, then write its inventory. On failure, remove what this call made."""
    hosts = plan_hosts(count, servers, subnet)
    require_tool("podman", "podman runc")
    require_tool("ssh-keygen", "openssh-client")
    paths = LabPaths.for_project(project)
    build_image(project, paths, report)

    created_network = False
    created: list[str] = []
    try:
        if not _network_exists(network):
            report(f"creating network {network} ({subnet})")
            _podman("network", "create", "--subnet", subnet, "--label", f"{LAB_LABEL}={network}", network)
            created_network = True
        public_key = _ensure_key(paths)
        pinned = _existing_hosts(paths)
        for host in hosts:
            state = _container_state(host.container)
            if state == "running" and host.address in pinned:
                continue
            if state is not None:
                _podman("rm", "--force", "--time", "2", host.container)
            report(f"starting {host.name} ({host.address})")
            created.append(host.container)
            pinned[host.address] = _start_host(host, network, public_key)
        paths.known_hosts.write_text("".join(f"{h.address} {pinned[h.address]}\n" for h in hosts))
        standins: dict[str, object] = {}
        version = lab_standins.k3s_version(project)
        if not lab_standins.k3s_release_reachable(version):
            report(
                f"stand-in: k3s {version} cannot be downloaded here; the lab uses {lab_standins.K3S_STANDIN}"
            )
            _add_standin(standins, lab_standins.k3s_standin_settings(project, paths.k3s_standin_dir, version))
        nfd_version = lab_standins.nfd_version(project)
        if not lab_standins.reachable(lab_standins.nfd_chart_url(nfd_version)):
            report(
                f"stand-in: Node Feature Discovery's chart {nfd_version} cannot be downloaded here;"
                " the lab uses a stand-in archive"
            )
            _add_standin(standins, lab_standins.nfd_standin_settings(paths.nfd_standin_dir, nfd_version))
        paths.inventory_dir.mkdir(parents=True, exist_ok=True)
        paths.hosts_file.write_text(render_inventory(hosts, paths, standins))
    except BaseException:
        for container in created:
            _podman("rm", "--force", "--time", "0", container, check=False)
        if created_network:
            _podman("network", "rm", "--force", network, check=False)
        raise
    return hosts


def _add_standin(standins: dict[str, object], settings: dict[str, object]) -> None:
    """Merge one stand-in's inventory settings into the others', keeping every one's note."""
    notes = [
        *cast(list[str], standins.get("toolkit_standins", [])),
        *cast(list[str], settings["toolkit_standins"]),
    ]
    standins.update(settings, toolkit_standins=notes)


def down(
    project: Path, report: Report, *, network: str = DEFAULT_NETWORK, remove_image: bool = False
) -> None:
    """Remove the lab's containers, network, inventory and keys. The cached image stays unless asked."""
    require_tool("podman", "podman runc")
    for container in lab_containers(network):
        report(f"removing {container}")
        _podman("rm", "--force", "--time", "2", container)
    if _network_exists(network):
        report(f"removing network {network}")
        _podman("network", "rm", "--force", network)
    paths = LabPaths.for_project(project)
    paths.hosts_file.unlink(missing_ok=True)
    shutil.rmtree(paths.state_dir, ignore_errors=True)
    # Cached facts of lab hosts would describe the removed containers to the next lab's first run.
    # ansible-core 2.19 names each host's file after a schema prefix: s1_lab-server-1.
    facts = state_dir(project) / "facts"
    for cached in facts.iterdir() if facts.is_dir() else []:
        if LAB_FACTS_FILE.fullmatch(cached.name):
            cached.unlink()
    if remove_image and image_exists():
        report(f"removing image {LAB_IMAGE}")
        _podman("rmi", "--force", LAB_IMAGE)


def status(network: str = DEFAULT_NETWORK) -> list[HostStatus]:
    require_tool("podman", "podman runc")
    rows = []
    for container in lab_containers(network):
        inspect = _podman(
            "container",
            "inspect",
            "--format",
            "{{.Config.Hostname}}|{{.State.Status}}|{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ).strip()
        hostname, state, address = inspect.split("|")
        rows.append(
            HostStatus(hostname, container, address, state, state == "running" and _ssh_open(address))
        )
    return rows


def _ssh_open(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1.0) as conn:
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False
