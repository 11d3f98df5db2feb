"""Shells that wait their turn for GPUs, on Kueue (kubernetes-sigs/kueue), where the cluster runs it.

A shell's StatefulSet carries the label `kueue.x-k8s.io/queue-name`: Kueue then holds its pod
behind a scheduling gate, in a Workload of its own, until the ClusterQueue has the quota for it.
The toolkit only reads what Kueue publishes: the Workload's conditions, and the queue positions
of Kueue's visibility API (pending workloads on demand), which users may read for their own
LocalQueue. A cluster whose shells settings name no queue runs without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from toolkit.capacity import GPU
from toolkit.kube import ApiError, Kube
from toolkit.tenancy import NAMESPACE_PREFIX

QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
# The label Kueue puts on a Workload: the uid of the StatefulSet it stands for.
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
VISIBILITY = "/apis/visibility.kueue.x-k8s.io/v1beta2"


@dataclass(frozen=True)
class Place:
    """Where a queued shell stands: `position` 1 is next in the cluster's queue."""

    position: int
    why: str = ""  # Kueue's reason it waits, e.g. "insufficient unused quota for nvidia.com/gpu ..."


@dataclass(frozen=True)
class Waiting:
    """One workload in the cluster's queue, for the operator's view."""

    user: str
    shell: str
    position: int
    gpus: int
    since: datetime | None
    why: str


def local_queue(namespace: str, name: str, cluster_queue: str, labels: dict[str, str]) -> dict[str, Any]:
    """The user's LocalQueue, which `user add` creates: their shells queue through it."""
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterQueue": cluster_queue},
    }


def gated(pod: dict[str, Any]) -> bool:
    """Whether Kueue still holds the pod: it has not been admitted."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(gate.get("name") == ADMISSION_GATE for gate in gates)


def workload_of(kube: Kube, namespace: str, sts_uid: str) -> dict[str, Any] | None:
    """The Workload Kueue made for the shell's StatefulSet, or None while there is none."""
    found = kube.list("Workload", namespace, labels=f"{JOB_UID_LABEL}={sts_uid}")["items"]
    return found[0] if found else None


def condition(workload: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (workload.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def refused(workload: dict[str, Any]) -> str | None:
    """Kueue's message when it can't admit the workload now (no quota, a missing queue); None when
    it has not judged it yet or has admitted it."""
    reserved = condition(workload, "QuotaReserved")
    if reserved.get("status") == "False" and reserved.get("reason") in ("Pending", "Inadmissible"):
        return str(reserved.get("message") or reserved.get("reason"))
    return None


def place(kube: Kube, namespace: str, queue: str, sts_uid: str) -> Place | None:
    """The shell's place in the queue, from Kueue's visibility API; None when it is not waiting.
    An ApiError when the user's queue can't be read (missing, or not theirs to read)."""
    items = kube.request("GET", _local_queue_path(namespace, queue)).get("items") or []
    position = _positions_by_owner(items).get(sts_uid)
    if position is None:
        return None
    return Place(position, refused(workload_of(kube, namespace, sts_uid) or {}) or "")


def places(kube: Kube, namespace: str, queue: str) -> dict[str, int]:
    """Every waiting shell of the namespace by its StatefulSet's uid: its position (1 is next)."""
    return _positions(kube, _local_queue_path(namespace, queue))


def cluster_places(kube: Kube, cluster_queue: str) -> dict[str, int]:
    """Every waiting shell of the cluster by its StatefulSet's uid: its position (operators)."""
    return _positions(kube, f"{VISIBILITY}/clusterqueues/{cluster_queue}/pendingworkloads")


def _local_queue_path(namespace: str, queue: str) -> str:
    return f"{VISIBILITY}/namespaces/{namespace}/localqueues/{queue}/pendingworkloads"


def _positions(kube: Kube, path: str) -> dict[str, int]:
    try:
        items = kube.request("GET", path).get("items") or []
    except ApiError:  # no such queue, Kueue gone or down: no place is known
        return {}
    return _positions_by_owner(items)


def _positions_by_owner(items: list[dict[str, Any]]) -> dict[str, int]:
    """Pending workloads' positions (1 is next) by the uid of the StatefulSet each stands for."""
    return {
        str(owner.get("uid")): int(item.get("positionInClusterQueue", 0)) + 1
        for item in items
        for owner in (item.get("metadata") or {}).get("ownerReferences") or []
        if owner.get("kind") == "StatefulSet"
    }


def _workload_gpus(workload: dict[str, Any]) -> int:
    total = 0
    for pod_set in (workload.get("spec") or {}).get("podSets") or []:
        spec = (pod_set.get("template") or {}).get("spec") or {}
        for container in spec.get("containers") or []:
            resources = container.get("resources") or {}
            amount = (resources.get("requests") or {}).get(GPU) or (resources.get("limits") or {}).get(GPU)
            total += int(amount or 0) * int(pod_set.get("count", 1))
    return total


def waiting(kube: Kube, cluster_queue: str) -> list[Waiting]:
    """The cluster's queue in admission order, for operators: two requests."""
    items = (
        kube.request("GET", f"{VISIBILITY}/clusterqueues/{cluster_queue}/pendingworkloads").get("items") or []
    )
    workloads = {
        (w["metadata"].get("namespace"), w["metadata"]["name"]): w for w in kube.list("Workload")["items"]
    }
    found = []
    for item in items:
        metadata = item.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        workload = workloads.get((namespace, metadata.get("name")), {})
        owner: dict[str, Any] = next(iter(metadata.get("ownerReferences") or []), {})
        found.append(
            Waiting(
                user=namespace.removeprefix(NAMESPACE_PREFIX),
                shell=str(owner.get("name", metadata.get("name", ""))),
                position=int(item.get("positionInClusterQueue", 0)) + 1,
                gpus=_workload_gpus(workload),
                since=_time(metadata.get("creationTimestamp")),
                why=refused(workload) or "",
            )
        )
    return found


def _time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
