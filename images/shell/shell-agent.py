#!/usr/bin/env python3
"""Keeps a running shell in step with its Secret, beside sshd, as root, without a restart.

The kubelet updates a mounted Secret's files in place when the Secret changes (within about a
minute), and `toolkit shell extend`, `add-key` and `remove-key` change the shell's Secret. Every
SHELL_AGENT_INTERVAL seconds (10) this agent:
- installs the Secret's authorized_keys for sshd when they changed: new logins take the new keys,
  and running sessions go on;
- reads the Secret's expires-at (else SHELL_EXPIRES_AT, or for a shell that waited in the queue
  its start plus SHELL_LIFETIME_SECONDS), writes it into the login banner, and
  writes a warning to every terminal, SSH's and the web terminal's, once each as the shell comes
  within 60, 15 and 5 minutes of being paused; a later expiry starts the count again;
- measures activity: the last input in any terminal (a terminal's access time, which the kernel
  sets as its session reads input: the IDLE column of `w`), whether any GPU is busy
  (nvidia-smi's utilization.gpu above 0), and whether the container's processes kept a quarter
  of a CPU busy since the last round (its cgroup's CPU time), so a job running in a session
  nobody types in, or in the background, keeps the shell in use. Every terminal is warned 10
  and 2 minutes before the Secret's idle-minutes (else SHELL_IDLE_MINUTES; 0: never) run out.

It answers GET /activity on port 7682 with {"idleSeconds", "terminals", "gpuUtilization" (null
when no GPU is measured), "idleMinutes" (the limit it warns before)}, which the cluster's
lifecycle reads to pause idle shells (toolkit/lifecycle.py); the tenant's NetworkPolicy lets
only the lifecycle's namespace reach it. Without the port (taken, or no IPv6 nor IPv4), the
agent goes on with its other work and says so.

Usage: shell-agent.py USER SECRET_DIR BANNER_HEAD [--once]   (--once: one round, then exit)
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WARN_AT_MINUTES = (60, 15, 5)
IDLE_WARN_AT_MINUTES = (10, 2)
ACTIVITY_PORT = 7682
TERMINALS = "/dev/pts/[0-9]*"
# The container's CPU time: cgroup v2's cpu.stat (usage_usec), else cgroup v1's cpuacct.usage (ns).
CPU_TIME_FILES = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpuacct/cpuacct.usage")
# A quarter of one CPU on average over a round is work; sshd, this agent and an idle shell use a
# hundredth of that.
BUSY_CPUS = 0.25


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


def last_terminal_input(pattern: str = TERMINALS) -> float | None:
    """When any terminal last had input (its access time), as a Unix time; None without one."""
    times = []
    for terminal in glob.glob(pattern):
        try:
            times.append(os.stat(terminal).st_atime)
        except OSError:  # closed since the glob
            continue
    return max(times) if times else None


def gpu_utilization() -> int | None:
    """The busiest GPU's utilisation in percent, as nvidia-smi samples it; None when there is no
    nvidia-smi, it fails, or it measures no GPU (one line per GPU; "[N/A]" where unsupported)."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    values = [int(line) for line in result.stdout.split() if line.isdigit()]
    return max(values) if result.returncode == 0 and values else None


def cpu_seconds(paths: tuple[str, ...] = CPU_TIME_FILES) -> float | None:
    """The CPU time the container's processes have used, in seconds; None where no cgroup says."""
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith("cpu.stat"):
            found = re.search(r"^usage_usec (\d+)$", text, re.M)
            if found:
                return int(found.group(1)) / 1e6
        elif text.strip().isdigit():
            return int(text) / 1e9
    return None


def due_idle_warning(limit_minutes: int, idle_seconds: float, warned: set[int]) -> int | None:
    """The idle threshold (minutes before the pause) to warn about now, if one was crossed."""
    left = limit_minutes - idle_seconds / 60
    crossed = [
        minutes
        for minutes in IDLE_WARN_AT_MINUTES
        if minutes < limit_minutes and 0 < left <= minutes and minutes not in warned
    ]
    return min(crossed) if crossed else None


