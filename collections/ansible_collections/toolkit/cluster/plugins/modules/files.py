#!/usr/bin/python
"""Ansible module: the directories, whole files and removals a role owns, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: files
short_description: Directories and whole files, present or absent, converged in one module run
description:
  - Where a role owns several whole files (k3s's manifests, a service's configuration), one run of
    this module checks them all, and writes, fixes or removes only what differs, where a
    template or file task per path would cost a module run each on every converge.
  - A file is written when its content differs, atomically (a temporary file in the same
    directory, renamed over it); its mode and owner are set when only they differ.
  - The result names the paths. With C(--diff), a changed file's old and new content are shown,
    except a secret one's (O(files[].secret_content)).
options:
  directories:
    description: Directories to create (with their parents) or correct.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: The directory., type: path, required: true}
      mode:
        description: Its mode, in octal (a string; an integer is the mode's own value).
        type: raw
        required: true
      owner: {description: Its owner., type: str, default: root}
      group: {description: Its group., type: str, default: root}
  files:
    description: Whole files, whose directories must exist (list them in O(directories)).
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: The file., type: path, required: true}
      state: {description: Whether it is there., type: str, choices: [present, absent], default: present}
      unless_exists:
        description:
          - A path whose existence makes a present file absent, removed if it is there. A manifest
            that stands in for one k3s may ship (k3s's RuntimeClasses) is written only where k3s's
            is missing, judged in the same run; "" never does.
        type: path
        default: ""
      content: {description: Its whole content (present files)., type: str, default: ""}
      secret_content:
        description:
          - Its whole content, when it holds a token, a key or a password, in place of O(files[].content).
          - Never shown, not even in a diff.
        type: str
        no_log: true
      mode: {description: Its mode, in octal (present files)., type: raw, default: "0600"}
      owner: {description: Its owner., type: str, default: root}
      group: {description: Its group., type: str, default: root}
author: toolkit
"""

EXAMPLES = r"""
- name: Write the device plugin's manifests
  toolkit.cluster.files:
    directories:
      - {path: /var/lib/rancher/k3s/server/manifests, mode: "0700"}
    files:
      - path: /var/lib/rancher/k3s/server/manifests/nvidia-device-plugin.yaml
        content: "{{ lookup('ansible.builtin.template', 'nvidia-device-plugin.yaml.j2') }}"
        mode: "0600"
      - path: /var/lib/rancher/k3s/server/manifests/dcgm-exporter.yaml
        state: absent
"""

RETURN = r"""
written:
  description: Files whose content was (or, in check mode, would be) written.
  returned: always
  type: list
  elements: str
updated:
  description: Files and directories whose mode or owner alone was corrected.
  returned: always
  type: list
  elements: str
created:
  description: Directories created.
  returned: always
  type: list
  elements: str
removed:
  description: Files removed.
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd
import stat
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

OWNED = {
    "mode": {"type": "raw", "required": True},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
}


def _mode(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(str(value), 8)


def _wanted(entry: dict[str, Any]) -> tuple[int, int, int]:
    return _mode(entry["mode"]), pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid


def _attributes_differ(path: str, mode: int, uid: int, gid: int) -> bool:
    found = os.stat(path)
    return stat.S_IMODE(found.st_mode) != mode or found.st_uid != uid or found.st_gid != gid


def _write(path: str, content: bytes, mode: int, uid: int, gid: int) -> None:
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"{path}: its directory does not exist (list it in directories)")
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".toolkit-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            # Owner first: a chown clears the set-id bits a chmod before it would have set.
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def converge(
    params: dict[str, Any], check: bool, diffs: list[dict[str, str]] | None = None
) -> dict[str, list[str]]:
    """What differs, converged unless `check`; with `diffs`, each changed file's old and new content
    is added to it (a secret's as a placeholder)."""
    done: dict[str, list[str]] = {"written": [], "updated": [], "created": [], "removed": []}

    def record(path: str, before: bytes | None, after: bytes | None, secret: bool) -> None:
        if diffs is None:
            return
        hidden = "(secret: content not shown)\n"
        diffs.append(
            {
                "before_header": path if before is not None else "(absent)",
                "after_header": path if after is not None else "(absent)",
                "before": hidden if secret and before else (before or b"").decode(errors="replace"),
                "after": hidden if secret and after else (after or b"").decode(errors="replace"),
            }
        )

    for directory in params["directories"]:
        path = directory["path"]
        mode, uid, gid = _wanted(directory)
        if not os.path.isdir(path):
            if os.path.lexists(path):
                raise ValueError(f"{path} exists and is not a directory")
            done["created"].append(path)
            if not check:
                os.makedirs(path, mode=mode)
                os.chmod(path, mode)
                os.chown(path, uid, gid)
        elif _attributes_differ(path, mode, uid, gid):
            done["updated"].append(path)
            if not check:
                os.chmod(path, mode)
                os.chown(path, uid, gid)
    for entry in params["files"]:
        path = entry["path"]
        if entry["state"] == "absent" or (entry["unless_exists"] and os.path.lexists(entry["unless_exists"])):
            if os.path.lexists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    raise ValueError(f"{path} is a directory: only files are removed")
                done["removed"].append(path)
                if diffs is not None:
                    with open(path, "rb") as handle:
                        record(path, handle.read(), None, True)
                if not check:
                    os.unlink(path)
            continue
        mode, uid, gid = _wanted(entry)
        secret = entry["secret_content"] is not None
        content = (entry["secret_content"] if secret else entry["content"]).encode()
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise ValueError(f"{path} exists and is not a regular file")
        current = None
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                current = handle.read()
        if current != content:
            done["written"].append(path)
            record(path, current, content, secret)
            if not check:
                _write(path, content, mode, uid, gid)
        elif _attributes_differ(path, mode, uid, gid):
            done["updated"].append(path)
            if not check:
                os.chmod(path, mode)
                os.chown(path, uid, gid)
    return done


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directories": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {"path": {"type": "path", "required": True}, **OWNED},
            },
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": {"type": "path", "required": True},
                    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
                    "unless_exists": {"type": "path", "default": ""},
                    "content": {"type": "str", "default": ""},
                    "secret_content": {"type": "str", "no_log": True},
                    **OWNED,
                    "mode": {"type": "raw", "default": "0600"},
                },
            },
        },
        supports_check_mode=True,
    )
    diffs: list[dict[str, str]] | None = [] if module._diff else None
    try:
        done = converge(module.params, module.check_mode, diffs)
    except (OSError, ValueError, KeyError) as error:
        module.fail_json(
            msg=f"{type(error).__name__}: {error}" if isinstance(error, KeyError) else str(error)
        )
    module.exit_json(changed=any(done.values()), **done, **({"diff": diffs} if diffs else {}))


if __name__ == "__main__":
    main()
