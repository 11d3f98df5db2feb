"""The shells' lifecycle as the cluster runs it: expiry, idle pause, orphaned pods, and a record.

shells_platform deploys CronJob toolkit-lifecycle/toolkit-lifecycle, which runs
`toolkit shell reap --all-users --idle --record-status` from the toolkit's own image every minute,
as ServiceAccount toolkit-lifecycle. Each run:
- pauses or deletes the expired shells (`shells.reap`) and deletes orphaned pods;
- pauses the running shells idle for their idle minutes: no input in any terminal, GPUs at 0%
  and under a quarter of a CPU busy, as the shell's agent reports it
  (images/shell/shell-agent.py, on the pod's port 7682, which the tenant's NetworkPolicy opens
  to this namespace only). The agent runs in the user's container, so its report is the user's
  to forge: a forged one only keeps that shell running until its expiry, which the cluster
  enforces. Where the agent measures no GPU (no nvidia-smi), a shell is judged on terminal
  input and CPU use alone, and the run says so. The cluster's own measure comes on top: a shell
  whose GPUs dcgm-exporter sees at work (toolkit.gpu_metrics, read through the pods proxy) is
  kept, whatever its agent says;
- records what it did in ConfigMap toolkit-lifecycle/lifecycle, which users cannot read (it
  names other tenants' shells), for `toolkit shell reap --status` and `toolkit cluster status`;
- writes each running shell's GPU use, as dcgm-exporter reads it, on its StatefulSet
  (toolkit.dev/gpu-use), where its owner's `shell list` and `show` read it.

Every function takes the time as an argument, so tests drive it on a fake clock.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit import gpu_metrics, shells
from toolkit import shell_manifests as manifests
from toolkit.errors import ToolkitError
from toolkit.kube import ApiError, Kube
from toolkit.shell_settings import MOST_IDLE_MINUTES, SHORTEST_IDLE_MINUTES, Platform, platform
from toolkit.tenancy import MANAGED_BY

# shells_platform's toolkit-lifecycle.yaml: its namespace, account and CronJob, and the
# ClusterRole `toolkit user add` binds it to in each user's namespace only (pausing, deleting).
NAMESPACE = "toolkit-lifecycle"
ACCOUNT = "toolkit-lifecycle"
CRONJOB = "toolkit-lifecycle"
TENANT_ROLE = "toolkit-lifecycle-tenant"
RECORD = "lifecycle"  # the ConfigMap each run writes
# A record older than this says the CronJob stopped running (schedule, image or rights broken).
STALE_AFTER = timedelta(minutes=10)
REPORT_LIMIT = 4096  # bytes: the agent's report is a few dozen
RESPONSE_LIMIT = 8192  # bytes: the report and its HTTP head
LINE_LIMIT = 300  # characters of one action in the record (a ConfigMap holds at most 1 MiB)
ACTIONS_KEPT = 200  # lines of the record's actions


@dataclass(frozen=True)
class Activity:
    """What a shell's agent reports: seconds since the last input in any terminal or GPU use
    (since the agent started, when neither happened), its open terminals, the busiest GPU's
    utilisation in percent (None when it measures none), and the idle minutes it warns before
    (0: it warns of none)."""

    idle_seconds: int
    terminals: int
    gpu_utilization: int | None
    idle_minutes: int = 0


REPORT_KEYS = {"idleSeconds", "terminals", "gpuUtilization", "idleMinutes"}


def parse_activity(body: bytes) -> Activity:
    """The agent's JSON report, held to its exact shape: its owner can write anything there. Only
    a flat object is parsed (nesting could exhaust the parser's recursion)."""
    text = body.decode("ascii", errors="strict").strip() if len(body) <= REPORT_LIMIT else ""
    if not text.startswith("{") or any(c in text[1:] for c in "[{"):
        raise ValueError("the report is not one flat JSON object of at most 4 KiB")
    report = json.loads(text)
    if not isinstance(report, dict) or set(report) != REPORT_KEYS:
        raise ValueError(f"the report's keys are not {', '.join(sorted(REPORT_KEYS))}")

    def whole(key: str, most: int) -> int:
        value = report[key]
        if type(value) is not int or not 0 <= value <= most:
            raise ValueError(f"{key} is not a whole number from 0 to {most}")
        return value

    gpu = None if report["gpuUtilization"] is None else whole("gpuUtilization", 100)
    return Activity(
        whole("idleSeconds", 10**9), whole("terminals", 10**5), gpu, whole("idleMinutes", MOST_IDLE_MINUTES)
    )


def read_activity(address: str, port: int = manifests.ACTIVITY_PORT, timeout: float = 3.0) -> Activity:
    """GET http://ADDRESS:7682/activity within `timeout` seconds in all (an agent that answers a
    byte at a time is cut off), at most 8 KiB read; a ToolkitError in words of the toolkit's
    own when there is no valid report: the answer is the shell owner's to write, and is never
    repeated to an operator's terminal."""
    deadline = time.monotonic() + timeout
    too_slow = f"no activity report from {address}: its agent took over {timeout:g} s"
    received = b""
    try:
        with socket.create_connection((address, port), timeout=timeout) as connection:
            connection.sendall(b"GET /activity HTTP/1.0\r\nHost: agent\r\nConnection: close\r\n\r\n")
            while len(received) <= RESPONSE_LIMIT:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ToolkitError(too_slow)
                connection.settimeout(left)
                chunk = connection.recv(4096)
                if not chunk:
                    break
                received += chunk
    except TimeoutError:
        raise ToolkitError(too_slow) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ToolkitError(f"no activity report from {address}: {reason}") from None
    head, separator, body = received.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    is_http = len(status) >= 2 and status[0].startswith(b"HTTP/")
    if not separator or len(received) > RESPONSE_LIMIT or not is_http:
        raise ToolkitError(f"the activity report from {address} is not an HTTP response of at most 8 KiB")
    if status[1] != b"200":
        raise ToolkitError(f"the activity report from {address} is not HTTP 200")
    try:
        return parse_activity(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError among them
        raise ToolkitError(f"the activity report from {address} is not the agent's JSON") from None


ReadActivity = Callable[[str], Activity]


def idle_limit(shell: shells.Shell, settings: Platform) -> int:
    """The minutes of idleness after which the shell is paused; 0: never. The shell's own ask,
    held to the cluster's limits: a forbidden 0 or a value past the most counts as the most. A
    shell made before idle pause asks nothing, and its agent would warn of nothing: never."""
    if settings.idle_minutes == 0 or shell.idle_minutes is None:
        return 0
    asked = shell.idle_minutes
    most = settings.max_idle_minutes
    if most and (asked == 0 or asked > most):
        return most
    return asked if asked == 0 else max(asked, SHORTEST_IDLE_MINUTES)


@dataclass(frozen=True)
class IdleCheck:
    shell: shells.Shell
    limit: int  # minutes
    activity: Activity | None
    action: str  # "paused", "" (active), "not checked: WHY" (no report) or "not paused: WHY" (failed)


def pause_idle(
    kube: Kube,
    now: datetime,
    read: ReadActivity = read_activity,
    dry_run: bool = False,
    settings: Platform | None = None,
    measured: gpu_metrics.Reading | None = None,
) -> list[IdleCheck]:
    """Check every running shell that idle pause applies to; pause those idle past their limit.
    The agents are asked in parallel (a shell that does not answer costs its timeout); `measured`
    is the exporters' reading, read here when not given."""
    settings = settings or platform(kube)
    if settings.idle_minutes == 0:
        return []
    running = [
        (shell, limit)
        for shell in shells.list_shells(kube, None, settings.max_lifetime_hours)
        if shell.replicas > 0 and (limit := idle_limit(shell, settings))
    ]
    if not running:
        return []
    pods = {
        (pod["metadata"].get("namespace"), pod["metadata"].get("name")): pod
        for pod in kube.list("Pod", labels=shells.SHELLS_SELECTOR)["items"]
    }
    # Checked once pod 0, where its users work, runs: however its other pods fare (a group whose
    # last pod never starts, a replica its owner added that no node takes, a readiness probe its
    # owner made fail) it is judged.
    candidates = [
        (shell, limit) for shell, limit in running if _running(pods.get((shell.namespace, shell.pods[0])))
    ]
    if not candidates:
        return []
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in settings.pod_cidrs]
    measured = measured if measured is not None else gpu_metrics.read(kube)

    def report(shell: shells.Shell, pod: str) -> Activity | None:
        """Another pod's report; None (idle) for one missing, not running or not answering."""
        found = pods.get((shell.namespace, pod))
        try:
            return read(shell_pod_address(found, shell, networks)) if _running(found) else None
        except ToolkitError:
            return None

    def check(shell: shells.Shell, limit: int) -> IdleCheck:
        try:
            first = read(shell_pod_address(pods.get((shell.namespace, shell.pods[0])), shell, networks))
            # A multi-node shell is idle only when every pod is: the least idle one speaks for it.
            others = [found for pod in shell.pods[1:] if (found := report(shell, pod)) is not None]
            activity = min([first, *others], key=lambda one: one.idle_seconds)
        except ToolkitError as error:
            return IdleCheck(shell, limit, None, f"not checked: {error}")
        except Exception as error:  # one shell's report must never stop the others' checks
            return IdleCheck(shell, limit, None, f"not checked: {type(error).__name__} reading its report")
        # The agent warns its terminals before its own limit: a later one (the site lowered its
        # maximum since) is waited for, so no shell is paused unwarned. Forging it is no worse
        # than forging activity, which its owner can always do.
        limit = max(limit, activity.idle_minutes)
        gpus = measured.by_pods(shell.namespace, shell.pods)
        if activity.idle_seconds < limit * 60 or (gpus is not None and gpus.utilisation):
            return IdleCheck(shell, limit, activity, "")
        try:
            if not dry_run:
                shells.pause(kube, shell.user, shell.name, idle_at=now)
        except ToolkitError as error:
            return IdleCheck(shell, limit, activity, f"not paused: {_line(str(error))}")
        return IdleCheck(shell, limit, activity, "paused")

    with ThreadPoolExecutor(max_workers=min(16, len(candidates))) as pool:
        return list(pool.map(lambda pair: check(*pair), candidates))


def publish_gpu_use(
    kube: Kube, now: datetime, measured: gpu_metrics.Reading, dry_run: bool = False
) -> list[str]:
    """Write each running shell's GPU use, as the exporters read it, on its StatefulSet for its
    owner's `shell list` and `show` (users may not read the exporters: the proxy shows every
    tenant). An unchanged figure is written again only every 5 minutes, so StatefulSets do not
    change every minute. The shells written, as USER/NAME."""
    written = []
    for shell in shells.list_shells(kube, None):
        use = measured.by_pods(shell.namespace, shell.pods) if shell.status != "paused" else None
        text = use.published(now) if use else ""
        if not text:
            continue
        before = gpu_metrics.read_published(shell.gpu_use)
        unchanged = before is not None and str(shell.gpu_use).split(" ", 1)[1] == text.split(" ", 1)[1]
        if unchanged and before is not None and now - before[0] < timedelta(minutes=5):
            continue
        if not dry_run:
            try:
                kube.merge_patch(
                    "StatefulSet",
                    shell.name,
                    shell.namespace,
                    {"metadata": {"annotations": {manifests.GPU_USE: text}}},
                )
            except ApiError:
                continue  # gone meanwhile, or its namespace refused: the next run writes it
        written.append(f"{shell.user}/{shell.name}")
    return written


def _running(pod: dict[str, Any] | None) -> bool:
    """Whether the pod's container runs, as its kubelet says: not whether it is Ready, which its
    owner's readiness probe decides."""
    status = (pod or {}).get("status") or {}
    started = any((c.get("state") or {}).get("running") for c in status.get("containerStatuses") or [])
    return status.get("phase") == "Running" and started


def shell_pod_address(pod: dict[str, Any] | None, shell: shells.Shell, networks: list[Any]) -> str:
    """The address of the shell's own pod, as the kubelet reports it: a pod its StatefulSet owns,
    on the pod network (never an address its owner could point elsewhere)."""
    if pod is None:
        raise ToolkitError("its pod is gone")
    owners = pod["metadata"].get("ownerReferences") or []
    if not any(ref.get("kind") == "StatefulSet" and ref.get("uid") == shell.uid for ref in owners):
        raise ToolkitError("its pod is not its StatefulSet's")
    address = str((pod.get("status") or {}).get("podIP") or "")
    try:
        on_pod_network = any(ipaddress.ip_address(address) in network for network in networks)
    except ValueError:
        on_pod_network = False
    if not on_pod_network:
        raise ToolkitError(f"its pod's address {address or '(none)'} is not on the pod network")
    return address


# --- the record of each run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    started: datetime
    finished: datetime
    reaped: list[shells.Reaped] = field(default_factory=list)
    idle: list[IdleCheck] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)  # the shells whose GPU use it wrote
    error: str = ""  # why a part of the run stopped short, when one did

    # What each part did, counted once here for the record and the command's own output.
    @property
    def expired(self) -> list[shells.Reaped]:
        """The expired shells paused or deleted (or, in a dry run, to be)."""
        return [r for r in self.reaped if not r.action.startswith("not ")]

    @property
    def idle_paused(self) -> list[IdleCheck]:
        return [c for c in self.idle if c.action == "paused"]

    @property
    def unchecked(self) -> list[IdleCheck]:
        """The running shells whose agent gave no valid report."""
        return [c for c in self.idle if c.action.startswith("not checked")]

    @property
    def checked(self) -> int:
        return len(self.idle) - len(self.unchecked)

    @property
    def failures(self) -> list[str]:
        """Each shell the run could not act on, and why."""
        failed = [
            *((r.shell, r.action) for r in self.reaped if r.action.startswith("not ")),
            *((c.shell, c.action) for c in self.idle if c.action.startswith("not paused")),
        ]
        return [
            *(f"{shell.user}/{shell.name} {action}" for shell, action in failed),
            *(f"pod {pod}" for pod in self.orphans if shells.orphan_failed(pod)),
        ]

    def summary(self) -> str:
        deleted = [pod for pod in self.orphans if not shells.orphan_failed(pod)]
        unmeasured = [c for c in self.idle if c.activity is not None and c.activity.gpu_utilization is None]
        parts = [
            f"{len(self.expired)} expired shell(s) reaped",
            f"{len(self.idle_paused)} idle shell(s) paused of {self.checked} checked",
            f"{len(deleted)} orphaned pod(s) deleted",
        ]
        if self.unchecked:
            parts.append(f"{len(self.unchecked)} running shell(s) gave no activity report")
        if unmeasured:
            parts.append(
                f"{len(unmeasured)} judged on terminal input and CPU use alone (no GPU utilisation measured)"
            )
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        return "; ".join(parts)

    def actions(self) -> list[str]:
        """What was done, a line each, as printable text of at most LINE_LIMIT characters."""
        lines = [
            *(
                f"{r.shell.user}/{r.shell.name} {r.action}"
                + ("" if r.action.startswith("not started") else ", expired")
                for r in self.reaped
            ),
            *(
                f"{c.shell.user}/{c.shell.name} {c.action}, idle {c.activity.idle_seconds // 60} min "
                f"(limit {c.limit})"
                for c in self.idle
                if c.activity is not None and c.action
            ),
            *(f"{c.shell.user}/{c.shell.name} {c.action}" for c in self.idle if c.activity is None),
            *(
                f"pod {pod}" if shells.orphan_failed(pod) else f"pod {pod} deleted: no shell owns it"
                for pod in self.orphans
            ),
        ]
        return [_line(line) for line in lines]

    @property
    def outcome(self) -> str:
        """ "failed" when a part of the run stopped short; "partial" when a shell could not be
        reaped, paused or checked; else "ok"."""
        return "failed" if self.error else "partial" if self.failures or self.unchecked else "ok"


