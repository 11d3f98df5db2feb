"""`toolkit shell` against the STAND-IN API server with 20 ms added to every request.

- create until Ready: every request listed, with the count (target <= 12: one apply per object,
  the validation reads, one watch; never a poll loop) and the wall time;
- list with 1000 shells present (target < 1 s, one list call);
- 50 creates at once, for 50 users (all must succeed, no conflicts).

Run: .venv/bin/python -m bench.shell_api
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube, shell_create, shell_manifests, shells, users
from toolkit.capacity import NodeCapacity
from toolkit.shell_plan import ClusterFacts, CreateRequest, plan_create
from toolkit.shell_settings import Platform

LATENCY = 0.020
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa bench@laptop"


def cluster(nodes: int) -> FakeApiServer:
    server = FakeApiServer()
    for index in range(nodes):
        server.add_gpu_node(f"gpu-{index + 1}")
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    return server


def create_until_ready(root: Path) -> None:
    with cluster(2) as server:
        admin = kube.connect(server.kubeconfig(root / "admin"))
        users.add(admin, "alice", 8, root / "alice", None, None)
        alice = kube.connect(root / "alice")
        server.behaviour.latency = LATENCY
        server.reset_request_log()
        started = time.monotonic()
        shell_create.create(
            alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None
        )
        elapsed = time.monotonic() - started
        print(f"shell create until Ready, {LATENCY * 1000:.0f} ms per request:")
        for method, path in server.requests:
            print(f"  {method:6} {path}")
        verdict = "ok" if len(server.requests) <= 12 else "OVER TARGET"
        print(f"  {len(server.requests)} requests (target <= 12: {verdict}), {elapsed:.2f}s")


def list_thousand(root: Path) -> None:
    with cluster(1) as server:
        admin = kube.connect(server.kubeconfig(root / "admin"))
        # A quota for the thousand shells measured (the site's default holds a user to 8).
        users.add(admin, "alice", 8, root / "alice", None, None, shells=1000)
        spec_request = CreateRequest(name="template", user="alice", authorized_keys=(KEY,))
        node = NodeCapacity.from_node(server.list("Node")[0])
        now = datetime.now(UTC)
        facts = ClusterFacts(
            settings=Platform(), nodes=(node,), quota={"spec": {"hard": {"requests.nvidia.com/gpu": "8"}}},
            storage_class="shared-wekafs", storage_class_exists=True, runtime_class="nvidia",
            runtime_class_exists=True, shell_exists=False,
        )  # fmt: skip
        spec = plan_create(spec_request, facts, now).spec
        for index in range(1000):
            sts = shell_manifests.statefulset(replace(spec, name=f"shell-{index:04d}"))
            sts["spec"]["replicas"] = 0  # paused: the list is what is measured, not 1000 pods
            server.seed("StatefulSet", sts)
        server.behaviour.latency = LATENCY
        server.reset_request_log()
        started = time.monotonic()
        found = shells.list_shells(admin, "alice")
        elapsed = time.monotonic() - started
        verdict = "ok" if elapsed < 1 and len(server.requests) == 1 else "OVER TARGET"
        print(
            f"shell list with {len(found)} shells: {len(server.requests)} request(s), {elapsed:.2f}s "
            f"(target < 1 s, one call: {verdict})"
        )


def fifty_at_once(root: Path) -> None:
    with cluster(7) as server:
        admin = kube.connect(server.kubeconfig(root / "admin"))
        for index in range(50):
            users.add(admin, f"user{index:02d}", 1, root / f"user{index:02d}", None, None)
        server.behaviour.latency = LATENCY

        def create(index: int) -> str:
            connection = kube.connect(root / f"user{index:02d}")
            request = CreateRequest(name="train", user=f"user{index:02d}", authorized_keys=(KEY,))
            try:
                shell_create.create(connection, request, lambda _: None)
            except Exception as error:  # counted and shown: every failure matters here
                return f"{type(error).__name__}: {error}"
            return "ok"

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(create, range(50)))
        elapsed = time.monotonic() - started
        failures = [r for r in results if r != "ok"]
        ready = 50 - len(failures)
        print(f"50 concurrent creates for 50 users: {ready} ready, {len(failures)} failed, {elapsed:.2f}s")
        for failure in failures[:5]:
            print(f"  {failure}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-api-") as scratch:
        root = Path(scratch)
        for step in (create_until_ready, list_thousand, fifty_at_once):
            directory = root / step.__name__
            directory.mkdir()
            step(directory)


if __name__ == "__main__":
    main()
