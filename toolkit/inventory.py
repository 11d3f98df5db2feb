"""Loading an Ansible inventory and checking it has the shape a site needs."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.addresses import is_ip_address
from toolkit.errors import BadInputError

# Every site has these groups, even when one is empty (a site with no Weka still says so).
REQUIRED_GROUPS = ("cluster", "k3s_servers", "k3s_agents", "gpu_nodes", "weka_clients")


# Versions a site must pin; a role's default is pinned, so only values the inventory sets are checked.
PINNED_VERSIONS = (
    "k3s_version",
    "nvidia_driver_version",
    "nvidia_container_toolkit_version",
    "nvidia_device_plugin_version",
    "wekafs_csi_chart_version",
    "wekafs_client_version",
)
FLOATING_VERSIONS = ("", "latest", "stable", "current")
# Letters, digits, '.', '-' and the '_' inventories use in aliases: nothing a shell, an ssh
# config or ssh's own option parsing would read as more than a name.
# The files Ansible reads as an inventory or its variables.
INVENTORY_SUFFIXES = (".yml", ".yaml", ".ini", ".json", "")
HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")

# Why the server count must be odd. The k3s role's preflight asserts the same rule on the hosts
# it runs on; this is the toolkit's one copy of it, for inventories and lab plans.
ODD_SERVERS_REASON = "embedded etcd needs an odd number (1, 3, 5)"


def is_odd_server_count(count: int) -> bool:
    """Embedded etcd keeps a majority when one server fails only with 1, 3, 5... servers."""
    return count > 0 and count % 2 == 1


@dataclass(frozen=True)
class Inventory:
    source: Path
    groups: dict[str, list[str]]  # group name -> hosts in it, children included
    host_vars: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # inventory and group_vars, untemplated
    vars_error: str | None = None  # why host_vars could not be read (an encrypted file without a password)

    def hosts(self, group: str) -> list[str]:
        return self.groups.get(group, [])


@dataclass(frozen=True)
class Findings:
    errors: list[str]
    warnings: list[str]


def resolve(path: Path) -> Path:
    if not path.exists():
        raise BadInputError(f"inventory {path} does not exist")
    if path.is_dir() and not any(
        child.is_file() and child.suffix in (".yml", ".yaml", ".ini", "") and not child.name.startswith(".")
        for child in path.iterdir()
    ):
        raise BadInputError(f"inventory {path} has no hosts file (for the lab, run `toolkit lab up` first)")
    return path


class _SyntaxLoader(yaml.SafeLoader):
    """YAML as Ansible reads it: its own tags (!vault, !unsafe) are values, not errors."""


_SyntaxLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _yaml_error(source: Path) -> str | None:
    """The first file that is not UTF-8, or the first YAML syntax error, among the inventory's
    files (its group_vars and host_vars included), in one line."""
    folder = source.parent if source.is_file() else source
    files = [source] if source.is_file() else sorted(source.glob("*"))
    files += sorted((folder / "group_vars").rglob("*")) + sorted((folder / "host_vars").rglob("*"))
    for file in files:
        hidden = any(part.startswith(".") for part in file.relative_to(folder).parts)
        if hidden or not file.is_file() or file.suffix not in INVENTORY_SUFFIXES:
            continue
        try:
            data = file.read_bytes()
            text = data.decode()
        except OSError as error:
            return f"{file}: cannot be read: {error.strerror}"
        except UnicodeDecodeError as error:
            return f"{file}: is not UTF-8 (byte {error.start} is {data[error.start]:#04x})"
        if file.suffix not in (".yml", ".yaml"):
            continue
        try:
            yaml.load(text, Loader=_SyntaxLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"line {mark.line + 1}" if mark is not None else "somewhere"
            return f"{file}: invalid YAML at {where}: {error.problem}"
        except yaml.YAMLError as error:
            return f"{file}: invalid YAML: {error}"
    return None


def load(path: Path) -> Inventory:
    """Parse the inventory the way ansible-playbook will, with Ansible's own inventory manager."""
    source = resolve(path)
    syntax = _yaml_error(source)
    if syntax:
        raise BadInputError(f"inventory {syntax}")
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecretsContext
    from ansible.vars.manager import VariableManager

    # Reading inline !vault values needs a vault context; with no secrets they stay encrypted,
    # which is all validation needs to know.
    if VaultSecretsContext.current(optional=True) is None:
        VaultSecretsContext.initialize(VaultSecretsContext(secrets=[]))

    # Ansible prints each plugin's parse attempt as a warning; one line of our own says it better.
    warnings = io.StringIO()
    try:
        with contextlib.redirect_stderr(warnings):
            loader = DataLoader()
            # Built with its source, as ansible-playbook builds it: group_vars/ and host_vars/
            # beside the inventory are found through the manager's sources.
            manager = InventoryManager(loader=loader, sources=[str(source)])
            parsed = bool(manager.hosts)
    except AnsibleError as error:
        raise BadInputError(f"inventory {path}: {str(error).splitlines()[0]}") from None
    if not parsed:
        raise BadInputError(f"inventory {path} has no hosts, or is not a YAML or INI inventory")
    groups = {
        name: sorted(host.name for host in group.get_hosts())
        for name, group in manager.groups.items()
        if name not in ("all", "ungrouped")
    }
    host_vars: dict[str, dict[str, Any]] = {}
    vars_error = None
    try:
        with contextlib.redirect_stderr(warnings):
            variables = VariableManager(loader=loader, inventory=manager)
            for host in manager.get_hosts():
                host_vars[host.name] = dict(variables.get_vars(host=host, include_hostvars=False))
    except AnsibleError as error:
        vars_error = str(error).splitlines()[0]
    return Inventory(source=source, groups=groups, host_vars=host_vars, vars_error=vars_error)