def _line(text: str) -> str:
    """One line of a record: printable (an API server's or a reader's error can quote what a
    user wrote), without line breaks of any kind, and short."""
    flat = " ".join(shells.printable(text).split())
    return flat if len(flat) <= LINE_LIMIT else flat[: LINE_LIMIT - 3] + "..."


def record(kube: Kube, run: Run) -> None:
    """Write the run's record; the lifecycle may create ConfigMaps in its namespace, and read and
    patch only this one."""
    actions = run.actions()
    if len(actions) > ACTIONS_KEPT:
        actions = [*actions[:ACTIONS_KEPT], f"... and {len(actions) - ACTIONS_KEPT} more"]
    data = {
        "started": manifests.timestamp(run.started),
        "finished": manifests.timestamp(run.finished),
        "outcome": run.outcome,
        "summary": run.summary(),
        "actions": "\n".join(actions),
        "error": _line(run.error) if run.error else "",
    }
    try:
        kube.merge_patch("ConfigMap", RECORD, NAMESPACE, {"data": data})
    except ApiError as error:
        if error.code != 404:
            raise
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": RECORD, "namespace": NAMESPACE, "labels": {MANAGED_BY: "toolkit"}},
            "data": data,
        }
        kube.create(manifest)


@dataclass(frozen=True)
class Record:
    """The last run as recorded; `finished` is None when the record is not the lifecycle's."""

    finished: datetime | None
    outcome: str
    summary: str
    actions: tuple[str, ...]
    error: str

    def staleness(self, now: datetime) -> str | None:
        """Why the record says the lifecycle is not running, or None."""
        if self.finished is None:
            return "its record holds no time"
        if now - self.finished > STALE_AFTER:
            return (
                f"it last ran {_ago(now - self.finished)} ago: check CronJob {NAMESPACE}/{CRONJOB} "
                f"(kubectl -n {NAMESPACE} get cronjob,jobs,pods)"
            )
        return None


