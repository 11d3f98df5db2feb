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

import math
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.kube import Kube

EXPORTER_NAMESPACE = "toolkit-monitoring"
EXPORTER_SELECTOR = "app.kubernetes.io/name=dcgm-exporter"
EXPORTER_PORT = 9400
PAGE_TIMEOUT = 5  # seconds for one node's page: a hung exporter must not hold up a lifecycle run
UTILISATION = "DCGM_FI_DEV_GPU_UTIL"  # percent of the last sample period a kernel ran
MEMORY_USED = "DCGM_FI_DEV_FB_USED"  # MiB
MEMORY_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
# A shell's figures as the lifecycle publishes them on its StatefulSet for its owner to read:
# "TIME UTILISATION% MEMORY_USED_MIB MEMORY_TOTAL_MIB GPUS". Its owner can write the annotation too,
# so it is read strictly, and only ever shown to them: operators read the exporters.
PUBLISHED = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (\d{1,3}) (\d{1,9}) (\d{1,9}) (\d{1,3})")
STALE_AFTER = timedelta(minutes=10)  # the lifecycle publishes every minute, or every 5 unchanged
_SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass
class Gpu:
    """One GPU as its node's exporter last saw it."""

    node: str
    index: str
    uuid: str
    instance: str = ""  # a MIG instance's GPU_I_ID: each is its own device, held by its own pod
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

    def published(self, at: datetime) -> str:
        """The annotation's text; "" when there is no utilisation to publish."""
        if self.utilisation is None:
            return ""
        used, total = round(self.memory_used or 0), round(self.memory_total or 0)
        return f"{at:%Y-%m-%dT%H:%M:%SZ} {round(self.utilisation)} {used} {total} {self.gpus}"

    def describe(self) -> str:
        """e.g. "87% · 61/160 GiB"."""
        if self.utilisation is None:
            return "n/a"
        memory = ""
        if self.memory_used is not None and self.memory_total:
            memory = f" · {self.memory_used / 1024:.0f}/{self.memory_total / 1024:.0f} GiB"
        return f"{self.utilisation:.0f}%{memory}"


def read_published(text: object) -> tuple[datetime, Use] | None:
    """A published annotation, or None when it is not one (absent, or written otherwise)."""
    found = PUBLISHED.fullmatch(str(text)) if text is not None else None
    if not found:
        return None
    utilisation, used, total, gpus = (int(found[i]) for i in range(2, 6))
    if utilisation > 100 or used > total or not gpus:
        return None
    at = datetime.strptime(found[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return at, Use(gpus=gpus, utilisation=utilisation, memory_used=used, memory_total=total)


@dataclass(frozen=True)
class Reading:
    """Every GPU the exporters reported, or why there are none."""

    gpus: list[Gpu] = field(default_factory=list)
    unavailable: str = ""  # why nothing was read; "" when the exporters answered
    unanswered: tuple[str, ...] = ()  # nodes whose exporter did not answer

    def by_pod(self, namespace: str, pod: str) -> Use | None:
        return self.by_pods(namespace, [pod])

    def by_pods(self, namespace: str, pods: list[str]) -> Use | None:
        """The GPUs the pods hold together: a multi-node shell's, across its nodes."""
        held = [g for g in self.gpus if g.namespace == namespace and g.pod in pods]
        return Use.of(held) if held else None

    def by_node(self, node: str) -> Use | None:
        found = [g for g in self.gpus if g.node == node]
        return Use.of(found) if found else None

    def drivers(self) -> dict[str, str]:
        return {g.node: g.driver for g in self.gpus if g.driver}


def parse(text: str, node: str) -> list[Gpu]:
    """The GPUs (and MIG instances) in one exporter's page (Prometheus text format), by UUID and
    instance: a line the format does not allow (a label twice, a value not a finite number within
    its field's range), or a field the toolkit does not read, is passed over."""
    gpus: dict[tuple[str, str], Gpu] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sample = _SAMPLE.fullmatch(line)
        if not sample or sample[1] not in (UTILISATION, MEMORY_USED, MEMORY_FREE):
            continue
        labels = _labels(sample[2] or "")
        uuid = labels.get("UUID") or labels.get("uuid") or ""
        try:
            value = float(sample[3])
        except ValueError:
            continue
        most = 100 if sample[1] == UTILISATION else 2**40
        if not uuid or not math.isfinite(value) or not 0 <= value <= most:
            continue
        key = (uuid, labels.get("GPU_I_ID", ""))
        gpu = gpus.setdefault(key, Gpu(node=node, index=labels.get("gpu", ""), uuid=uuid, instance=key[1]))
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
    return sorted(gpus.values(), key=lambda g: (len(g.index), g.index, g.instance))


def _labels(text: str) -> dict[str, str]:
    """A sample's labels; none at all when they are not well formed, or name a label twice."""
    labels, position = {}, 0
    while position < len(text):
        found = _LABEL.match(text, position)
        if not found or found.end() == position or found[1] in labels:
            return {}
        labels[found[1]] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], found[2])
        position = found.end()
    return labels


def read(kube: Kube) -> Reading:
    """Each GPU node's exporter, through the API server's pods proxy, all at once and each within a
    few seconds: a node down or an exporter stuck is named in `unanswered`, never an error."""
    try:
        pods = kube.list("Pod", EXPORTER_NAMESPACE, labels=EXPORTER_SELECTOR)["items"]
    except ToolkitError as error:
        return Reading(unavailable=f"dcgm-exporter's pods can't be listed ({error})")
    serving: dict[str, dict[str, Any]] = {}
    for pod in pods:
        conditions = {
            c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []
        }
        node = (pod.get("spec") or {}).get("nodeName")
        # One page per node: a pod on its way out, or not ready, is not read beside its successor.
        if node and not pod["metadata"].get("deletionTimestamp") and conditions.get("Ready") == "True":
            serving[node] = pod
    if not serving:
        return Reading(
            unavailable=f"no dcgm-exporter runs in namespace {EXPORTER_NAMESPACE} (the nvidia_device_plugin "
            "role deploys it on GPU nodes unless nvidia_device_plugin_dcgm_exporter is false)"
        )

    def page(node: str) -> list[Gpu] | None:
        name = serving[node]["metadata"]["name"]
        path = f"/api/v1/namespaces/{EXPORTER_NAMESPACE}/pods/{name}:{EXPORTER_PORT}/proxy/metrics"
        try:
            return parse(kube.text(path, timeout=PAGE_TIMEOUT), node)
        except ToolkitError:
            return None

    with ThreadPoolExecutor(max_workers=min(16, len(serving))) as pool:
        pages = dict(zip(serving, pool.map(page, serving), strict=True))
    return Reading(
        gpus=[gpu for found in pages.values() if found for gpu in found],
        unanswered=tuple(sorted(node for node, found in pages.items() if found is None)),
    )
