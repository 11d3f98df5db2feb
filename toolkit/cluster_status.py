"""`toolkit cluster status`: the cluster as its Kubernetes API sees it, in a few list calls and a get,
and one proxied request per GPU node.

Nodes (readiness, roles, k3s and NVIDIA driver versions, GPUs allocatable and held), the shells
running on it, the shells waiting in the cluster's queue (toolkit.gpu_queue: two more requests
where it has one), the lifecycle's last run (toolkit.lifecycle), and what the GPUs are doing: each
node's and each shell's utilisation and memory from dcgm-exporter (toolkit.gpu_metrics, one proxied
request per GPU node), and who holds GPUs while leaving them idle. The driver version comes from
GPU feature discovery's node label, else from dcgm-exporter's; without either the status says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from toolkit import capacity, gpu_metrics, gpu_queue, lifecycle, shells
from toolkit.gpu_types import PRODUCT_LABEL
from toolkit.kube import ApiError, Kube
from toolkit.shell_manifests import timestamp
from toolkit.shell_settings import platform

DRIVER_LABELS = ("nvidia.com/cuda.driver-version.full", "nvidia.com/cuda.driver.full")

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
    gpu_use: gpu_metrics.Use | None = None  # None: no exporter figures for this node


@dataclass(frozen=True)
class ShellGpuUse:
    user: str
    shell: str
    use: gpu_metrics.Use


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[NodeStatus]
    shells: list[shells.Shell]
    lifecycle: lifecycle.Record | None = None  # None: no run recorded
    lifecycle_trouble: str | None = None  # why its pod does not run, when it has stopped recording
    queue: list[gpu_queue.Waiting] | None = None  # in admission order; None: no queue
    queue_error: str = ""  # why the queue could not be read, where the cluster has one
    shell_gpu_use: list[ShellGpuUse] = field(default_factory=list)  # running shells the exporters saw
    gpu_use_unavailable: str = ""  # why no GPU figures were read; "" when they were
    gpu_use_unanswered: tuple[str, ...] = ()  # nodes whose exporter did not answer

    @property
    def idle_holders(self) -> list[ShellGpuUse]:
        """Running shells whose every GPU is at 0%: held, and left idle."""
        return [found for found in self.shell_gpu_use if found.use.idle]

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
            "gpu_use": {
                "unavailable": self.gpu_use_unavailable or None,
                "unanswered": list(self.gpu_use_unanswered),
                "shells": [asdict(found) for found in self.shell_gpu_use],
                "idle_holders": [f"{found.user}/{found.shell}" for found in self.idle_holders],
            },
        }


def _node_status(node: dict[str, Any], used: int, reading: gpu_metrics.Reading) -> NodeStatus:
    node_capacity = capacity.NodeCapacity.from_node(node)
    labels = node_capacity.labels
    info = (node.get("status") or {}).get("nodeInfo") or {}
    driver = next((labels[label] for label in DRIVER_LABELS if labels.get(label)), None)
    driver = driver or reading.drivers().get(node_capacity.name)
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
        gpu_use=reading.by_node(node_capacity.name),
    )


def collect(kube: Kube) -> ClusterStatus:
    nodes = kube.list("Node")["items"]
    used = capacity.gpus_held(kube).per_node
    reading = gpu_metrics.read(kube)
    statuses = [_node_status(node, used.get(node["metadata"]["name"], 0), reading) for node in nodes]
    all_shells = shells.list_shells(kube, None)
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
        shells=all_shells,
        lifecycle=record,
        lifecycle_trouble=lifecycle.diagnosis(kube, record, lifecycle.now_utc()),
        queue=queue,
        queue_error=queue_error,
        shell_gpu_use=_shell_gpu_use(all_shells, reading),
        gpu_use_unavailable=reading.unavailable,
        gpu_use_unanswered=reading.unanswered,
    )


def _shell_gpu_use(found: list[shells.Shell], reading: gpu_metrics.Reading) -> list[ShellGpuUse]:
    """Each running shell's GPUs as the exporters saw them: its pods are NAME-0 (to NAME-N-1 for
    a multi-node shell) in its namespace."""
    uses = []
    for shell in found:
        use = reading.by_pods(shell.namespace, shell.pods) if shell.status != "paused" else None
        if use is not None:
            uses.append(ShellGpuUse(shell.user, shell.name, use))
    return uses