def problems(inventory: Inventory) -> list[str]:
    """The shape problems: each one line naming the group or host."""
    found = [
        f"inventory {inventory.source}: missing group '{group}'"
        for group in REQUIRED_GROUPS
        if group not in inventory.groups
    ]
    if "k3s_servers" in inventory.groups and not inventory.hosts("k3s_servers"):
        found.append(f"inventory {inventory.source}: group 'k3s_servers' has no hosts")
    members = set(inventory.hosts("cluster"))
    for group in REQUIRED_GROUPS[1:]:
        for host in inventory.hosts(group):
            if "cluster" in inventory.groups and host not in members:
                found.append(
                    f"inventory {inventory.source}: host '{host}' of '{group}' is not under 'cluster'"
                )
    return found


def _is_encrypted(value: Any) -> bool:
    """An inline !vault value. Anything that reads it as a string would try to decrypt it."""
    return type(value).__name__ == "EncryptedString"


def _setting(inventory: Inventory, host: str, name: str) -> Any:
    return inventory.host_vars.get(host, {}).get(name)


def _is_address(text: str) -> bool:
    """A host name or an IP address (no zone id): what ssh can be pointed at."""
    if is_ip_address(text):
        return True
    return bool(HOST_NAME.fullmatch(text)) and all(len(label) <= 63 for label in text.split("."))


def _is_count(value: Any) -> bool:
    """A whole number of ASCII digits: int() would take '²' or '٢' too."""
    return str(value).isascii() and str(value).isdigit()


def host_problems(inventory: Inventory) -> list[str]:
    """Host names, addresses and ports that can't be real; templated and vaulted values are
    left to Ansible."""
    found = []
    for host in inventory.hosts("cluster"):
        if not _is_address(host):
            found.append(f"host name {host!r} is not a valid host name")
        address = _setting(inventory, host, "ansible_host")
        if isinstance(address, str) and "{{" not in address and not _is_address(address):
            found.append(f"ansible_host {address!r} of {host} is not a host name or IP address")
        port = _setting(inventory, host, "ansible_port")
        checkable = port is not None and not _is_encrypted(port) and "{{" not in str(port)
        if checkable and not (_is_count(port) and 0 < int(str(port)) < 65536):
            found.append(f"ansible_port {str(port)!r} of {host} is not a port number (1-65535)")
        gpus = _setting(inventory, host, "nvidia_driver_expected_gpus")
        if gpus is not None and not _is_encrypted(gpus) and not _is_count(gpus):
            found.append(f"nvidia_driver_expected_gpus {str(gpus)!r} of {host} is not a number of GPUs")
        ssh_args = _setting(inventory, host, "ansible_ssh_common_args")
        if isinstance(ssh_args, str):
            try:
                shlex.split(ssh_args)
            except ValueError as error:
                found.append(f"ansible_ssh_common_args of {host} can't be read: {error}")
    return found


def check(inventory: Inventory) -> Findings:
    """Everything `inventory validate` reports: errors stop `cluster up`, warnings do not."""
    errors = problems(inventory) + host_problems(inventory)
    warnings: list[str] = []
    if inventory.vars_error:
        warnings.append(f"variables were not checked: {inventory.vars_error}")
    servers = inventory.hosts("k3s_servers")
    if servers and not is_odd_server_count(len(servers)):
        errors.append(f"k3s_servers has {len(servers)} hosts: {ODD_SERVERS_REASON}")
    if len(servers) > 1 and not _setting(inventory, servers[0], "k3s_api_endpoint"):
        errors.append(
            f"k3s_api_endpoint is not set: with {len(servers)} servers, joiners and kubeconfigs need "
            "a VIP or DNS name in front of them"
        )
    token = _setting(inventory, servers[0], "k3s_token") if servers else None
    if token is not None and not _is_encrypted(token) and str(token) and "{{" not in str(token):
        warnings.append("k3s_token is plain text in the inventory: keep it in ansible-vault")
    for name in PINNED_VERSIONS:
        for host in sorted(inventory.host_vars):
            value = _setting(inventory, host, name)
            if (
                value is not None
                and not _is_encrypted(value)
                and str(value).strip().lower() in FLOATING_VERSIONS
            ):
                errors.append(f"{name} is '{value}' for {host}: pin an exact version")
                break
    for host in inventory.hosts("weka_clients"):
        if _setting(inventory, host, "wekafs_enabled") is not False and not _setting(
            inventory, host, "wekafs_client_backends"
        ):
            errors.append(
                f"wekafs_client_backends is not set for Weka client '{host}' (or set wekafs_enabled: false)"
            )
    by_address: dict[str, list[str]] = {}
    for host in inventory.hosts("cluster"):
        address_setting = _setting(inventory, host, "ansible_host")
        address = host if address_setting is None or _is_encrypted(address_setting) else str(address_setting)
        by_address.setdefault(address, []).append(host)
    for address, names in sorted(by_address.items()):
        if len(names) > 1:
            errors.append(f"hosts {', '.join(sorted(names))} are the same machine ({address})")
    return Findings(errors=errors, warnings=warnings)


def load_and_check(path: Path) -> tuple[Inventory, list[str]]:
    """Load and validate; errors raise BadInputError (one line each), warnings are returned."""
    inventory = load(path)
    findings = check(inventory)
    if findings.errors:
        raise BadInputError("\n".join(findings.errors))
    return inventory, findings.warnings
