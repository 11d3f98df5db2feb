"""What the GPUs are doing, from NVIDIA's dcgm-exporter on each GPU node.

The exporter serves Prometheus text at :9400/metrics, one line per GPU and field, labelled with
the GPU (gpu, UUID, modelName, Hostname) and, for a GPU a pod holds, that pod (namespace, pod,
container), as its render_metrics.go template writes them. The toolkit reads each node's exporter
through the API server's pods proxy (`pods/NAME:9400/proxy/metrics`), with the operator's
credentials: one request per GPU node, no Prometheus needed, and nothing a user's kubeconfig may
do (the proxy would show them every tenant's pods). The nvidia_device_plugin role deploys the
exporter (templates/dcgm-exporter.yaml.j2). Without it the figures are "n/a", and `unavailable`
says why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from toolkit.kube import ApiError, Kube

EXPORTER_NAMESPACE = "toolkit-monitoring"
EXPORTER_SELECTOR = "app.kubernetes.io/name=dcgm-exporter"
EXPORTER_PORT = 9400
UTILISATION = "DCGM_FI_DEV_GPU_UTIL"  # percent of the last sample period a kernel ran
MEMORY_USED = "DCGM_FI_DEV_FB_USED"  # MiB
MEMORY_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
_SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass
class Gpu:
    """One GPU as its node's exporter last saw it."""

    node: str
    index: str
    uuid: str
    model: str = ""
    utilisation: float | None = None  # percent
    memory_used: float | None = None  # MiB
    memory_free: float | None = None  # MiB
    driver: str = ""
    namespace: str = ""  # the pod holding it, if one does
    pod: str = ""

    @property
    def memory_total(self) -> float | None:
        if self.memory_used is None or self.memory_free is None:
            return None
        return self.memory_used + self.memory_free


@dataclass(frozen=True)
class Use:
    """What some GPUs (one pod's, or one node's) are doing: the mean utilisation, the memory."""

    gpus: int
    utilisation: float | None
    memory_used: float | None  # MiB
    memory_total: float | None  # MiB

    @classmethod
    def of(cls, gpus: Iterable[Gpu]) -> Use:
        found = list(gpus)
        utilisations = [g.utilisation for g in found if g.utilisation is not None]
        used = [g.memory_used for g in found if g.memory_used is not None]
        totals = [t for t in (g.memory_total for g in found) if t is not None]
        return cls(
            gpus=len(found),
            utilisation=sum(utilisations) / len(utilisations) if utilisations else None,
            memory_used=sum(used) if used else None,
            memory_total=sum(totals) if totals else None,
        )

    @property
    def idle(self) -> bool:
        return self.utilisation is not None and self.utilisation == 0

    def describe(self) -> str:
        """e.g. "87% · 61/160 GiB"."""
        if self.utilisation is None:
            return "n/a"
        memory = ""
        if self.memory_used is not None and self.memory_total:
            memory = f" · {self.memory_used / 1024:.0f}/{self.memory_total / 1024:.0f} GiB"
        return f"{self.utilisation:.0f}%{memory}"


@dataclass(frozen=True)
class Reading:
    """Every GPU the exporters reported, or why there are none."""

    gpus: list[Gpu] = field(default_factory=list)
    unavailable: str = ""  # why nothing was read; "" when the exporters answered
    unanswered: tuple[str, ...] = ()  # nodes whose exporter did not answer

    def by_pod(self, namespace: str, pod: str) -> Use | None:
        held = [g for g in self.gpus if (g.namespace, g.pod) == (namespace, pod)]
        return Use.of(held) if held else None

    def by_node(self, node: str) -> Use | None:
        found = [g for g in self.gpus if g.node == node]
        return Use.of(found) if found else None

    def drivers(self) -> dict[str, str]:
        return {g.node: g.driver for g in self.gpus if g.driver}


def parse(text: str, node: str) -> list[Gpu]:
    """The GPUs in one exporter's page (Prometheus text format), by UUID: a line the format does not
    allow, or a field the toolkit does not read, is passed over."""
    gpus: dict[str, Gpu] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sample = _SAMPLE.fullmatch(line)
        if not sample or sample[1] not in (UTILISATION, MEMORY_USED, MEMORY_FREE):
            continue
        labels = _labels(sample[2] or "")
        uuid = labels.get("UUID") or labels.get("uuid") or ""
        if not uuid:
            continue
        try:
            value = float(sample[3])
        except ValueError:
            continue
        gpu = gpus.setdefault(uuid, Gpu(node=node, index=labels.get("gpu", ""), uuid=uuid))
        gpu.model = labels.get("modelName", gpu.model)
        gpu.driver = labels.get("DCGM_FI_DRIVER_VERSION", gpu.driver)
        if labels.get("pod"):
            gpu.namespace, gpu.pod = labels.get("namespace", ""), labels["pod"]
        if sample[1] == UTILISATION:
            gpu.utilisation = value
        elif sample[1] == MEMORY_USED:
            gpu.memory_used = value
        else:
            gpu.memory_free = value
    return sorted(gpus.values(), key=lambda g: (len(g.index), g.index))


def _labels(text: str) -> dict[str, str]:
    labels, position = {}, 0
    while position < len(text):
        found = _LABEL.match(text, position)
        if not found or found.end() == position:
            return {}
        labels[found[1]] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], found[2])
        position = found.end()
    return labels


def read(kube: Kube) -> Reading:
    """Each GPU node's exporter, through the API server's pods proxy."""
    try:
        pods = kube.list("Pod", EXPORTER_NAMESPACE, labels=EXPORTER_SELECTOR)["items"]
    except ApiError as error:
        return Reading(unavailable=f"dcgm-exporter's pods can't be listed ({error})")
    running = [
        pod
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Running" and pod["spec"].get("nodeName")
    ]
    if not running:
        return Reading(
            unavailable=f"no dcgm-exporter runs in namespace {EXPORTER_NAMESPACE} (the nvidia_device_plugin "
            "role deploys it on GPU nodes unless nvidia_device_plugin_dcgm_exporter is false)"
        )
    gpus: list[Gpu] = []
    unanswered = []
    for pod in running:
        name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
        path = f"/api/v1/namespaces/{EXPORTER_NAMESPACE}/pods/{name}:{EXPORTER_PORT}/proxy/metrics"
        try:
            gpus += parse(kube.text(path), node)
        except ApiError:
            unanswered.append(node)
    return Reading(gpus=gpus, unanswered=tuple(sorted(unanswered)))
