"""The toolkit's ssh config: one Host entry and one pinned host key per shell, and the Include line.

Entries live in the toolkit's config directory (`ssh_config`, `known_hosts`), never in the
user's own files; `shell ssh-config enable` adds a single `Include` line to ~/.ssh/config so
ssh, VS Code and Cursor list the shells. Host keys are pinned with HostKeyAlias, so a shell's
key is checked strictly even when its node port or address changes.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from toolkit.errors import BadInputError
from toolkit.paths import write_private

CONFIG_DIR_ENV = "TOOLKIT_CONFIG_DIR"


def config_dir() -> Path:
    """The platform's place for a user's configuration: ~/Library/Application Support on macOS
    (~/.config where an earlier version put it), $XDG_CONFIG_HOME (~/.config) elsewhere;
    TOOLKIT_CONFIG_DIR overrides both."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    if sys.platform == "darwin":
        # Versions before this one kept it in ~/.config on macOS too: theirs stays in use.
        earlier = Path.home() / ".config" / "toolkit"
        platforms = Path.home() / "Library" / "Application Support" / "toolkit"
        return earlier if earlier.is_dir() and not platforms.exists() else platforms
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "toolkit"


# What ssh_config reads as more than a path: quotes and escapes end or change an argument, "${"
# starts an environment variable, and the Include line's path is a glob pattern.
UNSAFE_IN_PATHS = ('"', "'", "\\", "${", "\n")
UNSAFE_IN_INCLUDE = ("*", "?", "[", "]")


def _argument(path: Path, tokens: bool, glob: bool = False) -> str:
    """A path as ssh_config reads it back: quoted when it holds spaces ("Application Support"),
    and with '%' doubled where ssh expands tokens (IdentityFile, UserKnownHostsFile)."""
    unsafe = [part for part in (*UNSAFE_IN_PATHS, *(UNSAFE_IN_INCLUDE if glob else ())) if part in str(path)]
    if unsafe:
        raise BadInputError(
            f"{path}: ssh_config would not read this path back as written (it holds {' '.join(unsafe)!r}): "
            "choose another, or set TOOLKIT_CONFIG_DIR"
        )
    text = str(path).replace("%", "%%") if tokens else str(path)
    return f'"{text}"' if any(c.isspace() for c in text) or "#" in text else text


def check_path(path: Path, included: bool = False) -> None:
    """Refuse, before anything is created, a path the ssh config could not hold (`included`: the
    directory the Include line names)."""
    _argument(path, tokens=True, glob=included)


def _path(argument: str) -> Path:
    """The path `_argument` wrote for IdentityFile."""
    text = argument.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return Path(text.replace("%%", "%"))


@dataclass(frozen=True)
class Entry:
    user: str
    shell: str
    host: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA..."
    identity_file: Path | None = None
    forward_agent: bool = False  # the shell was made to take the user's agent (--forward-agent)

    @property
    def alias(self) -> str:
        return alias(self.user, self.shell)


def alias(user: str, shell: str) -> str:
    """The shell's name in ssh: `ssh toolkit-USER-SHELL`."""
    return f"toolkit-{user}-{shell}"


def _begin(name: str) -> str:
    return f"# >>> {name} (written by toolkit shell)"


def _end(name: str) -> str:
    return f"# <<< {name}"


def _without_block(text: str, name: str) -> str:
    pattern = re.compile(rf"^{re.escape(_begin(name))}\n.*?^{re.escape(_end(name))}\n", re.M | re.S)
    return pattern.sub("", text)


def write_entry(entry: Entry, directory: Path | None = None, keep_identity: bool = False) -> Path:
    """Add or replace the shell's Host entry and its known_hosts line; the ssh_config path.

    `keep_identity` keeps the IdentityFile and ForwardAgent an earlier entry for the shell named:
    what this machine's user chose when they made it, never what the cluster says.
    """
    directory = directory or config_dir()
    ssh_config, known_hosts = directory / "ssh_config", directory / "known_hosts"
    current = ssh_config.read_text() if ssh_config.exists() else ""
    if keep_identity and entry.identity_file is None:
        block = re.search(
            rf"^{re.escape(_begin(entry.alias))}\n(.*?)^{re.escape(_end(entry.alias))}", current, re.M | re.S
        )
        identity = re.search(r"^\s+IdentityFile (.+)$", block.group(1), re.M) if block else None
        if identity:
            entry = replace(entry, identity_file=_path(identity.group(1)))
        if block and re.search(r"^\s+ForwardAgent yes$", block.group(1), re.M):
            entry = replace(entry, forward_agent=True)
    lines = [
        _begin(entry.alias),
        f"Host {entry.alias}",
        f"    HostName {entry.host}",
        f"    Port {entry.port}",
        f"    User {entry.user}",
        f"    HostKeyAlias {entry.alias}",
        f"    UserKnownHostsFile {_argument(known_hosts, tokens=True)}",
        "    StrictHostKeyChecking yes",
    ]
    if entry.identity_file:
        lines += [f"    IdentityFile {_argument(entry.identity_file, tokens=True)}", "    IdentitiesOnly yes"]
    if entry.forward_agent:
        lines.append("    ForwardAgent yes")
    lines.append(_end(entry.alias))
    write_private(ssh_config, _without_block(current, entry.alias) + "\n".join(lines) + "\n")
    pinned = known_hosts.read_text() if known_hosts.exists() else ""
    kept = [line for line in pinned.splitlines() if line.split(" ", 1)[0] != entry.alias]
    write_private(known_hosts, "".join(f"{line}\n" for line in [*kept, f"{entry.alias} {entry.host_key}"]))
    return ssh_config


def remove_entry(user: str, shell: str, directory: Path | None = None) -> bool:
    directory = directory or config_dir()
    name = alias(user, shell)
    ssh_config, known_hosts = directory / "ssh_config", directory / "known_hosts"
    if not ssh_config.exists():
        return False
    current = ssh_config.read_text()
    updated = _without_block(current, name)
    write_private(ssh_config, updated)
    if known_hosts.exists():
        kept = [line for line in known_hosts.read_text().splitlines() if line.split(" ", 1)[0] != name]
        write_private(known_hosts, "".join(f"{line}\n" for line in kept))
    return updated != current


def include_line(directory: Path | None = None) -> str:
    return f"Include {_argument((directory or config_dir()) / 'ssh_config', tokens=False, glob=True)}"


def set_include(enabled: bool, user_config: Path | None = None, directory: Path | None = None) -> bool:
    """Add (at the top, where Include applies to every host) or remove the Include line; True if changed."""
    user_config = user_config or Path.home() / ".ssh" / "config"
    line = include_line(directory)
    current = user_config.read_text() if user_config.exists() else ""
    present = line in current.splitlines()
    if enabled == present:
        return False
    if enabled:
        updated = f"{line}\n{current}"
    else:
        updated = "".join(f"{kept}\n" for kept in current.splitlines() if kept != line)
    user_config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(user_config, updated)
    return True
