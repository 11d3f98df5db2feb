"""Running playbooks through ansible-runner, and following their progress from its events."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_TASK_FAILED,
    EXIT_UNREACHABLE,
    BadInputError,
    Interrupted,
)
from toolkit.paths import state_dir

# A role's meta/argument_specs.yml rejecting a variable: the input is wrong, not the host.
ARGUMENT_CHECK_ACTIONS = ("validate_argument_spec", "ansible.builtin.validate_argument_spec")

Event = Mapping[str, Any]


@dataclass
class HostCounts:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class Problem:
    """A failed or unreachable task, told in one line. `kind` is failed, unreachable or bad-input."""

    host: str
    task: str
    message: str
    kind: str


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _result_message(result: Mapping[str, Any]) -> str:
    # A looped task says only "One or more items failed"; the first failed item says why.
    items = result.get("results")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and item.get("failed"):
                return _result_message(item)
    argument_errors = result.get("argument_errors")
    if isinstance(argument_errors, list) and argument_errors:
        return _first_line(str(argument_errors[0]))
    for key in ("msg", "stderr", "reason", "module_stderr", "stdout"):
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            return _first_line(value)
    return "failed"


@dataclass
class RunTracker:
    """State of a playbook run, built only from ansible-runner's events.

    Live counts come from the per-task events. When the run ends, `playbook_on_stats` replaces
    them with Ansible's own recap, so the final numbers are exactly those Ansible reports.
    """

    play: str = ""
    task: str = ""
    hosts: dict[str, HostCounts] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    stats_data: dict[str, Any] = field(default_factory=dict)  # what the playbook's set_stats recorded
    finished: bool = False
    started_at: float = field(default_factory=time.monotonic)

    def _host(self, name: str) -> HostCounts:
        return self.hosts.setdefault(name, HostCounts())

    def handle(self, event: Event) -> bool:
        """ansible-runner's event_handler. Returns True so runner keeps the event in its artifacts."""
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        host = data.get("host", "")
        result: Mapping[str, Any] = data.get("res") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task = data.get("task", "")
        elif kind == "runner_on_ok":
            counts = self._host(host)
            counts.ok += 1
            counts.changed += bool(result.get("changed"))
            self._collect_notice(data, result)
        elif kind == "runner_on_failed":
            counts = self._host(host)
            if data.get("ignore_errors"):
                counts.ignored += 1
            else:
                counts.failed += 1
                kind = "bad-input" if data.get("task_action") in ARGUMENT_CHECK_ACTIONS else "failed"
                self.problems.append(Problem(host, data.get("task", ""), _result_message(result), kind))
        elif kind == "runner_on_unreachable":
            self._host(host).unreachable += 1
            self.problems.append(Problem(host, data.get("task", ""), _result_message(result), "unreachable"))
        elif kind == "runner_on_skipped":
            self._host(host).skipped += 1
        elif kind == "playbook_on_stats":
            self._apply_stats(data)
            self.stats_data = dict(data.get("artifact_data") or {})
        return True

    def _collect_notice(self, data: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """A role says something an operator must read (a stand-in in use, a step skipped) with a
        debug task whose message starts with 'NOTE:'. Each distinct note is shown once."""
        if data.get("task_action") not in ("debug", "ansible.builtin.debug"):
            return
        # A looped debug's result holds each item's.
        items = [item for item in result.get("results") or [] if isinstance(item, Mapping)]
        for message in [result.get("msg")] + [item.get("msg") for item in items]:
            if isinstance(message, str) and message.startswith("NOTE:"):
                note = message.removeprefix("NOTE:").strip()
                if note not in self.notices:
                    self.notices.append(note)

    def _apply_stats(self, data: Mapping[str, Any]) -> None:
        columns = {
            "ok": "ok",
            "changed": "changed",
            "failures": "failed",
            "dark": "unreachable",
            "skipped": "skipped",
            "rescued": "rescued",
            "ignored": "ignored",
        }
        final: dict[str, HostCounts] = {name: HostCounts() for name in data.get("processed", {})}
        for stat, attribute in columns.items():
            for name, value in (data.get(stat) or {}).items():
                setattr(final.setdefault(name, HostCounts()), attribute, int(value))
        self.hosts = final
        self.finished = True

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted(name for name, counts in self.hosts.items() if counts.unreachable)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(name for name, counts in self.hosts.items() if counts.failed)

    def exit_code(self, runner_rc: int) -> int:
        """0 success, 1 a task failed, 2 a host was unreachable, 3 a variable was rejected.

        A rejected variable wins: it is the operator's to fix, and no host was touched for it.
        Then an unreachable host, which is more urgent than a failed task.
        """
        if any(problem.kind == "bad-input" for problem in self.problems):
            return EXIT_BAD_INPUT
        if self.unreachable_hosts:
            return EXIT_UNREACHABLE
        if self.failed_hosts or runner_rc != 0:
            return EXIT_TASK_FAILED
        return EXIT_OK


@dataclass(frozen=True)
class RunRequest:
    playbook: Path
    inventory: Path
    limit: str | None = None
    tags: str | None = None
    skip_tags: str | None = None
    extra_vars: tuple[str, ...] = ()
    check: bool = False
    diff: bool = False


@dataclass(frozen=True)
class RunOutcome:
    tracker: RunTracker
    runner_rc: int
    status: str
    artifacts: Path

    @property
    def exit_code(self) -> int:
        return self.tracker.exit_code(self.runner_rc)


# Variable names that hold secrets (k3s_token, wekafs_client_password, ansible_become_pass,
# ..._secret, ..._key).
SECRET_NAME = re.compile(r"token|passw(or)?d|(^|_)pass($|_)|secret|(^|_)key$", re.IGNORECASE)
# Every run checks host keys; a -e that would turn that off is refused.
HOST_KEY_OVERRIDE = re.compile(r"host_key_checking|StrictHostKeyChecking|UserKnownHostsFile", re.IGNORECASE)


def _mapping_keys(mapping: object) -> list[str]:
    """Every key of a mapping, nested ones too."""
    if isinstance(mapping, dict):
        return [str(key) for key in mapping] + [k for value in mapping.values() for k in _mapping_keys(value)]
    if isinstance(mapping, list):
        return [k for item in mapping for k in _mapping_keys(item)]
    return []


def validate_extra_vars(values: tuple[str, ...]) -> None:
    """`-e` takes what ansible-playbook takes: key=value pairs, a JSON/YAML mapping, or @FILE.

    A variable that looks like a secret is refused on the command line: ansible-runner saves the
    command line in the run's artifacts. Secrets go in a file (`-e @FILE`, vault-encrypted or not).
    No message repeats a value, which may be that secret.
    """
    import yaml

    for value in values:
        if value.startswith("@"):
            path = Path(value[1:])
            if not path.is_file():
                raise BadInputError(f"-e {value}: no such file {path}")
            continue
        if HOST_KEY_OVERRIDE.search(value):
            raise BadInputError(
                "-e: host-key checking stays on for every run; trust new hosts with "
                "'toolkit doctor --accept-new'"
            )
        if value.lstrip().startswith("{"):
            try:
                mapping = yaml.safe_load(value)
            except yaml.YAMLError:
                raise BadInputError(
                    "-e: a value starting with '{' must be a JSON or YAML mapping, and this is not"
                ) from None
            keys = _mapping_keys(mapping)
        else:
            try:
                pairs = shlex.split(value)
            except ValueError as error:
                raise BadInputError(f"-e: {error} (quote each key=value once)") from None
            keys = []
            for pair in pairs:
                key, sep, _ = pair.partition("=")
                if not sep or not key.isidentifier():
                    shown = f"{key}=..." if sep else repr(pair)
                    raise BadInputError(f"-e {shown}: expected key=value, a JSON mapping or @FILE")
                keys.append(key)
        for key in keys:
            if SECRET_NAME.search(key):
                raise BadInputError(
                    f"-e {key}=...: secrets are not taken on the command line, which the run's artifacts "
                    "keep; put it in a file and pass -e @FILE (ansible-vault encrypt works too)"
                )


def build_cmdline(request: RunRequest) -> str:
    args: list[str] = []
    for value in request.extra_vars:
        if value.startswith("@"):
            value = "@" + str(Path(value[1:]).resolve())
        args += ["-e", value]
    if request.check:
        args.append("--check")
    if request.diff:
        args.append("--diff")
    return shlex.join(args)


KEEP_RUNS = 30


def prepare_run(
    project: Path,
    playbook: str,
    inventory_path: Path,
    *,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    extra_vars: tuple[str, ...] = (),
    check: bool = False,
    diff: bool = False,
    node: str | None = None,
) -> tuple[RunRequest, list[str]]:
    """Check the inventory and the extra vars before anything runs; the run and the inventory's
    warnings. `node`, when given, must be a k3s server or agent of the inventory."""
    from toolkit import inventory

    loaded, warnings = inventory.load_and_check(inventory_path)
    if node is not None and node not in set(loaded.hosts("k3s_servers")) | set(loaded.hosts("k3s_agents")):
        raise BadInputError(f"{node} is not a k3s server or agent in {inventory_path}: add it there first")
    validate_extra_vars(extra_vars)
    request = RunRequest(
        playbook=project / "playbooks" / playbook,
        inventory=inventory_path,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
        extra_vars=extra_vars,
        check=check,
        diff=diff,
    )
    return request, warnings


def _new_run_dir(project: Path, playbook: Path) -> Path:
    """A private data dir of its own for each run, 0700, the oldest pruned beyond KEEP_RUNS.

    ansible-runner stores a run's command line in `env/cmdline` under its private data dir and
    reads it back on later runs that pass none, so a shared dir would leak one run's `-e` into
    the next.
    """
    runs = state_dir(project) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in runs.iterdir() if p.is_dir())[: -KEEP_RUNS + 1]:
        shutil.rmtree(old, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = runs / f"{stamp}-{time.monotonic_ns() % 10**6:06d}-{playbook.stem}"
    run_dir.mkdir(mode=0o700)
    return run_dir


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """ansible-runner replaces SIGINT's and SIGTERM's handlers to cancel its run, and never puts
    them back: afterwards Ctrl-C would no longer stop the command. Put them back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def run_playbook(
    project: Path,
    request: RunRequest,
    tracker: RunTracker,
    on_event: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run one playbook of the project. Progress flows into `tracker`; `on_event` redraws."""
    import ansible_runner  # heavy: keep `toolkit --help` fast

    run_dir = _new_run_dir(project, request.playbook)

    def handle(event: Event) -> bool:
        keep = tracker.handle(event)
        if on_event is not None:
            on_event()
        return keep

    with _signal_handlers_kept():
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            project_dir=str(project),
            playbook=str(request.playbook),
            inventory=str(request.inventory.resolve()),
            ident="run",
            limit=request.limit,
            tags=request.tags,
            skip_tags=request.skip_tags,
            cmdline=build_cmdline(request) or None,
            # ansible-runner would keep facts in each run's own artifacts, so that no run finds the
            # last one's; this is ansible.cfg's cache (gathering = smart, a day's lifetime).
            fact_cache=str(state_dir(project) / "facts"),
            envvars={
                "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
                # ansible-runner turns host-key checking off unless the environment names it, which
                # would override ansible.cfg: secrets must never go to a host whose key is unknown.
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                # ansible-playbook lives beside this interpreter, also when its venv is not activated.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            },
            event_handler=handle,
            quiet=True,
        )
    if runner.status == "canceled":
        raise Interrupted(f"interrupted; the run stopped where it was (log: {runner.config.artifact_dir})")
    return RunOutcome(
        tracker=tracker,
        runner_rc=int(runner.rc),
        status=str(runner.status),
        artifacts=Path(runner.config.artifact_dir),
    )
