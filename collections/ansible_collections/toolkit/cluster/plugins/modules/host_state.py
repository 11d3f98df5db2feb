#!/usr/bin/python
"""Ansible module: the read-only state a role's converge decides on, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: host_state
short_description: Packages, services, kernel modules, sysctls, swap entries and files, read in one module run
description:
  - Reads what a role needs to know before it changes anything, where a stat, a command and a
    package query would each cost a module run on every converge. It changes nothing, and runs in
    check mode too.
  - Register the result; it is not a fact, so no fact cache ever serves a stale one.
options:
  packages:
    description:
      - Debian packages whose installed version to read, each a name, C(name=version) or
        C(name=version-*) (a version pattern, as apt takes it), optionally with C(:arch).
      - Those not installed, or installed at another version, are listed in RV(packages_missing).
    type: list
    elements: str
    default: []
  services:
    description: systemd units whose enablement and activity to read.
    type: list
    elements: str
    default: []
  sysctls:
    description: Kernel settings whose live value to read (from /proc/sys); those the kernel lacks are
      left out.
    type: list
    elements: str
    default: []
  fstab:
    description: The fstab whose swap entries that are not commented out to count; "" skips it.
    type: path
    default: ""
  paths:
    description: Paths whose existence to read.
    type: list
    elements: path
    default: []
  checksums:
    description: Files whose sha256, mode and owner to read (null where the file is missing).
    type: list
    elements: path
    default: []
  secrets:
    description:
      - Files whose content to read, a token or a key (null where the file is missing), where a
        slurp would cost a module run of its own.
      - The result holds them, so a task that lists one must set C(no_log).
    type: list
    elements: path
    default: []
author: toolkit
"""

EXAMPLES = r"""
- name: Read the host's state
  toolkit.cluster.host_state:
    packages: [chrony, curl]
    services: [chrony]
    sysctls: [net.ipv4.ip_forward]
    fstab: /etc/fstab
  register: state
"""

RETURN = r"""
packages:
  description: Each installed package's version, by name; packages not installed are left out.
  returned: always
  type: dict
  sample: {chrony: 4.3-2+deb12u1}
packages_missing:
  description: The entries of O(packages) not installed, or installed at a version they do not match.
  returned: always
  type: list
  elements: str
packages_held:
  description: The packages of O(packages) that dpkg holds (selection "hold").
  returned: always
  type: list
  elements: str
services:
  description: Each unit's enablement, activity, and whether systemd must reload its unit files first.
  returned: always
  type: dict
  sample: {chrony: {enabled: true, active: true, need_daemon_reload: false}}
kernel_modules:
  description:
    - The kernel modules loaded or built in, or null where the kernel loads none (no /proc/modules).
  returned: always
  type: list
  elements: str
sysctls:
  description: Each setting's live value, as /proc/sys holds it (whitespace as the kernel writes it).
  returned: always
  type: dict
swap_entries:
  description: The fstab's swap entries that are not commented out.
  returned: always
  type: int
swap_active:
  description: Whether any swap is in use now (/proc/swaps).
  returned: always
  type: bool
paths:
  description: Whether each path exists.
  returned: always
  type: dict
checksums:
  description: Each file's sha256, mode (octal) and owner's uid and gid, or null where it is missing.
  returned: always
  type: dict
  sample: {/usr/local/bin/k3s: {sha256: 3b1c..., mode: "0755", uid: 0, gid: 0}}
secrets:
  description: Each file's content, surrounding whitespace stripped, or null where it is missing.
  returned: always
  type: dict
"""

import fnmatch
import hashlib
import os
import re
import subprocess
from typing import Any

from ansible.module_utils.basic import AnsibleModule

PROC_SYS = "/proc/sys"
SWAP_ENTRY = re.compile(r"^\s*[^#\s]\S*\s+\S+\s+swap\s")


def installed_packages(names: list[str]) -> tuple[dict[str, str], list[str]]:
    """Each installed package's version, and the packages held, of `names`."""
    if not names:
        return {}, []
    # dpkg-query exits 1 when a name is unknown; it still prints the others.
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Version}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found, held = {}, []
    for line in listed.splitlines():
        name, status, version = [*line.split("\t"), "", ""][:3]
        name = name.split(":")[0]
        # The first letter is what is wanted of the package (h: hold), the second its state:
        # installed, or installed with triggers still to run.
        if len(status) > 1 and status[1] in "iWt":
            found[name] = version
        if status[:1] == "h":
            held.append(name)
    return found, held


