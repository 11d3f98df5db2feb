"""What several test modules share: loading a script that ships outside the package (the image's
agent, the capacity publisher) as a module, and waiting for something that happens in the
background (a shell's agent acting on its Secret)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.standins.kube_apiserver import FakeApiServer


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def eventually(check: Callable[[], bool], timeout: float = 30, every: float = 0.25) -> bool:
    """Whether `check` came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def gpu_cluster(*nodes: str, **server_options: Any) -> FakeApiServer:
    """A started STAND-IN API server shaped like a GPU cluster before shells_platform: H100 nodes
    of 8 GPUs each, the shells' StorageClass and the nvidia RuntimeClass."""
    from tests.standins.kube_apiserver import FakeApiServer

    server = FakeApiServer(**server_options).start()
    for name in nodes or ("gpu-1",):
        server.add_gpu_node(name, labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    return server


def service_account_kube(
    server: FakeApiServer, admin: Any, namespace: str, account: str, kubeconfig: Path
) -> Any:
    """A connection as a ServiceAccount, as its pod would have one: a token Secret the stand-in
    fills in, written into a kubeconfig of its own."""
    import base64

    from toolkit import kube

    secret_name = f"{account}-token"
    admin.create({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": secret_name, "namespace": namespace,
                     "annotations": {"kubernetes.io/service-account.name": account}},
    })  # fmt: skip

    def token() -> str:
        found = admin.get("Secret", secret_name, namespace) or {}
        return base64.b64decode((found.get("data") or {}).get("token", "")).decode()

    assert eventually(lambda: bool(token()))
    return kube.connect(server.kubeconfig(kubeconfig, token=token()))
