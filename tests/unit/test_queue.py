"""Shells that wait their turn, on the STAND-IN API server running its Kueue model
(tests/standins/kueue.py): places shown right at every step, admission in order as GPUs free
up, cancels that leave nothing, the lifetime that starts when a shell runs, and --no-queue."""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests import kueue_schemas
from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import eventually, gpu_cluster, service_account_kube
from toolkit import cluster_status, gpu_queue, kube, lifecycle, shells, users
from toolkit import shell_manifests as manifests
from toolkit.errors import BadInputError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest
from toolkit.shell_settings import platform
from toolkit.shell_wait import ShellFailed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
PEOPLE = ("alice", "bob", "carol", "dave")


def queued_cluster_documents() -> list[dict[str, Any]]:
    """What cluster up writes with kueue_enabled: role kueue's ClusterQueue of one node's 8 GPUs,
    and shells_platform's settings (naming the queue), admission policies and lifecycle."""
    documents = render("kueue", "kueue-queue.yaml.j2", kueue_enabled=True, kueue_gpus=8)
    documents += render("shells_platform", "shells.yaml.j2", kueue_enabled=True)
    documents += render("shells_platform", "toolkit-admission.yaml.j2", kueue_enabled=True)
    documents += render("shells_platform", "toolkit-lifecycle.yaml.j2")
    return documents


def kueue_configuration() -> dict[str, Any]:
    """Kueue's Configuration, as role kueue passes it to the chart."""
    chart = render("kueue", "kueue.yaml.j2", kueue_enabled=True, helm_chart_archive_content="")[0]
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    return dict(yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"]))


def queued_cluster(**options: Any) -> FakeApiServer:
    """One 8-GPU H100 node and Kueue as role kueue configures it, with what cluster up writes."""
    server = gpu_cluster("gpu-1", kueue=True, kueue_config=kueue_configuration(), **options)
    for document in queued_cluster_documents():
        server.seed(document["kind"], document)
    return server


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeApiServer, dict[str, kube.Kube]]]:
    server = queued_cluster()
    admin = kube.connect(server.kubeconfig(tmp_path / "admin"))
    people = {}
    for person in PEOPLE:
        users.add(admin, person, 8, tmp_path / person, None, None)
        people[person] = kube.connect(tmp_path / person)
    people["admin"] = admin
    yield server, people
    server.stop()


def request(user: str, name: str = "train", gpus: int = 4, **changes: Any) -> CreateRequest:
    return CreateRequest(name=name, user=user, authorized_keys=(KEY,), gpus=gpus, timeout=30, **changes)


def place(connection: kube.Kube, user: str, name: str = "train") -> int | None:
    sts = connection.get("StatefulSet", name, f"user-{user}")
    assert sts is not None
    found = gpu_queue.place(connection, f"user-{user}", "shells", sts["metadata"]["uid"])
    return found.position if found else None


def test_user_add_gives_each_user_a_local_queue_of_the_cluster_queue(cluster: Any) -> None:
    server, people = cluster
    queue = server.get("LocalQueue", "shells", "user-alice")
    assert queue is not None and queue["spec"] == {"clusterQueue": "shells"}
    written = users.manifests("alice", 8, Fraction(48), Fraction(2**40), settings=platform(people["admin"]))
    local_queues = [m for m in written if m["kind"] == "LocalQueue"]
    assert len(local_queues) == 1
    kueue_schemas.validate(local_queues[0])
    # Their own queue and its places they may read; not another user's.
    assert people["alice"].get("LocalQueue", "shells", "user-alice") is not None
    with pytest.raises(kube.ApiError) as denied:
        people["alice"].get("LocalQueue", "shells", "user-bob")
    assert denied.value.code == 403
    with pytest.raises(kube.ApiError) as denied:
        people["alice"].request(
            "GET", f"{gpu_queue.VISIBILITY}/namespaces/user-bob/localqueues/shells/pendingworkloads"
        )
    assert denied.value.code == 403


