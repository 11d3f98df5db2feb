"""Multi-node shells (`create --nodes`) on the STAND-IN API server, configured with shells_platform's
rendered settings and admission policies: one pod per node, placed together or not at all,
without a queue and through Kueue's (tests/standins/kueue.py), and one lifecycle for the group."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import eventually, gpu_cluster
from tests.unit.test_queue import kueue_configuration
from toolkit import kube, shells, users
from toolkit.errors import BadInputError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest
from toolkit.shell_wait import ShellFailed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
# What wekafs_csi writes beside shells_platform's settings: its volumes move between nodes.
STORAGE = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "storage",
        "namespace": "toolkit-system",
        "labels": {"toolkit.dev/shells-config": "true"},
    },
    "data": {"storageClassName": "shared-wekafs", "accessMode": "ReadWriteMany"},
}


def seeded(server: FakeApiServer, queued: bool) -> FakeApiServer:
    documents = render("shells_platform", "shells.yaml.j2", kueue_enabled=queued)
    documents += render("shells_platform", "toolkit-admission.yaml.j2", kueue_enabled=queued)
    if queued:
        documents = render("kueue", "kueue-queue.yaml.j2", kueue_enabled=True, kueue_gpus=16) + documents
    for document in [*documents, STORAGE]:
        server.seed(document["kind"], document)
    return server


@pytest.fixture(params=[False, True], ids=["without-a-queue", "queued"])
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[FakeApiServer, dict[str, kube.Kube]]]:
    queued = bool(request.param)
    options: dict[str, Any] = {"kueue": True, "kueue_config": kueue_configuration()} if queued else {}
    server = seeded(gpu_cluster("gpu-1", "gpu-2", **options), queued)
    admin = kube.connect(server.kubeconfig(tmp_path / "admin"))
    people = {"admin": admin}
    for person in ("alice", "bob"):
        users.add(admin, person, 16, tmp_path / person, None, None)
        people[person] = kube.connect(tmp_path / person)
    yield server, people
    server.stop()


def shell(user: str, name: str, gpus: int, nodes: int = 1, **changes: Any) -> CreateRequest:
    return CreateRequest(
        name=name, user=user, authorized_keys=(KEY,), gpus=gpus, nodes=nodes, timeout=20, **changes
    )


def placed(server: FakeApiServer, namespace: str) -> dict[str, str]:
    return {pod["metadata"]["name"]: pod["spec"].get("nodeName", "") for pod in server.list("Pod", namespace)}


def test_a_two_node_shell_runs_a_pod_on_each_node_and_lives_as_one(
    cluster: tuple[FakeApiServer, dict[str, kube.Kube]],
) -> None:
    server, people = cluster
    alice = people["alice"]
    phases: list[str] = []
    # Both pods would fit one node's 8 GPUs: the shell's anti-affinity puts them on two.
    created = create(alice, shell("alice", "big", gpus=4, nodes=2), phases.append)
    assert created.nodes in (("gpu-1", "gpu-2"), ("gpu-2", "gpu-1"))
    assert sorted(placed(server, "user-alice").values()) == ["gpu-1", "gpu-2"]
    assert "pod 2 of 2: ready" in phases
    found = shells.get_shell(alice, "alice", "big")
    assert (found.nodes, found.gpus, found.size, found.status) == (2, 4, "2x4", "ready")
    service = server.get("Service", "big", "user-alice")
    assert (
        service is not None and service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "big-0"
    )

    # Pause frees every node's GPUs; resume brings back a pod per node; delete removes it all.
    shells.pause(alice, "alice", "big")
    assert eventually(lambda: placed(server, "user-alice") == {})
    resumed = shells.resume(alice, "alice", "big", lambda _: None, 20)
    assert resumed.status == "ready" and sorted(placed(server, "user-alice").values()) == ["gpu-1", "gpu-2"]
    deleted = shells.delete(alice, "alice", "big", purge=True)
    assert {"StatefulSet/big", "Service/big", "Service/big-peers", "Secret/big-ssh"} <= set(deleted)
    assert eventually(lambda: server.list("Pod", "user-alice") == [])
    assert [s["metadata"]["name"] for s in server.list("Service", "user-alice")] == []


def test_a_group_that_only_partly_fits_waits_in_the_queue_or_is_refused_and_never_holds_gpus(
    cluster: tuple[FakeApiServer, dict[str, kube.Kube]],
) -> None:
    server, people = cluster
    queued = bool(server.list("ClusterQueue"))
    create(people["bob"], shell("bob", "small", gpus=1), lambda _: None)
    alice = people["alice"]
    if not queued:
        # No queue: one pod runs, the other finds no node; the create removes the whole group.
        with pytest.raises(ShellFailed) as failed:
            create(alice, shell("alice", "big", gpus=8, nodes=2), lambda _: None)
        assert "Insufficient nvidia.com/gpu" in str(failed.value)
        assert "its 2 pods run together or not at all, so none was kept" in str(failed.value)
    else:
        # Kueue admits the group only when all 16 GPUs are free: until then every pod is gated,
        # and the create waits, saying so.
        phases: list[str] = []
        made: list[Any] = []
        waiting = threading.Thread(
            target=lambda: made.append(create(alice, shell("alice", "big", gpus=8, nodes=2), phases.append)),
            daemon=True,
        )
        waiting.start()
        assert eventually(
            lambda: "queued: position 1, waiting for 16 GPUs (Ctrl-C leaves the queue)" in phases
        )
        pods = server.list("Pod", "user-alice")
        assert len(pods) == 2 and all(not pod["spec"].get("nodeName") for pod in pods)
        assert all(pod["spec"].get("schedulingGates") for pod in pods)
        shells.delete(people["bob"], "bob", "small", purge=True)
        waiting.join(30)
        assert made and made[0].nodes in (("gpu-1", "gpu-2"), ("gpu-2", "gpu-1"))
        shells.delete(alice, "alice", "big", purge=True)
    assert eventually(lambda: server.list("Pod", "user-alice") == [])
    assert server.list("StatefulSet", "user-alice") == [] and server.list("Service", "user-alice") == []


def test_what_no_two_nodes_could_hold_is_refused_before_anything_is_made(
    cluster: tuple[FakeApiServer, dict[str, kube.Kube]],
) -> None:
    server, people = cluster
    with pytest.raises(BadInputError, match="the shell needs 3 nodes with 8 GPUs each, and 2 ready node"):
        create(people["alice"], shell("alice", "big", gpus=8, nodes=3), lambda _: None)
    with pytest.raises(BadInputError, match="this cluster allows at most 4 nodes per shell"):
        create(people["alice"], shell("alice", "big", gpus=1, nodes=5), lambda _: None)
    assert server.get("Secret", "big-ssh", "user-alice") is None
    assert server.list("StatefulSet", "user-alice") == [] and server.list("Service", "user-alice") == []


def test_a_users_quota_counts_a_pod_and_a_scratch_disk_per_node_a_shell_may_span(
    cluster: tuple[FakeApiServer, dict[str, kube.Kube]],
) -> None:
    server, _ = cluster
    quota = server.get("ResourceQuota", "shells", "user-alice")
    assert quota is not None
    hard = quota["spec"]["hard"]
    # The role's 8 shells of at most 4 nodes: 32 pods and scratch disks, three Services a shell.
    assert (hard["pods"], hard["count/statefulsets.apps"], hard["services"]) == ("32", "8", "24")
    assert hard["limits.ephemeral-storage"] == "3276800Mi"


def test_a_group_that_cannot_resume_whole_is_paused_again_or_waits_whole_in_the_queue(
    cluster: tuple[FakeApiServer, dict[str, kube.Kube]],
) -> None:
    server, people = cluster
    alice = people["alice"]
    create(alice, shell("alice", "big", gpus=8, nodes=2), lambda _: None)
    shells.pause(alice, "alice", "big")
    assert eventually(lambda: placed(server, "user-alice") == {})
    create(people["bob"], shell("bob", "small", gpus=1), lambda _: None)
    if not server.list("ClusterQueue"):
        # Without a queue one pod started: it gives its GPUs back with the other.
        with pytest.raises(ShellFailed) as failed:
            shells.resume(alice, "alice", "big", lambda _: None, 3)
        assert str(failed.value).endswith("; paused again, since its 2 pods run together or not at all")
        assert shells.get_shell(alice, "alice", "big").replicas == 0
        assert eventually(lambda: placed(server, "user-alice") == {})
        return
    # Kueue holds both pods, gated, holding nothing, until the group fits: a failed wait would keep
    # its place (_held_by_the_queue), and the resume runs it once bob's shell is gone.
    resumed: list[shells.Shell] = []
    waiting = threading.Thread(
        target=lambda: resumed.append(shells.resume(alice, "alice", "big", lambda _: None, 20)), daemon=True
    )
    waiting.start()
    pods = lambda: server.list("Pod", "user-alice")  # noqa: E731
    assert eventually(lambda: len(pods()) == 2 and all(p["spec"].get("schedulingGates") for p in pods()))
    assert placed(server, "user-alice") == {"big-0": "", "big-1": ""}
    assert shells._held_by_the_queue(alice, shells.get_shell(alice, "alice", "big"))
    shells.delete(people["bob"], "bob", "small", purge=True)
    waiting.join(30)
    assert resumed and resumed[0].status == "ready"
    assert sorted(placed(server, "user-alice").values()) == ["gpu-1", "gpu-2"]
    assert not shells._held_by_the_queue(alice, resumed[0])


def test_a_groups_pods_prefer_nodes_of_one_nvlink_domain(tmp_path: Path) -> None:
    """gpu-2, of another NVLink domain (GPU feature discovery's nvidia.com/gpu.clique), comes before
    gpu-3 in the cluster's order; the group's second pod joins its first in gpu-1's domain."""
    server = FakeApiServer().start()
    try:
        for name, clique in (("gpu-1", "fabric-a.1"), ("gpu-2", "fabric-a.2"), ("gpu-3", "fabric-a.1")):
            labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.clique": clique}
            server.add_gpu_node(name, labels=labels)
        server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
        server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
        seeded(server, queued=False)
        admin = kube.connect(server.kubeconfig(tmp_path / "admin"))
        users.add(admin, "alice", 16, tmp_path / "alice", None, None)
        alice = kube.connect(tmp_path / "alice")
        created = create(alice, shell("alice", "big", gpus=8, nodes=2), lambda _: None)
        assert created.nodes == ("gpu-1", "gpu-3")
    finally:
        server.stop()