def last_run(kube: Kube) -> Record | None:
    """The last run's record; None when the lifecycle never ran (or is not deployed). Read as
    input: each line printable and short, split on newlines only."""
    found = kube.get("ConfigMap", RECORD, NAMESPACE)
    if found is None:
        return None
    data = found.get("data") or {}
    actions = [_line(line) for line in str(data.get("actions", "")).split("\n") if line.strip()]
    return Record(
        finished=shells.parse_time(data.get("finished")),
        outcome=_line(str(data.get("outcome", "unknown"))),
        summary=_line(str(data.get("summary", ""))),
        actions=tuple(actions[: ACTIONS_KEPT + 1]),
        error=_line(str(data.get("error", ""))),
    )


# The kubelet's reasons for a container it can't start for want of its image.
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# A container on its way: not trouble.
STARTING_REASONS = ("ContainerCreating", "PodInitializing")


def stuck(kube: Kube) -> str | None:
    """Why the CronJob's newest pod does not run, as its kubelet says (an image it can't get, a
    run that failed: the Job runs it once, restartPolicy Never), with what to do; None when none
    is stuck. One list call."""
    return why_stuck(kube.list("Pod", NAMESPACE)["items"])


def why_stuck(pods: list[dict[str, Any]]) -> str | None:
    """`stuck`'s answer from the namespace's pods."""
    if not pods:
        return None
    newest = max(
        pods, key=lambda pod: (pod["metadata"].get("creationTimestamp", ""), pod["metadata"]["name"])
    )
    name = _line(str(newest["metadata"]["name"]))
    for status in (newest.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = _line(str(waiting.get("reason", "")))
        if reason in IMAGE_REASONS:
            image = _line(str(status.get("image", "")))
            return (
                f"its pod {name} can't get its image {image} ({reason}): build it with 'toolkit images "
                "build --image toolkit' and push it where shells_platform_lifecycle_image names, or put "
                "its --export tarball in k3s_airgap_dir"
            )
        if reason and reason not in STARTING_REASONS:
            return f"its pod {name} is waiting: {reason}: {_line(str(waiting.get('message', '')))}"
        ended = (status.get("state") or {}).get("terminated") or {}
        if (newest.get("status") or {}).get("phase") == "Failed" and ended:
            code = _line(str(ended.get("exitCode", "?")))
            return (
                f"its last run failed ({_line(str(ended.get('reason', 'Error')))}, exit code {code}): "
                f"kubectl -n {NAMESPACE} logs {name}"
            )
    return None


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))  # a clock a little ahead of this one: just now
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600}h"


def describe(record: Record | None, now: datetime, trouble: str | None = None) -> str:
    """One line for `cluster status` and `reap --status`; `trouble` is why its pod is `stuck`."""
    if record is None:
        line = (
            f"lifecycle: no run recorded (CronJob {NAMESPACE}/{CRONJOB}, deployed by `toolkit cluster up`, "
            "records each run)"
        )
        return f"{line}; {trouble}" if trouble else line
    stale = record.staleness(now)
    when = f"{_ago(now - record.finished)} ago" if record.finished else "at an unknown time"
    line = f"lifecycle: last run {when}, {record.outcome}: {record.summary}"
    if record.error:
        line += f"; error: {record.error}"
    if stale:
        line += f"; not running? {stale}"
    if trouble:
        line += f"; {trouble}"
    return line


def diagnosis(kube: Kube, record: Record | None, now: datetime) -> str | None:
    """`stuck`'s answer when the record says the lifecycle is not running (none, or stale)."""
    if record is not None and record.staleness(now) is None:
        return None
    try:
        return stuck(kube)
    except ApiError:  # the namespace's pods are unreadable: the record's line stands alone
        return None


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