def test_shells_are_admitted_in_order_as_gpus_free_up_with_their_places_shown(cluster: Any) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        created = create(people[person], request(person), lambda _: None)
        assert created.status == "ready"
    seen: list[str] = []
    carol = create(people["carol"], request("carol", wait=False), seen.append)
    assert (carol.status, carol.position, carol.expires_at) == ("queued", 1, None)
    assert carol.lifetime == timedelta(hours=24)
    dave = create(people["dave"], request("dave", wait=False), lambda _: None)
    assert (dave.status, dave.position) == ("queued", 2)
    # Queued pods hold no GPUs, and carry Kueue's gate.
    pod = server.get("Pod", "train-0", "user-carol")
    assert pod is not None and gpu_queue.gated(pod) and not pod["spec"].get("nodeName")
    assert place(people["carol"], "carol") == 1 and place(people["dave"], "dave") == 2

    shells.delete(people["alice"], "alice", "train", purge=True)
    assert eventually(lambda: place(people["carol"], "carol") is None, timeout=10)
    assert place(people["dave"], "dave") == 1
    assert eventually(
        lambda: shells.get_shell(people["carol"], "carol", "train").status == "ready", timeout=10
    )

    shells.pause(people["bob"], "bob", "train")
    assert eventually(lambda: shells.get_shell(people["dave"], "dave", "train").status == "ready", timeout=10)
    # Bob's resume goes through the queue too: first in line, but the GPUs are taken.
    seen: list[str] = []
    resumed = threading.Thread(
        target=lambda: shells.resume(people["bob"], "bob", "train", seen.append, timeout=30), daemon=True
    )
    resumed.start()
    assert eventually(
        lambda: "queued: position 1, waiting for 4 GPUs (Ctrl-C leaves the queue)" in seen, timeout=10
    )
    shells.delete(people["carol"], "carol", "train", purge=True)
    resumed.join(timeout=30)
    assert seen[-1] == "ready"


def test_a_waiting_create_shows_its_place_and_starts_its_clock_when_it_runs(cluster: Any) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    seen: list[str] = []
    result: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: result.update(shell=create(people["carol"], request("carol", hours=2), seen.append))
    )
    waiter.start()
    assert eventually(lambda: any(p.startswith("queued: position 1") for p in seen), timeout=10)
    assert "queued: position 1, waiting for 4 GPUs (Ctrl-C leaves the queue)" in seen
    sts = server.get("StatefulSet", "train", "user-carol")
    assert sts is not None and sts["metadata"]["annotations"][manifests.EXPIRY_FROM_START] == "7200"
    # Waiting, its expiry is unknown; the reaper leaves it alone.
    assert shells.get_shell(people["carol"], "carol", "train").expiry_starts_when_running
    assert shells.reap(people["admin"], None, now=datetime.now(UTC) + timedelta(hours=3)) == []
    shells.delete(people["bob"], "bob", "train", purge=True)
    waiter.join(timeout=30)
    created = result["shell"]
    assert created.status == "ready" and seen[-1] == "ready"
    assert created.expires_at is not None
    assert abs((created.expires_at - datetime.now(UTC)) - timedelta(hours=2)) < timedelta(seconds=30)
    sts = server.get("StatefulSet", "train", "user-carol")
    assert sts is not None
    assert manifests.EXPIRY_FROM_START not in sts["metadata"]["annotations"]
    assert sts["metadata"]["annotations"][manifests.EXPIRES_AT] == manifests.timestamp(created.expires_at)
    secret = server.get("Secret", "train-ssh", "user-carol")
    assert secret is not None
    written = base64.b64decode(secret["data"][manifests.EXPIRES_AT_KEY]).decode()
    assert written == manifests.timestamp(created.expires_at)


def test_a_cancelled_queued_shell_leaves_nothing_behind(cluster: Any) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    before = {key for key in server.objects if key[1] == "user-carol" and key[0] != "events"}
    create(people["carol"], request("carol", wait=False), lambda _: None)
    assert server.list("Workload", "user-carol")
    shells.delete(people["carol"], "carol", "train", purge=True)
    assert eventually(
        lambda: {key for key in server.objects if key[1] == "user-carol" and key[0] != "events"} == before,
        timeout=10,
    )


def test_no_queue_fails_at_once_when_the_gpus_are_taken_and_leaves_nothing(cluster: Any) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    before = {key for key in server.objects if key[1] == "user-carol" and key[0] != "events"}
    with pytest.raises(ShellFailed) as failed:
        create(people["carol"], request("carol", queue=False), lambda _: None)
    assert "the GPUs are taken (0 shell(s) wait ahead of it; without --no-queue it waits its turn)" in str(
        failed.value
    )
    assert "insufficient unused quota for nvidia.com/gpu in flavor gpus, 4 more needed" in str(failed.value)
    assert eventually(
        lambda: {key for key in server.objects if key[1] == "user-carol" and key[0] != "events"} == before,
        timeout=10,
    )


