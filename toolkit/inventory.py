"""Loading an Ansible inventory and checking it has the shape a site needs."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from toolkit.errors import BadInputError

# Every site has these groups, even when one is empty (a site with no Weka still says so).
REQUIRED_GROUPS = ("cluster", "k3s_servers", "k3s_agents", "gpu_nodes", "weka_clients")


@dataclass(frozen=True)
class Inventory:
    source: Path
    groups: dict[str, list[str]]  # group name -> hosts in it, children included

    def hosts(self, group: str) -> list[str]:
        return self.groups.get(group, [])


def resolve(path: Path) -> Path:
    if not path.exists():
        raise BadInputError(f"inventory {path} does not exist")
    if path.is_dir() and not any(
        child.is_file() and child.suffix in (".yml", ".yaml", ".ini", "") and not child.name.startswith(".")
        for child in path.iterdir()
    ):
        raise BadInputError(f"inventory {path} has no hosts file (for the lab, run `toolkit lab up` first)")
    return path


def _yaml_error(source: Path) -> str | None:
    """The first YAML syntax error among the inventory's YAML files, in one line."""
    files = [source] if source.is_file() else sorted(source.glob("*.y*ml"))
    for file in files:
        if file.suffix not in (".yml", ".yaml"):
            continue
        try:
            yaml.safe_load(file.read_text())
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

    # Ansible prints each plugin's parse attempt as a warning; one line of our own says it better.
    warnings = io.StringIO()
    try:
        with contextlib.redirect_stderr(warnings):
            manager = InventoryManager(loader=DataLoader(), sources=None)
            parsed = manager.parse_source(str(source))
            manager.reconcile_inventory()
    except AnsibleError as error:
        raise BadInputError(f"inventory {path}: {str(error).splitlines()[0]}") from None
    if not parsed:
        raise BadInputError(f"inventory {path} could not be parsed as a YAML or INI inventory")
    groups = {
        name: sorted(host.name for host in group.get_hosts())
        for name, group in manager.groups.items()
        if name not in ("all", "ungrouped")
    }
    return Inventory(source=source, groups=groups)


def problems(inventory: Inventory) -> list[str]:
    """Each problem is one line that names the group or host."""
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


def load_and_check(path: Path) -> Inventory:
    inventory = load(path)
    found = problems(inventory)
    if found:
        raise BadInputError("\n".join(found))
    return inventory
