from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background by a non-interactive shell inherits SIGINT ignored, and so
    would every toolkit it starts: the Ctrl-C tests need it delivered, as at a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recorded_events() -> Any:
    def load(name: str) -> list[dict[str, Any]]:
        path = FIXTURES / "runner-events" / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    return load


@pytest.fixture
def fake_cluster() -> Any:
    """STAND-IN Kubernetes API server (tests/standins/kube_apiserver.py) shaped like a small GPU
    cluster: two 8-GPU H100 nodes, the shells' StorageClass and the nvidia RuntimeClass, and the
    domain its web terminals are served under."""
    from tests.standins.kube_apiserver import FakeApiServer

    server = FakeApiServer().start()
    server.seed("Namespace", {"metadata": {"name": "toolkit-system"}})
    labels = {"toolkit.dev/shells-config": "true"}
    server.seed("ConfigMap", {
        "metadata": {"name": "web", "namespace": "toolkit-system", "labels": labels},
        "data": {"webDomain": "shells.example.org"},
    })  # fmt: skip
    for name in ("gpu-1", "gpu-2"):
        server.add_gpu_node(name, labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    yield server
    server.stop()


@pytest.fixture
def admin_kubeconfig(fake_cluster: Any, tmp_path: Path) -> Path:
    return fake_cluster.kubeconfig(tmp_path / "admin.kubeconfig")  # type: ignore[no-any-return]


@pytest.fixture
def github_server() -> Any:
    """In GitHub's place: GET /USER.keys answers what `published[USER]` holds, 404 for others.

    Tests fill `published`; the toolkit's --github-url points here.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    published: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = published.get(self.path.strip("/").removesuffix(".keys"))
            self.send_response(404 if body is None else 200)
            self.end_headers()
            self.wfile.write(("Not Found" if body is None else body).encode())

        def log_message(self, *_: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    server.published = published  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