def test_the_lifecycle_starts_the_clock_of_a_queued_shell_once_it_runs(cluster: Any, tmp_path: Path) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    create(people["carol"], request("carol", hours=3, wait=False), lambda _: None)
    create(people["dave"], request("dave", wait=False), lambda _: None)
    account = service_account_kube(
        server, people["admin"], lifecycle.NAMESPACE, lifecycle.ACCOUNT, tmp_path / "lifecycle"
    )
    shells.reap(account, None)  # waiting: nothing to start, nothing to reap
    assert shells.get_shell(people["carol"], "carol", "train").expiry_starts_when_running
    with pytest.raises(BadInputError, match="has not run yet: its lifetime starts when it does"):
        shells.extend(people["carol"], "carol", "train", Fraction(1))
    shells.delete(people["alice"], "alice", "train", purge=True)
    assert eventually(
        lambda: shells.get_shell(people["carol"], "carol", "train").status == "ready", timeout=10
    )
    shells.reap(account, None)  # as the CronJob runs it: through the lifecycle's admission policy
    carol = shells.get_shell(people["carol"], "carol", "train")
    assert not carol.expiry_starts_when_running and carol.expires_at is not None
    assert abs(carol.expires_at - (datetime.now(UTC) + timedelta(hours=3))) < timedelta(seconds=30)
    # The reaper feeds the queue: carol's shell expires, and dave's, waiting, runs.
    assert place(people["dave"], "dave") == 1
    reaped = shells.reap(account, None, now=carol.expires_at + timedelta(minutes=1))
    assert [(r.shell.user, r.action) for r in reaped] == [("carol", "paused")]
    assert eventually(lambda: shells.get_shell(people["dave"], "dave", "train").status == "ready", timeout=10)


def test_a_user_over_their_gpu_quota_is_refused_not_queued(cluster: Any, tmp_path: Path) -> None:
    server, people = cluster
    users.add(people["admin"], "erin", 4, tmp_path / "erin", None, None, overwrite=True)
    erin = kube.connect(tmp_path / "erin")
    create(erin, request("erin"), lambda _: None)
    before = {key for key in server.objects if key[1] == "user-erin" and key[0] != "events"}
    with pytest.raises(BadInputError, match="quota"):
        create(erin, request("erin", name="more", wait=False), lambda _: None)
    assert {key for key in server.objects if key[1] == "user-erin" and key[0] != "events"} == before
    assert server.list("Workload", "user-erin") and len(server.list("Workload", "user-erin")) == 1


def test_a_user_cannot_give_a_running_shell_a_lifetime_from_start(cluster: Any) -> None:
    """Else the mark would hold off the reaper, and its lifetime skip the cluster's maxHours."""
    _, people = cluster
    create(people["alice"], request("alice"), lambda _: None)
    for lifetime in ("60", "999999999"):
        with pytest.raises(kube.ApiError) as refused:
            people["alice"].merge_patch(
                "StatefulSet", "train", "user-alice",
                {"metadata": {"annotations": {manifests.EXPIRY_FROM_START: lifetime}}},
            )  # fmt: skip
        assert refused.value.code == 403 and "expiry-from-start" in str(refused.value)


def toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_the_commands_show_the_queue_to_users_and_operators(cluster: Any, tmp_path: Path) -> None:
    _, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    key_file = tmp_path / "carol.pub"
    key_file.write_text(KEY + "\n")
    carol = toolkit("shell", "create", "train", "--gpus", "4", "--hours", "3", "--no-wait",
                    "--ssh-key", str(key_file), "--kubeconfig", str(tmp_path / "carol"))  # fmt: skip
    assert carol.returncode == 0, carol.stderr
    assert (
        "shell train is queued (position 1) for 4 GPUs; its 3h lifetime starts when it runs" in carol.stdout
    )
    create(people["dave"], request("dave", wait=False), lambda _: None)

    listed = toolkit("shell", "list", "--kubeconfig", str(tmp_path / "dave"))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "train" in line)
    assert "queued (2)" in row and "1d once it runs" in row

    connected = toolkit("shell", "connect", "train", "--kubeconfig", str(tmp_path / "dave"))
    assert connected.returncode == 4
    assert connected.stderr.strip() == (
        "error: shell train is queued (position 2) for its GPUs: it starts when they free up "
        "('toolkit shell list' follows it)"
    )

    status = cluster_status.collect(people["admin"])
    assert [(w.position, w.user, w.shell, w.gpus) for w in status.queue or []] == [
        (1, "carol", "train", 4),
        (2, "dave", "train", 4),
    ]
    assert all("insufficient unused quota for nvidia.com/gpu" in w.why for w in status.queue or [])
    shown = toolkit("cluster", "status", "--kubeconfig", str(tmp_path / "admin"))
    assert shown.returncode == 0, shown.stderr
    assert "queue: 2 shell(s) waiting for GPUs" in shown.stdout

    # Cancelling a queued shell moves the next one up.
    deleted = toolkit("shell", "delete", "train", "--yes", "--purge", "--kubeconfig", str(tmp_path / "carol"))
    assert deleted.returncode == 0, deleted.stderr
    assert eventually(lambda: place(people["dave"], "dave") == 1, timeout=10)


