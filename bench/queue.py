"""The GPU queue: 100 shells for 20 users on 4 nodes of 8 GPUs, against the STAND-IN API server
running its Kueue model (tests/standins/kueue.py) with role kueue's configuration and
ClusterQueue, and 20 ms added to every request.

- requests per queued create (`--no-wait`): what the toolkit asks of the API server;
- from a GPU freeing up (a running shell deleted) to the first waiting shell's own `create`
  returning it ready, the median of 5: what a user at the head of the queue waits for.

The stand-in's controllers act within tens of milliseconds; a real Kueue's admission cycle and a
real kubelet's start add their own time to the second figure.

Run: .venv/bin/python -m bench.queue
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube, shell_create, shells, users
from toolkit.shell_plan import CreateRequest

LATENCY = 0.020
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa bench@laptop"
NODES, GPUS_PER_NODE, USERS, SHELLS, GPUS_PER_SHELL = 4, 8, 20, 100, 4


def queued_cluster() -> FakeApiServer:
    chart = render("kueue", "kueue.yaml.j2", kueue_enabled=True, _kueue_chart={"content": ""})[0]
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    configuration = yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"])
    server = FakeApiServer(kueue=True, kueue_config=configuration).start()
    for index in range(NODES):
        server.add_gpu_node(f"gpu-{index + 1}", gpus=GPUS_PER_NODE)
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    documents = render("kueue", "kueue-queue.yaml.j2", kueue_enabled=True, kueue_gpus=NODES * GPUS_PER_NODE)
    documents += render("shells_platform", "shells.yaml.j2", kueue_enabled=True)
    for document in documents:
        server.seed(document["kind"], document)
    return server


def request(user: str, name: str, **changes: Any) -> CreateRequest:
    return CreateRequest(
        name=name, user=user, authorized_keys=(KEY,), gpus=GPUS_PER_SHELL, timeout=60, **changes
    )


def next_in_line(connection: kube.Kube, user: str, free_gpus: Callable[[], Any]) -> float:
    """Seconds from `free_gpus` to the shell waiting at the head of the queue, in its own create,
    coming back ready."""
    phases: list[str] = []
    created: dict[str, shell_create.CreatedShell] = {}

    def wait_in_line() -> None:
        created["shell"] = shell_create.create(connection, request(user, "head"), phases.append)

    waiter = threading.Thread(target=wait_in_line, daemon=True)
    waiter.start()
    while not any(phase.startswith("queued: position 1") for phase in phases):
        time.sleep(0.05)
    freed = time.monotonic()
    free_gpus()
    waiter.join(timeout=120)
    elapsed = time.monotonic() - freed
    assert created["shell"].status == "ready", phases
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        server = queued_cluster()
        try:
            admin = kube.connect(server.kubeconfig(root / "admin"))
            people = {}
            for index in range(USERS):
                user = f"user{index:02d}"
                users.add(admin, user, NODES * GPUS_PER_NODE, root / user, None, None)
                people[user] = kube.connect(root / user)
            names = list(people)
            # Shells in rounds, one per user each: the first eight run, the rest queue.
            order = [(names[i % USERS], f"s{i // USERS}") for i in range(SHELLS)]
            server.behaviour.latency = LATENCY
            counts = []
            for user, name in order:
                server.reset_request_log()
                created = shell_create.create(people[user], request(user, name, wait=False), lambda _: None)
                if created.status == "queued":
                    counts.append(len(server.requests))
            print(f"{SHELLS} shells for {USERS} users on {NODES} nodes of {GPUS_PER_NODE} GPUs, "
                  f"{LATENCY * 1000:.0f} ms per request:")  # fmt: skip
            print(f"  {len(counts)} queued; requests per queued create (--no-wait): "
                  f"min {min(counts)}, max {max(counts)}")  # fmt: skip
            running = [(u, n) for u, n in order if shells.get_shell(admin, u, n).status == "ready"]
            for user, name in order:  # the rest leave the queue: each round's waiting shell is next
                if (user, name) not in running:
                    shells.delete(people[user], user, name, purge=True)
            waits = []
            for round_ in range(5):
                user = f"late{round_}"
                users.add(admin, user, NODES * GPUS_PER_NODE, root / user, None, None)
                people[user] = kube.connect(root / user)
                freed = running.pop(0)
                free = functools.partial(shells.delete, people[freed[0]], freed[0], freed[1], purge=True)
                waits.append(next_in_line(people[user], user, free))
                running.append((user, "head"))
            each = ", ".join(f"{wait:.2f}" for wait in waits)
            median = statistics.median(waits)
            print(f"  GPUs freed to the next shell ready in its own create: median {median:.2f}s ({each})")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
