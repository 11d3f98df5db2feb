"""Waiting for a shell's pod: the phase users see, and the cause in one line when it can't start.

One watch on the pod until it is Ready; until the pod exists the watch comes up every few
seconds to ask whether its StatefulSet was refused it (a quota, an admission policy). While
Kueue holds the pod in the queue, the watch comes up as often to show its place, and the wait's
timeout counts only from when it leaves the queue.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from toolkit import gpu_queue as queueing
from toolkit import shell_manifests as manifests
from toolkit.capacity import GPU
from toolkit.errors import ToolkitError
from toolkit.kube import ApiError, Kube

# Container waiting reasons that will not fix themselves: the create fails with the reason.
FATAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}  # fmt: skip
CANNOT_WORK = 64  # the entrypoint's exit for what no restart mends: a bad image, a bad setting
# How long to wait for the pod to appear before asking whether its creation was refused.
POD_CREATE_CHECK_SECONDS = 5
# How often a queued shell's place is read again.
QUEUE_CHECK_SECONDS = 5

Phase = Callable[[str], None]


class ShellFailed(ToolkitError):
    """The shell did not become ready; the message is the cause, in one line."""


def pod_phase(pod: dict[str, Any]) -> tuple[str, str | None]:
    """(phase shown to the user, a fatal cause or None) for one pod."""
    if queueing.gated(pod):
        return "queued", None
    status = pod.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("reason") == "SchedulingGated":  # just let go by Kueue: the scheduler is next
        return "scheduling", None
    if scheduled.get("status") == "False":
        message = scheduled.get("message") or "unschedulable"
        if "unbound" in message and "PersistentVolumeClaim" in message:
            return "waiting for the home volume", None
        return "scheduling", _insufficient(message)
    if scheduled.get("status") != "True":
        return "scheduling", None
    if conditions.get("Ready", {}).get("status") == "True":
        return "ready", None
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = container.get("state") or {}
        waiting, failed = state.get("waiting"), _failed(container)
        # A shell's container that can't work exits 64 (images/shell/entrypoint.sh): no restart
        # will mend it. Any other exit gets the kubelet's restarts, until it backs off.
        cannot_work = (state.get("terminated") or {}).get("exitCode") == CANNOT_WORK
        if failed and (cannot_work or (waiting and waiting.get("reason") in FATAL_WAITING)):
            return "starting", failed
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return "pulling image", f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        if state.get("running"):
            return "starting", None
    return "pulling image", None


def _failed(container: dict[str, Any]) -> str | None:
    """How a container that exited with an error ended, in one line: its code and its termination
    message's last line (FallbackToLogsOnError: the log's), e.g. an image that can't be a shell."""
    ended = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get(
        "terminated"
    )
    if not ended or not ended.get("exitCode"):
        return None
    # The image writes the log: what reaches the terminal is printable text only.
    printable = re.sub(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", "", str(ended.get("message") or ""))
    lines = [line.strip() for line in printable.splitlines() if line.strip()]
    cause = f": {lines[-1]}" if lines else f" ({ended.get('reason') or 'Error'})"
    return f"container {container.get('name', '?')} exited with code {ended['exitCode']}{cause}"


def _insufficient(message: str) -> str:
    """The scheduler's message, led by what is short, GPUs first: 'Insufficient nvidia.com/gpu (...)'."""
    short = [found.rstrip(".") for found in re.findall(r"Insufficient ([\w./-]+)", message)]
    if short:
        lead = GPU if GPU in short else short[0]
        return f"Insufficient {lead} ({message.strip()})"
    return f"Unschedulable: {message.strip()}"


def wait_ready(
    kube: Kube,
    namespace: str,
    name: str,
    on_phase: Phase,
    timeout: float,
    queue: str = "",
    fail_if_queued: bool = False,
    until_placed: bool = False,
    pods: int = 1,
) -> dict[str, Any]:
    """Watch the shell's pods until they are Ready; a ShellFailed with the cause otherwise. The
    first pod's, which the others' follow.

    `queue`: the Kueue LocalQueue the shell waits in, where its place is read; once Kueue lets it
    go, GPUs not free on a node yet (a paused shell's pod still stopping, GPUs spread over nodes)
    are waited for, up to the timeout. `fail_if_queued`: a ShellFailed as soon as the GPUs are
    taken. `until_placed`: return the pod as soon as it is queued with a place or past the queue.
    `pods`: a multi-node shell's; they start together (and leave the queue together), so once the
    first is Ready the others get the timeout again, between them.
    """
    options = (queue, fail_if_queued, until_placed, pods)
    first = _wait_pod(kube, namespace, name, f"{name}-0", on_phase, timeout, *options)
    if until_placed or pods <= 1:
        return first
    deadline = time.monotonic() + timeout
    for ordinal in range(1, pods):

        def report(phase: str, ordinal: int = ordinal) -> None:
            on_phase(f"pod {ordinal + 1} of {pods}: {phase}")

        remaining = max(1.0, deadline - time.monotonic())
        _wait_pod(kube, namespace, name, f"{name}-{ordinal}", report, remaining, *options)
    return first


def _wait_pod(
    kube: Kube,
    namespace: str,
    name: str,
    pod_name: str,
    on_phase: Phase,
    timeout: float,
    queue: str,
    fail_if_queued: bool,
    until_placed: bool,
    pods: int,
) -> dict[str, Any]:
    """Watch one pod of the shell until it is Ready (wait_ready)."""
    which = "" if pod_name == f"{name}-0" else f"pod {pod_name}: "
    deadline = time.monotonic() + timeout
    last_phase = ""
    pod: dict[str, Any] = {}
    next_place_check = 0.0
    on_phase("scheduling")
    while time.monotonic() < deadline:
        remaining = max(1, int(deadline - time.monotonic()))
        gated = bool(pod) and queueing.gated(pod)
        # Until the pod exists, come up every few seconds to see whether it was refused. While it
        # is queued, the watch resumes after the pod as last seen, so it comes up as soon as Kueue
        # lets the pod go, or after a few seconds to read its place again.
        window = min(remaining, POD_CREATE_CHECK_SECONDS if not pod else QUEUE_CHECK_SECONDS)
        since = str(pod["metadata"].get("resourceVersion") or "") if gated else ""
        for event in kube.watch(
            "Pod", namespace, fields=f"metadata.name={pod_name}", resource_version=since or None,
            timeout=window if not pod or gated else remaining,
        ):  # fmt: skip
            if event["type"] == "ERROR":  # e.g. 410 Gone: the pod's version is too old to resume from
                pod = {**pod, "metadata": {**pod["metadata"], "resourceVersion": ""}} if pod else pod
                break
            if event["type"] not in ("ADDED", "MODIFIED"):
                continue
            pod = event["object"]
            phase, fatal = pod_phase(pod)
            if fatal and queue and not fail_if_queued and fatal.startswith(f"Insufficient {GPU}"):
                phase, fatal = (
                    f"scheduling: waiting for the GPUs the queue gave it to be free on a node ({fatal})",
                    None,
                )
            if fatal:
                raise ShellFailed(f"shell {name} cannot start: {which}{fatal}")
            if phase == "queued":
                break  # its place is read below
            if phase != last_phase:
                on_phase(phase)
                last_phase = phase
            if phase == "ready" or until_placed:
                return pod
            if time.monotonic() >= deadline:
                break
        if not pod:
            refused = _pod_refused(kube, namespace, name)
            if refused:
                raise ShellFailed(f"shell {name} cannot start: {refused}")
        elif queueing.gated(pod):
            # A watch that came back early reads the place no more often than every few seconds.
            time.sleep(max(0.0, next_place_check - time.monotonic()))
            phase, placed = _queued_phase(kube, namespace, name, pod, queue, fail_if_queued, pods)
            next_place_check = time.monotonic() + QUEUE_CHECK_SECONDS
            if phase != last_phase:
                on_phase(phase)
                last_phase = phase
            if until_placed and placed:
                return pod
            if placed:
                deadline = time.monotonic() + timeout  # time in the queue is not the start's
    cause = _timeout_cause(kube, namespace, name, pod, timeout, last_phase)
    raise ShellFailed(f"{cause} ({pod_name})" if which else cause)


def _queued_phase(
    kube: Kube,
    namespace: str,
    name: str,
    pod: dict[str, Any],
    queue: str,
    fail_if_queued: bool,
    pods: int = 1,
) -> tuple[str, bool]:
    """("queued: position N, waiting for G GPUs", True) once Kueue has placed it, else
    ("queued", False). With `fail_if_queued`, a ShellFailed once the GPUs are known to be taken:
    Kueue said why it waits, or others wait ahead of it."""
    if not queue:
        return "queued", False
    owner: dict[str, Any] = next(iter(pod["metadata"].get("ownerReferences") or []), {})
    try:
        place = queueing.place(kube, namespace, queue, str(owner.get("uid", "")))
    except ApiError as error:
        if error.code not in (403, 404):
            raise
        raise ShellFailed(
            f"shell {name} waits in queue {queue!r}, which your namespace lacks or you may not read: "
            f"ask your operator to run 'toolkit user add' for you again ({error})"
        ) from None
    if place is None:
        return "queued", False
    if fail_if_queued and (place.why or place.position > 1):
        why = f": {place.why}" if place.why else ""
        raise ShellFailed(
            f"shell {name} cannot start now: the GPUs are taken ({place.position - 1} shell(s) "
            f"wait ahead of it; without --no-queue it waits its turn){why}"
        )
    if fail_if_queued:  # first in line, not judged yet: it may fit
        return "queued", False
    gpus = pods * sum(  # Kueue admits a multi-node shell's pods together
        int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0) or 0)
        for c in pod["spec"].get("containers") or []
    )
    wanted = f", waiting for {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else ""
    # Not the GPUs being taken (a queue misconfigured, a flavor no node matches): say so.
    odd = f"; Kueue says: {place.why}" if place.why and "insufficient" not in place.why else ""
    return f"queued: position {place.position}{wanted}{odd} (Ctrl-C leaves the queue)", True


