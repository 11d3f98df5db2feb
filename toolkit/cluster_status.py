"""`toolkit cluster status`: the cluster as its Kubernetes API sees it, in three list calls and a get.

Nodes (readiness, roles, k3s and NVIDIA driver versions, GPUs allocatable and held), the shells
running on it, the shells waiting in the cluster's queue (toolkit.gpu_queue: two more requests
where it has one), and the lifecycle's last run (toolkit.lifecycle). The driver version comes from
GPU feature discovery's node label when it is deployed; without it the API has no driver version
and the status says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from toolkit import capacity, gpu_queue, lifecycle, shells
from toolkit.kube import ApiError, Kube
from toolkit.shell_manifests import timestamp
from toolkit.shell_settings import platform

DRIVER_LABELS = ("nvidia.com/cuda.driver-version.full", "nvidia.com/cuda.driver.full")
PRODUCT_LABEL = "nvidia.com/gpu.product"
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    ready: bool
    schedulable: bool
    role: str  # server or agent
    k3s_version: str
    driver_version: str | None
    gpu_product: str | None
    gpus: int
    gpus_used: int


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[NodeStatus]
    shells: list[shells.Shell]
    lifecycle: lifecycle.Record | None = None  # None: no run recorded
    lifecycle_trouble: str | None = None  # why its pod does not run, when it has stopped recording
    queue: list[gpu_queue.Waiting] | None = None  # in admission order; None: no queue
    queue_error: str = ""  # why the queue could not be read, where the cluster has one

    @property
    def gpus(self) -> int:
        return sum(node.gpus for node in self.nodes)

    @property
    def gpus_used(self) -> int:
        return sum(node.gpus_used for node in self.nodes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(node) for node in self.nodes],
            "gpus": {"allocatable": self.gpus, "used": self.gpus_used},
            "shells": [shell.as_dict() for shell in self.shells],
            "queue": None
            if self.queue is None
            else [
                {**asdict(waiting), "since": timestamp(waiting.since) if waiting.since else None}
                for waiting in self.queue
            ],
            "queue_error": self.queue_error or None,
            "lifecycle": None
            if self.lifecycle is None
            else {
                **asdict(self.lifecycle),
                "finished": timestamp(self.lifecycle.finished) if self.lifecycle.finished else None,
            },
            "lifecycle_trouble": self.lifecycle_trouble,
        }


def _node_status(node: dict[str, Any], used: int) -> NodeStatus:
    node_capacity = capacity.NodeCapacity.from_node(node)
    labels = node_capacity.labels
    info = (node.get("status") or {}).get("nodeInfo") or {}
    driver = next((labels[label] for label in DRIVER_LABELS if labels.get(label)), None)
    return NodeStatus(
        name=node_capacity.name,
        ready=node_capacity.ready,
        schedulable=node_capacity.schedulable,
        role="server" if labels.get(CONTROL_PLANE) == "true" else "agent",
        k3s_version=info.get("kubeletVersion", ""),
        driver_version=driver,
        gpu_product=labels.get(PRODUCT_LABEL),
        gpus=node_capacity.gpus,
        gpus_used=used,
    )


def collect(kube: Kube) -> ClusterStatus:
    nodes = kube.list("Node")["items"]
    used = capacity.gpus_held(kube).per_node
    statuses = [_node_status(node, used.get(node["metadata"]["name"], 0)) for node in nodes]
    settings = platform(kube)
    record = lifecycle.last_run(kube)
    queue, queue_error = None, ""
    if settings.cluster_queue:
        try:
            queue = gpu_queue.waiting(kube, settings.cluster_queue)
        except ApiError as error:  # Kueue down or gone: the rest of the status still stands
            queue_error = str(error)
    return ClusterStatus(
        nodes=sorted(statuses, key=lambda n: (n.role != "server", n.name)),
        shells=shells.list_shells(kube, None),
        lifecycle=record,
        lifecycle_trouble=lifecycle.diagnosis(kube, record, lifecycle.now_utc()),
        queue=queue,
        queue_error=queue_error,
    )