def test_without_kueue_every_command_works_as_before(tmp_path: Path) -> None:
    server = gpu_cluster("gpu-1")
    try:
        admin = kube.connect(server.kubeconfig(tmp_path / "admin"))
        users.add(admin, "alice", 8, tmp_path / "alice", None, None)
        alice = kube.connect(tmp_path / "alice")
        assert create(alice, request("alice"), lambda _: None).status == "ready"
        assert [s.status for s in shells.with_places(alice, shells.list_shells(alice, "alice"))] == ["ready"]
        assert cluster_status.collect(admin).queue is None
        shown = toolkit("cluster", "status", "--kubeconfig", str(tmp_path / "admin"))
        assert "queue: off (no Kueue queue in the shells settings)" in shown.stdout
    finally:
        server.stop()


def test_the_queue_objects_validate_against_kueues_crd_schemas() -> None:
    server = queued_cluster()
    try:
        for kind in ("ClusterQueue", "ResourceFlavor"):
            for document in server.list(kind):
                kueue_schemas.validate({k: v for k, v in document.items() if k != "status"})
        # The schemas are strict: a misspelt field is refused, as the API server refuses it.
        with pytest.raises(jsonschema.ValidationError):
            kueue_schemas.validate(
                gpu_queue.local_queue("user-a", "shells", "shells", {}) | {"spec": {"queue": "x"}}
            )
    finally:
        server.stop()


def test_a_shell_that_asks_for_gpus_cannot_skip_the_queue(cluster: Any) -> None:
    """Whatever client the user runs: admission holds GPU StatefulSets to their queue."""
    server, people = cluster
    create(people["alice"], request("alice", wait=False), lambda _: None)
    sts = server.get("StatefulSet", "train", "user-alice")
    assert sts is not None
    for labels in ({gpu_queue.QUEUE_NAME_LABEL: None}, {gpu_queue.QUEUE_NAME_LABEL: "elsewhere"}):
        with pytest.raises(kube.ApiError) as refused:
            people["alice"].merge_patch(
                "StatefulSet", "train", "user-alice", {"metadata": {"labels": labels}}
            )
        assert refused.value.code == 403
        assert "label it kueue.x-k8s.io/queue-name=shells" in str(refused.value)
    mine = copy.deepcopy(sts)
    mine["metadata"] = {"name": "mine", "namespace": "user-alice", "labels": dict(sts["metadata"]["labels"])}
    del mine["metadata"]["labels"][gpu_queue.QUEUE_NAME_LABEL]
    mine.pop("status", None)
    with pytest.raises(kube.ApiError) as refused:
        people["alice"].create(mine)
    assert refused.value.code == 403


