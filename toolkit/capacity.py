"""What the cluster's nodes can give: GPUs, CPUs and memory, and what pods already hold."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from toolkit import quantity
from toolkit.kube import Kube

GPU = "nvidia.com/gpu"


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

    @property
    def gpus_free(self) -> int:
        return max(self.gpus - self.gpus_used, 0) if self.ready and self.schedulable else 0


def gpu_requests(pod: dict[str, Any]) -> int:
    """GPUs a pod holds: its containers' requests, or limits where requests are unset."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        amount = (resources.get("requests") or {}).get(GPU) or (resources.get("limits") or {}).get(GPU) or 0
        total += int(amount)
    return total


def gpus_held(kube: Kube) -> dict[str, int]:
    """GPUs requested per node by scheduled pods that have not finished. One list call."""
    held: dict[str, int] = {}
    for pod in kube.list("Pod", fields="status.phase!=Succeeded,status.phase!=Failed")["items"]:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            held[node] = held.get(node, 0) + gpu_requests(pod)
    return held


def availability(kube: Kube) -> list[NodeAvailability]:
    """Per node: allocatable GPUs minus what scheduled, unfinished pods request. Two list calls."""
    nodes = [NodeCapacity.from_node(n) for n in kube.list("Node")["items"]]
    used = gpus_held(kube)
    return [
        NodeAvailability(n.name, n.gpus, used.get(n.name, 0), n.ready, n.schedulable)
        for n in sorted(nodes, key=lambda n: n.name)
    ]