def _pod_refused(kube: Kube, namespace: str, name: str) -> str | None:
    """Why the StatefulSet could not create its pod (a quota, an admission policy), if it said."""
    events = kube.list("Event", namespace, fields=f"involvedObject.name={name},reason=FailedCreate")["items"]
    return str(events[-1]["message"]).strip() if events else None


def _timeout_cause(
    kube: Kube, namespace: str, name: str, pod: dict[str, Any], timeout: float, last_phase: str = ""
) -> str:
    claim = kube.get("PersistentVolumeClaim", manifests.claim_name(name), namespace)
    if claim and (claim.get("status") or {}).get("phase") != "Bound":
        events = kube.list("Event", namespace, fields=f"involvedObject.name={manifests.claim_name(name)}")[
            "items"
        ]
        why = events[-1]["message"] if events else "no provisioner has answered"
        claim_text = manifests.claim_name(name)
        return f"shell {name} timed out after {timeout:.0f}s: PVC {claim_text} is stuck Pending ({why})"
    if not pod:
        events = kube.list("Event", namespace, fields=f"involvedObject.name={name}")["items"]
        failed = [e for e in events if e.get("type") == "Warning"]
        if failed:
            return f"shell {name} timed out after {timeout:.0f}s: {failed[-1]['message']}"
        return f"shell {name} timed out after {timeout:.0f}s: no pod was created"
    phase, _ = pod_phase(pod)
    if last_phase.startswith("scheduling: waiting for the GPUs the queue gave it"):
        phase = last_phase
    return f"shell {name} timed out after {timeout:.0f}s while {phase}"