def test_a_flavor_per_gpu_product_where_the_site_labels_its_nodes() -> None:
    flavors = [
        {"name": "h100", "node_labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "gpus": 16},
        {"name": "h200", "node_labels": {"nvidia.com/gpu.product": "NVIDIA-H200"}, "gpus": "8"},
    ]
    documents = render("kueue", "kueue-queue.yaml.j2", kueue_enabled=True, kueue_flavors=flavors,
                       kueue_queueing_strategy="StrictFIFO")  # fmt: skip
    for document in documents:
        kueue_schemas.validate(document)
    assert [d["spec"]["nodeLabels"] for d in documents[:2]] == [f["node_labels"] for f in flavors]
    queue = documents[2]
    assert queue["spec"]["queueingStrategy"] == "StrictFIFO"
    assert [
        (f["name"], f["resources"][0]["nominalQuota"]) for f in queue["spec"]["resourceGroups"][0]["flavors"]
    ] == [("h100", 16), ("h200", 8)]


def test_a_waiting_create_asks_the_api_server_only_every_few_seconds(cluster: Any) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    seen: list[str] = []
    waiter = threading.Thread(
        target=lambda: create(people["carol"], request("carol"), seen.append), daemon=True
    )
    waiter.start()
    assert eventually(lambda: any(p.startswith("queued: position 1") for p in seen), timeout=10)
    server.reset_request_log()
    time.sleep(6)
    # A watch that waits for the pod to change, and the place read again every 5 seconds.
    assert len(server.requests) <= 8, server.requests
    shells.delete(people["alice"], "alice", "train", purge=True)
    waiter.join(timeout=30)
    assert seen[-1] == "ready"


def test_a_user_without_a_local_queue_is_told_to_ask_for_one(cluster: Any, tmp_path: Path) -> None:
    server, people = cluster
    for person in ("alice", "bob"):
        create(people[person], request(person), lambda _: None)
    people["admin"].delete("LocalQueue", "shells", "user-carol")
    before = {key for key in server.objects if key[1] == "user-carol" and key[0] != "events"}
    with pytest.raises(ShellFailed) as failed:
        create(people["carol"], request("carol"), lambda _: None)
    assert "waits in queue 'shells', which your namespace lacks or you may not read" in str(failed.value)
    assert "toolkit user add" in str(failed.value)
    assert eventually(
        lambda: {key for key in server.objects if key[1] == "user-carol" and key[0] != "events"} == before,
        timeout=10,
    )


def test_shells_made_before_the_queue_can_still_be_paused_and_join_it_on_resume(tmp_path: Path) -> None:
    server = gpu_cluster("gpu-1", kueue=True, kueue_config=kueue_configuration())
    try:
        documents = render("shells_platform", "shells.yaml.j2")
        documents += render("shells_platform", "toolkit-admission.yaml.j2")
        for document in documents:
            server.seed(document["kind"], document)
        admin = kube.connect(server.kubeconfig(tmp_path / "admin"))
        users.add(admin, "alice", 8, tmp_path / "alice", None, None)
        alice = kube.connect(tmp_path / "alice")
        create(alice, request("alice"), lambda _: None)  # no queue yet
        # The site turns the queue on (cluster up with kueue_enabled), with its ClusterQueue.
        for document in queued_cluster_documents():
            server.put(document)
        users.add(admin, "alice", 8, tmp_path / "alice", None, None, overwrite=True)
        alice = kube.connect(tmp_path / "alice")
        shells.extend(alice, "alice", "train", Fraction(1))
        shells.pause(alice, "alice", "train")
        # Nor may it scale up outside the queue, whatever client asks.
        with pytest.raises(kube.ApiError) as refused:
            alice.merge_patch("StatefulSet", "train", "user-alice", {"spec": {"replicas": 1}})
        assert refused.value.code == 403
        resumed = shells.resume(alice, "alice", "train", lambda _: None, timeout=30)
        assert resumed.status == "ready"
        sts = server.get("StatefulSet", "train", "user-alice")
        assert sts is not None and sts["metadata"]["labels"][gpu_queue.QUEUE_NAME_LABEL] == "shells"
        assert server.list("Workload", "user-alice")
    finally:
        server.stop()


def test_no_shell_may_carry_a_kueue_priority_class(cluster: Any) -> None:
    _, people = cluster
    create(people["alice"], request("alice", wait=False), lambda _: None)
    with pytest.raises(kube.ApiError) as refused:
        people["alice"].merge_patch(
            "StatefulSet",
            "train",
            "user-alice",
            {"metadata": {"labels": {"kueue.x-k8s.io/priority-class": "vip"}}},
        )
    assert refused.value.code == 403 and "priority-class" in str(refused.value)


def test_operators_and_users_still_get_their_views_when_kueue_is_down(cluster: Any, tmp_path: Path) -> None:
    server, people = cluster
    for person in ("alice", "bob", "carol"):
        create(people[person], request(person, wait=False), lambda _: None)
    server.kueue = False  # its API groups answer 404 now, as when its controller is gone
    status = cluster_status.collect(people["admin"])
    assert status.queue is None and status.queue_error == "the server could not find the requested resource"
    assert [
        s.status for s in shells.with_places(people["carol"], shells.list_shells(people["carol"], "carol"))
    ] == ["starting"]
    shown = toolkit("cluster", "status", "--kubeconfig", str(tmp_path / "admin"))
    assert shown.returncode == 0, shown.stderr
    assert "queue: unavailable (" in shown.stdout and "kubectl -n kueue-system get pods" in shown.stdout
