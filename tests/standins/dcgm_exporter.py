"""STAND-IN for NVIDIA's dcgm-exporter on one GPU node: its /metrics page, as the real one renders it.

It follows dcgm-exporter 4.5.3-4.8.2 (github.com/NVIDIA/dcgm-exporter, looked up with `fetch`):
- the page is `internal/pkg/rendermetrics/render_metrics.go`'s gpuMetricsFormat: per field a
  `# HELP` and `# TYPE` line, then one sample per GPU,
  `FIELD{gpu="N",UUID="...",pci_bus_id="...",device="nvidiaN",modelName="...",Hostname="..."`,
  then the label fields (`DCGM_FI_DRIVER_VERSION`, a `label` counter), then the Kubernetes
  attributes of the pod holding the GPU (`container`, `namespace`, `pod`, from the kubelet's
  pod-resources API; empty strings for a GPU no pod holds, as the README's sample shows), each
  set in Go's sorted map order, `} VALUE`;
- the fields and their help texts are those of `etc/default-counters.csv` the toolkit reads:
  DCGM_FI_DEV_GPU_UTIL (gauge, %), DCGM_FI_DEV_FB_FREE and DCGM_FI_DEV_FB_USED (gauge, MiB), and
  DCGM_FI_DEV_SM_CLOCK, which it does not read;
- `Hostname` is the exporter's own pod name's node, as NODE_NAME gives it.
The GPUs (UUIDs, bus ids, model, driver) are a real HGX H100's: tests/fixtures/nvidia/
h100-hgx8-k8s-test-infra-nvidia-smi-q-x.xml. It does not model: MIG instances, profiling (DCP)
fields, the other default fields, NVLink or NVSwitch pages, or sampling over time (a GPU's
figures are what the test sets).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

H100_HGX = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "nvidia"
    / "h100-hgx8-k8s-test-infra-nvidia-smi-q-x.xml"
)
FIELDS = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
)


@dataclass
class Gpu:
    index: int
    uuid: str
    bus_id: str
    model: str
    memory_total: int  # MiB
    utilisation: int = 0
    memory_used: int = 0
    holder: tuple[str, str, str] | None = None  # (namespace, pod, container)


class DcgmExporter:
    def __init__(self, node: str, gpus: int = 8) -> None:
        root = ElementTree.parse(H100_HGX).getroot()
        self.node = node
        self.driver = root.findtext("driver_version") or ""
        self.gpus = [
            Gpu(
                index=int(gpu.findtext("minor_number") or 0),
                uuid=gpu.findtext("uuid") or "",
                bus_id=gpu.get("id") or "",
                model=gpu.findtext("product_name") or "",
                memory_total=int((gpu.findtext("fb_memory_usage/total") or "0").split()[0]),
            )
            for gpu in root.findall("gpu")[:gpus]
        ]

    def hold(self, index: int, namespace: str, pod: str, utilisation: int, memory_used: int) -> None:
        """A pod's container holds GPU `index`, busy and filled so."""
        gpu = self.gpus[index]
        gpu.holder, gpu.utilisation, gpu.memory_used = (namespace, pod, "shell"), utilisation, memory_used

    def metrics(self) -> str:
        lines = []
        for field, kind, help_text in FIELDS:
            lines += [f"# HELP {field} {help_text}", f"# TYPE {field} {kind}"]
            for gpu in self.gpus:
                value = {
                    "DCGM_FI_DEV_SM_CLOCK": 1980 if gpu.utilisation else 345,
                    "DCGM_FI_DEV_GPU_UTIL": gpu.utilisation,
                    "DCGM_FI_DEV_FB_FREE": gpu.memory_total - gpu.memory_used,
                    "DCGM_FI_DEV_FB_USED": gpu.memory_used,
                }[field]
                namespace, pod, container = gpu.holder or ("", "", "")
                lines.append(
                    f'{field}{{gpu="{gpu.index}",UUID="{gpu.uuid}",pci_bus_id="{gpu.bus_id}",'
                    f'device="nvidia{gpu.index}",modelName="{gpu.model}",Hostname="{self.node}",'
                    f'DCGM_FI_DRIVER_VERSION="{self.driver}",container="{container}",'
                    f'namespace="{namespace}",pod="{pod}"}} {value}'
                )
        return "\n".join(lines) + "\n"


def serve_exporters(server: Any, *nodes: str) -> dict[str, DcgmExporter]:
    """A dcgm-exporter pod on each node of a stand-in API server, as the nvidia_device_plugin role's
    DaemonSet makes them, answering through the server's pods proxy; by node."""
    namespace, name_label = "toolkit-monitoring", {"app.kubernetes.io/name": "dcgm-exporter"}
    if server.get("Namespace", namespace) is None:
        server.seed("Namespace", {"metadata": {"name": namespace}})
    found = {}
    for node in nodes:
        exporter = found[node] = DcgmExporter(node)
        name = f"dcgm-exporter-{node}"
        server.seed("Pod", {
            "metadata": {"name": name, "namespace": namespace, "labels": name_label},
            "spec": {"nodeName": node, "containers": [{"name": "dcgm-exporter", "image": "dcgm-exporter"}]},
        })  # fmt: skip
        server.proxied[(namespace, name, 9400)] = lambda path, e=exporter: (
            e.metrics() if path == "/metrics" else ""
        )
    # The stand-in's kubelet runs the pods, as it runs any: they are ready once it has.
    deadline = time.monotonic() + 10
    while not all(_ready(server.get("Pod", f"dcgm-exporter-{node}", namespace)) for node in nodes):
        assert time.monotonic() < deadline, "the stand-in exporters' pods did not turn Ready"
        time.sleep(0.05)
    return found


def _ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