def _name_and_version(entry: str) -> tuple[str, str]:
    name, _, version = entry.partition("=")
    return name.split(":")[0], version


def missing_packages(entries: list[str], installed: dict[str, str]) -> list[str]:
    missing = []
    for entry in entries:
        name, version = _name_and_version(entry)
        if name not in installed or (version and not fnmatch.fnmatchcase(installed[name], version)):
            missing.append(entry)
    return missing


def unit_states(names: list[str]) -> dict[str, dict[str, bool]]:
    def answer(*arguments: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["systemctl", *arguments],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                check=False,
            )
        except FileNotFoundError:  # no systemd: no unit is enabled or active
            return None

    def state(name: str) -> dict[str, bool]:
        enabled, active = answer("is-enabled", "--quiet", name), answer("is-active", "--quiet", name)
        reload = answer("show", "--property=NeedDaemonReload", "--value", name)
        return {
            "enabled": enabled is not None and enabled.returncode == 0,
            "active": active is not None and active.returncode == 0,
            "need_daemon_reload": reload is not None and reload.stdout.strip() == "yes",
        }

    return {name: state(name) for name in names}


def loaded_modules(
    proc_modules: str = "/proc/modules", lib_modules: str = "/lib/modules"
) -> list[str] | None:
    """Modules loaded now, and those built into the running kernel (modules.builtin), which never
    show in /proc/modules and need no loading."""
    if not os.path.exists(proc_modules):
        return None
    with open(proc_modules) as handle:
        names = [line.split(" ", 1)[0] for line in handle if line.strip()]
    try:
        with open(os.path.join(lib_modules, os.uname().release, "modules.builtin")) as handle:
            names += [os.path.basename(line.strip()).removesuffix(".ko") for line in handle if line.strip()]
    except OSError:
        pass
    return names


def live_sysctls(keys: list[str], root: str = PROC_SYS) -> dict[str, str]:
    values = {}
    for key in keys:
        # As sysctl(8): dots separate the path's parts unless the key is already a path.
        path = os.path.join(root, key if "/" in key else key.replace(".", "/"))
        try:
            with open(path) as handle:
                values[key] = handle.read().strip()
        except OSError:
            continue
    return values


def swap_entries(fstab: str) -> int:
    if not fstab or not os.path.exists(fstab):
        return 0
    with open(fstab) as handle:
        return sum(1 for line in handle if SWAP_ENTRY.match(line))


def file_state(path: str) -> dict[str, Any] | None:
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        found = os.fstat(handle.fileno())
    return {
        "sha256": digest.hexdigest(),
        "mode": f"{found.st_mode & 0o7777:04o}",
        "uid": found.st_uid,
        "gid": found.st_gid,
    }


def secret(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def swap_active(proc_swaps: str = "/proc/swaps") -> bool:
    try:
        with open(proc_swaps) as handle:
            return len([line for line in handle if line.strip()]) > 1  # a header, then one line each
    except OSError:
        return False


def read(params: dict[str, Any]) -> dict[str, Any]:
    installed, held = installed_packages([_name_and_version(entry)[0] for entry in params["packages"]])
    return {
        "packages": installed,
        "packages_missing": missing_packages(params["packages"], installed),
        "packages_held": held,
        "services": unit_states(params["services"]),
        "kernel_modules": loaded_modules(),
        "sysctls": live_sysctls(params["sysctls"]),
        "swap_entries": swap_entries(params["fstab"]),
        "swap_active": swap_active(),
        "paths": {path: os.path.lexists(path) for path in params["paths"]},
        "checksums": {path: file_state(path) for path in params["checksums"]},
        "secrets": {path: secret(path) for path in params["secrets"]},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "services": {"type": "list", "elements": "str", "default": []},
            "sysctls": {"type": "list", "elements": "str", "default": []},
            "fstab": {"type": "path", "default": ""},
            "paths": {"type": "list", "elements": "path", "default": []},
            "checksums": {"type": "list", "elements": "path", "default": []},
            "secrets": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **read(module.params))


if __name__ == "__main__":
    main()