def whole_minutes(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None


class Activity:
    """Idleness as the agent measures it, for its report and its idle warnings."""

    def __init__(self, started: float) -> None:
        self.last_active = started
        self.report = {"idleSeconds": 0, "terminals": 0, "gpuUtilization": None, "idleMinutes": 0}
        self.lock = threading.Lock()
        self.cpu_sample: tuple[float, float] | None = None  # (monotonic time, CPU seconds by then)

    def measure(
        self,
        now: float,
        last_input: float | None,
        terminals: int,
        gpu: int | None,
        limit: int = 0,
        cpu: tuple[float, float] | None = None,
    ) -> float:
        """Record this round's measures (`cpu`: when, on the monotonic clock, the container's CPU
        seconds were read, and those seconds) and the idle limit warned before; the seconds the
        shell has been idle."""
        if last_input is not None:
            self.last_active = max(self.last_active, min(last_input, now))
        if gpu:
            self.last_active = now
        if cpu is not None:
            if self.cpu_sample is not None and cpu[0] > self.cpu_sample[0]:
                busy = (cpu[1] - self.cpu_sample[1]) / (cpu[0] - self.cpu_sample[0])
                if busy >= BUSY_CPUS:
                    self.last_active = now
            self.cpu_sample = cpu
        idle = max(0.0, now - self.last_active)
        with self.lock:
            self.report = {
                "idleSeconds": int(idle), "terminals": terminals, "gpuUtilization": gpu, "idleMinutes": limit,
            }  # fmt: skip
        return idle

    def body(self) -> bytes:
        with self.lock:
            return json.dumps(self.report).encode()


class DualStackServer(ThreadingHTTPServer):
    """IPv6 and IPv4 on one socket: a pod's address may be either."""

    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve_activity(activity: Activity, port: int = ACTIVITY_PORT) -> ThreadingHTTPServer | None:
    """Answer GET /activity in a thread of its own; None, said on stderr, when the port cannot
    be had (the lifecycle then finds no report, and pauses nothing for idleness)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a client that sends nothing holds a thread no longer

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            body = activity.body() if self.path == "/activity" else b'{"error": "not found"}'
            self.send_response(200 if self.path == "/activity" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return  # one request a minute from the lifecycle: not worth a log line each

    server: ThreadingHTTPServer
    try:
        server = DualStackServer(("::", port), Handler)
    except OSError:  # no IPv6 in this pod
        try:
            server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
            server.daemon_threads = True
        except OSError as error:
            print(f"shell-agent: no activity report on port {port}: {error}", file=sys.stderr, flush=True)
            return None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Agent:
    def __init__(self, user: str, secrets: Path, head: str) -> None:
        self.secrets, self.head = secrets, head
        self.keys_target = Path("/etc/ssh/authorized_keys") / user
        self.name = re.sub(r"[^a-z0-9-]", "", os.environ.get("SHELL_NAME", "")) or "NAME"
        # Until the Secret carries one (shells made before it did): the expiry at creation.
        self.written = os.environ.get("SHELL_EXPIRES_AT", "")
        # A shell that waited in the queue: its lifetime counts from its start, until the expiry
        # written when it started reaches the Secret.
        seconds = os.environ.get("SHELL_LIFETIME_SECONDS", "").strip()
        counted = seconds.isascii() and seconds.isdigit() and 0 < len(seconds) <= 9
        self.from_start = datetime.now(timezone.utc) + timedelta(seconds=int(seconds)) if counted else None
        latest = parse_expiry(os.environ.get("SHELL_LATEST_EXPIRY", ""))
        if self.from_start and latest:  # its maximum lifetime ends then, however long it waited
            self.from_start = min(self.from_start, latest)
        self.warned: set[int] = set()
        self.last_expiry: datetime | None = None
        self.activity = Activity(time.time())
        self.idle_limit = whole_minutes(os.environ.get("SHELL_IDLE_MINUTES", "")) or 0
        self.idle_warned: set[int] = set()
        self.last_idle = 0.0

    def round(self) -> None:
        install_keys(self.secrets / "authorized_keys", self.keys_target)
        try:  # while the kubelet swaps the Secret's files, a read may fail: keep the last value
            self.written = (self.secrets / "expires-at").read_bytes().decode(errors="replace")
        except OSError:
            pass
        expires = parse_expiry(self.written) or self.from_start
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

    def idle_round(self, now: float) -> None:
        try:
            written = (self.secrets / "idle-minutes").read_bytes().decode(errors="replace")
            self.idle_limit = (
                whole_minutes(written) if whole_minutes(written) is not None else self.idle_limit
            )
        except OSError:  # none (a shell made before idle pause), or mid-swap: keep the last value
            pass
        terminals = glob.glob(TERMINALS)
        gpu = gpu_utilization()
        # Read with its own monotonic time, after nvidia-smi ran: the interval is the CPU time's.
        used, read_at = cpu_seconds(), time.monotonic()
        cpu = (read_at, used) if used is not None else None
        idle = self.activity.measure(now, last_terminal_input(), len(terminals), gpu, self.idle_limit, cpu)
        if idle < self.last_idle:  # activity: the count starts again
            self.idle_warned = set()
        self.last_idle = idle
        if not self.idle_limit:
            return
        threshold = due_idle_warning(self.idle_limit, idle, self.idle_warned)
        if threshold is not None:
            self.idle_warned |= {m for m in IDLE_WARN_AT_MINUTES if m >= threshold}
            minutes = max(1, round(self.idle_limit - idle / 60))
            warn_every_terminal(
                f"this shell has been idle for {int(idle // 60)} minute(s) and will be paused in about "
                f"{minutes} minute(s): type in a terminal, or keep its GPUs or CPUs busy, to keep it "
                "running "
                f"('toolkit shell connect {self.name}' resumes it, home kept)"
            )


def main() -> None:
    user, secrets, head_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    once = sys.argv[4:] == ["--once"]
    interval = float(os.environ.get("SHELL_AGENT_INTERVAL", "10"))
    agent = Agent(user, secrets, head_file.read_text())
    if not once:
        serve_activity(agent.activity)
    while True:
        # Each part apart: a bad Secret or a full disk stops neither the other nor the next round.
        for part in (agent.round, lambda: agent.idle_round(time.time())):
            try:
                part()
            except Exception as error:
                print(f"shell-agent: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        if once:
            return
        time.sleep(interval)


if __name__ == "__main__":
    main()
