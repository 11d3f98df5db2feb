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
from toolkit.kube import Kube

# Container waiting reasons that will not fix themselves: the create fails with the reason.
FATAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}  # fmt: skip
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
    if scheduled.get("status") == "False":
        message = scheduled.get("message") or "unschedulable"
        if "unbound" in message and "PersistentVolumeClaim" in message:
            return "waiting for the home volume", None
        return "scheduling", _insufficient(message)
    if scheduled.get("status") != "True":
        return "scheduling", None
    if conditions.get("Ready", {}).get("status") == "True":
        return "ready", None
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return "pulling image", f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        if (container.get("state") or {}).get("running"):
            return "starting", None
    return "pulling image", None


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
) -> dict[str, Any]:
    """Watch the shell's pod until it is Ready; a ShellFailed with the cause otherwise.

    `queue`: the Kueue LocalQueue the shell waits in, where its place is read. `fail_if_queued`:
    a ShellFailed as soon as Kueue says the GPUs are taken. `until_placed`: return the pod as soon
    as it is queued with a place or past the queue, not Ready.
    """
    pod_name = f"{name}-0"
    deadline = time.monotonic() + timeout
    last_phase = ""
    pod: dict[str, Any] = {}
    on_phase("scheduling")
    while time.monotonic() < deadline:
        remaining = max(1, int(deadline - time.monotonic()))
        # Until the pod exists, come up every few seconds to see whether it was refused; while it
        # is queued, to read its place.
        waiting = not pod or queueing.gated(pod)
        window = (
            min(remaining, POD_CREATE_CHECK_SECONDS if not pod else QUEUE_CHECK_SECONDS)
            if waiting
            else remaining
        )
        for event in kube.watch("Pod", namespace, fields=f"metadata.name={pod_name}", timeout=window):
            if event["type"] not in ("ADDED", "MODIFIED"):
                continue
            pod = event["object"]
            phase, fatal = pod_phase(pod)
            if fatal:
                raise ShellFailed(f"shell {name} cannot start: {fatal}")
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
            phase = _queued_phase(kube, namespace, name, pod, queue, fail_if_queued)
            if phase != last_phase:
                on_phase(phase)
                last_phase = phase
            if until_placed and phase != "queued":
                return pod
            deadline = time.monotonic() + timeout  # time in the queue is not the start's
    raise ShellFailed(_timeout_cause(kube, namespace, name, pod, timeout))


def _queued_phase(
    kube: Kube, namespace: str, name: str, pod: dict[str, Any], queue: str, fail_if_queued: bool
) -> str:
    """ "queued: position N, waiting for G GPUs" once Kueue has placed it, else "queued"."""
    owner: dict[str, Any] = next(iter(pod["metadata"].get("ownerReferences") or []), {})
    place = queueing.place(kube, namespace, queue, str(owner.get("uid", ""))) if queue else None
    if place is None:
        return "queued"
    if fail_if_queued:
        if not place.why:  # Kueue has not judged it yet: it may fit
            return "queued"
        raise ShellFailed(
            f"shell {name} cannot start now: the GPUs are taken ({place.position - 1} shell(s) "
            f"wait ahead of it; without --no-queue it waits its turn): {place.why}"
        )
    gpus = sum(
        int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0) or 0)
        for c in pod["spec"].get("containers") or []
    )
    wanted = f", waiting for {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else ""
    return f"queued: position {place.position}{wanted} (Ctrl-C leaves the queue)"


def _pod_refused(kube: Kube, namespace: str, name: str) -> str | None:
    """Why the StatefulSet could not create its pod (a quota, an admission policy), if it said."""
    events = kube.list("Event", namespace, fields=f"involvedObject.name={name},reason=FailedCreate")["items"]
    return str(events[-1]["message"]).strip() if events else None


def _timeout_cause(kube: Kube, namespace: str, name: str, pod: dict[str, Any], timeout: float) -> str:
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
    return f"shell {name} timed out after {timeout:.0f}s while {phase}"
