#!/usr/bin/env python3
"""Keeps a running shell in step with its Secret, beside sshd, as root, without a restart.

The kubelet updates a mounted Secret's files in place when the Secret changes (within about a
minute), and `toolkit shell extend`, `add-key` and `remove-key` change the shell's Secret. Every
SHELL_AGENT_INTERVAL seconds (10) this agent:
- installs the Secret's authorized_keys for sshd when they changed: new logins take the new keys,
  and running sessions go on;
- reads the Secret's expires-at (else SHELL_EXPIRES_AT), writes it into the login banner, and
  writes a warning to every terminal, SSH's and the web terminal's, once each as the shell comes
  within 60, 15 and 5 minutes of being paused; a later expiry starts the count again.

Usage: shell-agent.py USER SECRET_DIR BANNER_HEAD [--once]   (--once: one round, then exit)
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

WARN_AT_MINUTES = (60, 15, 5)


def parse_expiry(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def install_keys(source: Path, target: Path) -> None:
    """Copy the Secret's keys for sshd, root's and read-only, when they changed (and are not empty:
    a shell nobody can log in to is worse than one with the old keys)."""
    try:
        keys = source.read_bytes()
    except OSError:  # mid-swap: the next round reads them
        return
    if not keys.strip() or (target.exists() and target.read_bytes() == keys):
        return
    staged = target.with_name(f".{target.name}.new")
    staged.write_bytes(keys)
    staged.chmod(0o644)
    os.replace(staged, target)


def banner(head: str, expires: datetime | None) -> str:
    when = f"This shell expires at {expires:%Y-%m-%dT%H:%M:%SZ}.\n" if expires else ""
    return head + when + "Your files are kept when the shell is paused or restarted.\n"


def write_banner(text: str, motd: Path) -> None:
    if not motd.exists() or motd.read_text() != text:
        staged = motd.with_name(".motd.new")
        staged.write_text(text)
        staged.chmod(0o644)
        os.replace(staged, motd)


def due_warning(expires: datetime, now: datetime, warned: set[int]) -> int | None:
    """The threshold to warn about now, if one was crossed and not yet warned about."""
    left = (expires - now).total_seconds() / 60
    crossed = [minutes for minutes in WARN_AT_MINUTES if 0 < left <= minutes and minutes not in warned]
    return min(crossed) if crossed else None


def warn_every_terminal(message: str) -> None:
    """Every pseudo-terminal: SSH sessions and the web terminal's alike. Without blocking: a
    terminal nobody reads (its buffer full, or stopped) must not stall the agent."""
    text = f"\r\n\a*** {message} ***\r\n".encode()
    for terminal in glob.glob("/dev/pts/[0-9]*"):
        try:
            descriptor = os.open(terminal, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(descriptor, text)
        except OSError:  # EAGAIN: a full buffer; that session misses this warning
            pass
        finally:
            os.close(descriptor)


class Agent:
    def __init__(self, user: str, secrets: Path, head: str) -> None:
        self.secrets, self.head = secrets, head
        self.keys_target = Path("/etc/ssh/authorized_keys") / user
        self.name = re.sub(r"[^a-z0-9-]", "", os.environ.get("SHELL_NAME", "")) or "NAME"
        # Until the Secret carries one (shells made before it did): the expiry at creation.
        self.written = os.environ.get("SHELL_EXPIRES_AT", "")
        self.warned: set[int] = set()
        self.last_expiry: datetime | None = None

    def round(self) -> None:
        install_keys(self.secrets / "authorized_keys", self.keys_target)
        try:  # while the kubelet swaps the Secret's files, a read may fail: keep the last value
            self.written = (self.secrets / "expires-at").read_bytes().decode(errors="replace")
        except OSError:
            pass
        expires = parse_expiry(self.written)
        if expires != self.last_expiry:
            self.warned, self.last_expiry = set(), expires
        write_banner(banner(self.head, expires), Path("/etc/motd"))
        if expires:
            now = datetime.now(timezone.utc)
            threshold = due_warning(expires, now, self.warned)
            if threshold is not None:
                self.warned |= {m for m in WARN_AT_MINUTES if m >= threshold}
                minutes = max(1, round((expires - now).total_seconds() / 60))
                warn_every_terminal(
                    f"this shell will be paused at {expires:%H:%M} UTC, in {minutes} minute(s): save your "
                    f"work, or extend it with 'toolkit shell extend {self.name} --hours H'"
                )


def main() -> None:
    user, secrets, head_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    once = sys.argv[4:] == ["--once"]
    interval = float(os.environ.get("SHELL_AGENT_INTERVAL", "10"))
    agent = Agent(user, secrets, head_file.read_text())
    while True:
        try:
            agent.round()
        except Exception as error:  # a bad Secret or a full disk: say so, and try again next round
            print(f"shell-agent: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        if once:
            return
        time.sleep(interval)


if __name__ == "__main__":
    main()
