"""What the cluster's nodes can give: GPUs, CPUs and memory, and what pods already hold.

Operators count what pods hold from the pods themselves. Users may not list other tenants'
pods, so for them the cluster publishes only the counts: shells_platform's CronJob writes
ConfigMap toolkit-system/capacity (roles/shells_platform/files/publish-capacity.py, which
counts by gpu_requests' rule; a test holds the two equal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from toolkit import quantity
from toolkit.errors import ToolkitError
from toolkit.gpu_types import PRODUCT_LABEL
from toolkit.kube import ApiError, Kube

GPU = "nvidia.com/gpu"
PUBLISHED_NAMESPACE, PUBLISHED_NAME = "toolkit-system", "capacity"


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    address: str
    ready: bool
    schedulable: bool
    labels: dict[str, str]
    gpus: int
    cpu: Fraction
    memory: Fraction

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> NodeCapacity:
        status = node.get("status") or {}
        allocatable = status.get("allocatable") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        address = next((a["address"] for a in status.get("addresses") or [] if a["type"] == "InternalIP"), "")
        return cls(
            name=node["metadata"]["name"],
            address=address,
            ready=ready,
            schedulable=not (node.get("spec") or {}).get("unschedulable", False),
            labels=node["metadata"].get("labels") or {},
            gpus=int(allocatable.get(GPU, "0")),
            cpu=quantity.parse(allocatable.get("cpu", "0")),
            memory=quantity.parse(allocatable.get("memory", "0")),
        )

    def matches(self, node_selector: dict[str, str]) -> bool:
        return all(self.labels.get(key) == value for key, value in node_selector.items())


def share(node: NodeCapacity, gpus: int) -> tuple[Fraction, Fraction]:
    """The CPU and memory that come with `gpus` of this node: its proportional share, as ODC does.

    An 8-GPU node with 192 CPUs and 2 TiB gives 24 CPUs and 256 GiB per GPU. A CPU-only shell gets
    one GPU's share of the largest GPU node.
    """
    per = max(gpus, 1)
    divisor = node.gpus or 1
    return node.cpu * per / divisor, node.memory * per / divisor


@dataclass(frozen=True)
class NodeAvailability:
    name: str
    gpus: int
    gpus_used: int
    ready: bool
    schedulable: bool
    gpu_product: str | None = None  # GPU feature discovery's nvidia.com/gpu.product label

    @property
    def gpus_free(self) -> int:
        return max(self.gpus - self.gpus_used, 0) if self.ready and self.schedulable else 0


def gpu_requests(pod: dict[str, Any]) -> int:
    """GPUs a pod holds, as the scheduler counts its effective request (Kubernetes' PodRequests,
    with KEP-753's sidecars): the larger of its containers plus its sidecar init containers
    (restartPolicy Always), and the peak of its init phase, where each other init container runs
    beside the sidecars started before it. A container's request, or its limit where unset."""
    spec = pod.get("spec") or {}

    def gpus(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        requested = (resources.get("requests") or {}).get(GPU) or (resources.get("limits") or {}).get(GPU)
        return int(requested or 0)

    sidecars, init_peak = 0, 0
    for container in spec.get("initContainers") or []:
        if container.get("restartPolicy") == "Always":  # a sidecar: it runs beside what follows
            sidecars += gpus(container)
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + gpus(container))
    return max(sum(gpus(c) for c in spec.get("containers") or []) + sidecars, init_peak)


@dataclass(frozen=True)
class Held:
    """GPUs requested per node by scheduled pods that have not finished."""

    per_node: dict[str, int] = field(default_factory=dict)
    published_at: str | None = None  # when the cluster counted them; None: counted now


def gpus_held(kube: Kube) -> Held:
    """From the pods, in one list call; where the caller may not list them, as the cluster last
    published them (one get)."""
    try:
        pods = kube.list("Pod", fields="status.phase!=Succeeded,status.phase!=Failed")["items"]
    except ApiError as error:
        if error.code != 403:
            raise
        return published_held(kube)
    held: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            held[node] = held.get(node, 0) + gpu_requests(pod)
    return Held(held)


def published_held(kube: Kube) -> Held:
    where = f"ConfigMap {PUBLISHED_NAMESPACE}/{PUBLISHED_NAME}"
    published = kube.get("ConfigMap", PUBLISHED_NAME, PUBLISHED_NAMESPACE)
    if published is None:
        raise ToolkitError(
            f"this cluster has not published the GPUs its nodes hold ({where}, written each minute by "
            "shells_platform's CronJob toolkit-capacity): ask an operator to run 'toolkit cluster up'"
        )
    data = published.get("data") or {}
    try:
        nodes = json.loads(data["nodes"])
        held = {str(name): int(counts["held"]) for name, counts in nodes.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ToolkitError(f"{where} does not hold the GPU counts the toolkit expects") from None
    return Held(held, str(data.get("publishedAt", "")) or None)


@dataclass(frozen=True)
class Availability:
    nodes: list[NodeAvailability]
    published_at: str | None = None  # as in Held


def availability(kube: Kube) -> Availability:
    """Per node: allocatable GPUs minus what scheduled, unfinished pods request. Two calls."""
    nodes = [NodeCapacity.from_node(n) for n in kube.list("Node")["items"]]
    held = gpus_held(kube)
    return Availability(
        [
            NodeAvailability(
                n.name,
                n.gpus,
                held.per_node.get(n.name, 0),
                n.ready,
                n.schedulable,
                n.labels.get(PRODUCT_LABEL),
            )
            for n in sorted(nodes, key=lambda n: n.name)
        ],
        held.published_at,
    )
