"""The cluster's lifecycle (toolkit/lifecycle.py) against the STAND-IN API server, configured with
shells_platform's rendered settings, admission policies and lifecycle RBAC, and run as the
lifecycle's own ServiceAccount, on a fake clock and with the shell agents' reports supplied."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.manifests import render
from tests.standins.dcgm_exporter import serve_exporters
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import eventually, gpu_cluster, service_account_kube
from toolkit import gpu_metrics, kube, lifecycle, shells, users
from toolkit.errors import ToolkitError
from toolkit.kube import ApiError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
IDLE = lifecycle.Activity(idle_seconds=31 * 60, terminals=1, gpu_utilization=0)
ACTIVE = lifecycle.Activity(idle_seconds=40, terminals=1, gpu_utilization=0)


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    """Idle pause after 30 minutes, at most 120, as shells_platform configures the cluster."""
    server = gpu_cluster("gpu-1", "gpu-2")
    documents = render(
        "shells_platform",
        "shells.yaml.j2",
        shells_platform_idle_minutes=30,
        shells_platform_max_idle_minutes=120,
        shells_platform_max_lifetime_hours=48,
    )
    documents += render("shells_platform", "toolkit-admission.yaml.j2")
    documents += render("shells_platform", "toolkit-lifecycle.yaml.j2")
    # dcgm-exporter's namespace and the lifecycle's right to read it (the DaemonSet's pods stand in
    # where a test serves them: tests/standins/dcgm_exporter.py).
    documents += [
        d for d in render("nvidia_device_plugin", "dcgm-exporter.yaml.j2") if d["kind"] != "DaemonSet"
    ]
    for document in documents:
        server.seed(document["kind"], document)
    yield server
    server.stop()


@pytest.fixture
def admin(cluster: FakeApiServer, tmp_path: Path) -> kube.Kube:
    return kube.connect(cluster.kubeconfig(tmp_path / "admin.kubeconfig"))


@pytest.fixture
def alice(admin: kube.Kube, tmp_path: Path) -> kube.Kube:
    users.add(admin, "alice", 4, tmp_path / "alice.kubeconfig", None, None)
    return kube.connect(tmp_path / "alice.kubeconfig")


@pytest.fixture
def lifecycle_account(cluster: FakeApiServer, admin: kube.Kube, tmp_path: Path) -> kube.Kube:
    """The CronJob's identity: ServiceAccount toolkit-lifecycle/toolkit-lifecycle's token."""
    return service_account_kube(
        cluster, admin, lifecycle.NAMESPACE, lifecycle.ACCOUNT, tmp_path / "lifecycle.kubeconfig"
    )


def make_shell(alice: kube.Kube, name: str, **changes: Any) -> shells.Shell:
    create(alice, CreateRequest(name=name, user="alice", authorized_keys=(KEY,), **changes), lambda _: None)
    return shells.get_shell(alice, "alice", name)


def reports(cluster: FakeApiServer, by_shell: dict[str, lifecycle.Activity]) -> Any:
    """The agents' reports, by the pod address the lifecycle asks; a shell left out answers none."""

    def read(address: str) -> lifecycle.Activity:
        for name, activity in by_shell.items():
            pod = cluster.get("Pod", f"{name}-0", "user-alice") or {}
            if pod.get("status", {}).get("podIP") == address:
                return activity
        raise ToolkitError(f"no activity report from {address}: connection refused")

    return read


def test_idle_shells_are_paused_and_active_ones_kept_as_the_lifecycles_own_account(
    cluster: FakeApiServer, alice: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    for name in ("quiet", "typing", "silent"):
        make_shell(alice, name)
    now = datetime.now(UTC)
    read = reports(cluster, {"quiet": IDLE, "typing": ACTIVE})
    checks = lifecycle.pause_idle(lifecycle_account, now, read)
    silent_pod = cluster.get("Pod", "silent-0", "user-alice")
    assert silent_pod is not None
    assert {c.shell.name: c.action for c in checks} == {
        "quiet": "paused",
        "typing": "",
        "silent": f"not checked: no activity report from {silent_pod['status']['podIP']}: connection refused",
    }
    paused = shells.get_shell(alice, "alice", "quiet")
    assert (paused.status, paused.paused_why, paused.replicas) == ("paused", "idle", 0)
    assert cluster.get("PersistentVolumeClaim", "quiet-home", "user-alice") is not None  # home kept
    assert shells.get_shell(alice, "alice", "typing").status == "ready"
    # A paused shell is not checked again; its owner resumes it, and a later pause by hand is by hand.
    assert [c.shell.name for c in lifecycle.pause_idle(lifecycle_account, now, read)] == ["silent", "typing"]
    shells.scale(alice, "alice", "quiet", 1, {"toolkit.dev/idle-paused-at": None})
    assert shells.pause(alice, "alice", "quiet").paused_why == "by hand"


def test_a_multi_node_shell_is_idle_only_when_every_pod_is(
    cluster: FakeApiServer, admin: kube.Kube, alice: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    admin.merge_patch("ConfigMap", "shells", "toolkit-system", {"data": {"accessMode": "ReadWriteMany"}})
    make_shell(alice, "group", nodes=2)
    by_pod = {"group-0": IDLE, "group-1": ACTIVE}

    def read(address: str) -> lifecycle.Activity:
        for pod, activity in by_pod.items():
            if (cluster.get("Pod", pod, "user-alice") or {}).get("status", {}).get("podIP") == address:
                return activity
        raise ToolkitError(f"no activity report from {address}: connection refused")

    [check] = lifecycle.pause_idle(lifecycle_account, datetime.now(UTC), read)
    assert (check.action, check.activity) == ("", ACTIVE)  # pod 1 at work keeps the whole shell
    by_pod["group-1"] = IDLE
    [check] = lifecycle.pause_idle(lifecycle_account, datetime.now(UTC), read)
    assert check.action == "paused"
    assert shells.get_shell(alice, "alice", "group").replicas == 0


def test_a_shell_whose_extra_replica_never_starts_is_still_judged_by_its_first_pod(
    cluster: FakeApiServer, alice: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    make_shell(alice, "hoard", gpus=4)
    # Its owner asks for a second replica the quota refuses: the shell is "starting" for good.
    alice.merge_patch("StatefulSet", "hoard", "user-alice", {"spec": {"replicas": 2}})
    assert eventually(lambda: shells.get_shell(alice, "alice", "hoard").replicas == 2)
    assert shells.get_shell(alice, "alice", "hoard").status == "starting"
    [check] = lifecycle.pause_idle(lifecycle_account, datetime.now(UTC), reports(cluster, {"hoard": IDLE}))
    assert check.action == "paused"


def test_a_shells_idle_minutes_are_held_to_the_clusters_limits(
    cluster: FakeApiServer, alice: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    make_shell(alice, "patient", idle_minutes=90)
    make_shell(alice, "default")
    # Its owner rewrites the annotation to turn idle pause off, or to a year: the most counts.
    for name, written in (("patient", "0"), ("default", "525600")):
        alice.merge_patch("StatefulSet", name, "user-alice", {"metadata": {"annotations": {
            "toolkit.dev/idle-minutes": written}}})  # fmt: skip
    two_hours = lifecycle.Activity(idle_seconds=120 * 60, terminals=0, gpu_utilization=None)
    read = reports(cluster, {"patient": two_hours, "default": two_hours})
    checks = lifecycle.pause_idle(lifecycle_account, datetime.now(UTC), read)
    assert {(c.shell.name, c.limit, c.action) for c in checks} == {
        ("patient", 120, "paused"),
        ("default", 120, "paused"),
    }


def test_idle_limits_follow_the_site_settings() -> None:
    from toolkit.shell_settings import Platform

    def limit(asked: int | None, default: int = 60, most: int = 240) -> int:
        annotations = {"toolkit.dev/idle-minutes": str(asked)} if asked is not None else {}
        metadata = {"name": "s", "namespace": "user-a", "annotations": annotations}
        shell = shells.Shell.from_statefulset({"metadata": metadata})
        assert shell is not None
        return lifecycle.idle_limit(shell, Platform(idle_minutes=default, max_idle_minutes=most))

    assert limit(None) == 0  # made before idle pause: its agent would warn of nothing
    assert limit(45) == 45
    assert limit(2) == 5  # the shortest
    assert limit(0) == 240  # the site keeps idle pause on
    assert limit(999) == 240
    assert limit(0, most=0) == 0  # no limit: a shell may turn it off
    assert limit(999, most=0) == 999
    assert limit(45, default=0) == 0  # the site pauses no idle shell


def test_expiry_and_idle_pause_on_a_fake_clock_are_recorded_for_operators_only(
    cluster: FakeApiServer, alice: kube.Kube, admin: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    make_shell(alice, "short", hours=1)
    make_shell(alice, "quiet")
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1, minutes=1)
    reaped = shells.reap(lifecycle_account, None, now=later)
    checks = lifecycle.pause_idle(lifecycle_account, later, reports(cluster, {"quiet": IDLE}))
    run = lifecycle.Run(later, later + timedelta(seconds=2), reaped, checks, [])
    lifecycle.record(lifecycle_account, run)
    expired = shells.get_shell(alice, "alice", "short")
    assert (expired.status, expired.paused_why) == ("paused", "expired")
    assert shells.get_shell(alice, "alice", "quiet").paused_why == "idle"

    found = lifecycle.last_run(admin)
    assert found is not None and found.outcome == "ok"
    assert found.actions == ("alice/short paused, expired", "alice/quiet paused, idle 31 min (limit 30)")
    line = lifecycle.describe(found, later + timedelta(minutes=1))
    assert line.startswith(
        "lifecycle: last run 58s ago, ok: 1 expired shell(s) reaped; 1 idle shell(s) paused"
    )
    assert "not running?" in lifecycle.describe(found, later + timedelta(minutes=15))
    # Users cannot read it: it names every tenant's shells.
    with pytest.raises(ApiError) as refused:
        lifecycle.last_run(alice)
    assert refused.value.code == 403
    # A second run updates the same record.
    lifecycle.record(lifecycle_account, lifecycle.Run(later, later, error="the API went away"))
    assert (lifecycle.last_run(admin) or found).outcome == "failed"


def test_the_lifecycles_account_is_refused_anything_beyond_its_rights(
    cluster: FakeApiServer, alice: kube.Kube, admin: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    make_shell(alice, "train")
    admin.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keep", "namespace": "kube-system"}}
    )
    admin.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "other", "namespace": lifecycle.NAMESPACE},
        }
    )
    refused = [
        lambda: lifecycle_account.get("Secret", "train-ssh", "user-alice"),  # no reading users' keys
        lambda: lifecycle_account.list("Secret"),
        lambda: lifecycle_account.delete(
            "Secret", "keep", "kube-system"
        ),  # deletes in users' namespaces only
        lambda: lifecycle_account.merge_patch(
            "ConfigMap", "other", lifecycle.NAMESPACE, {"data": {"a": "b"}}
        ),
        lambda: lifecycle_account.merge_patch(
            "ConfigMap", "shells", "toolkit-system", {"data": {"idleMinutes": "0"}}
        ),
        lambda: lifecycle_account.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "user-alice"},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
        ),
        lambda: lifecycle_account.merge_patch("Secret", "train-ssh", "user-alice", {"data": {}}),
        lambda: lifecycle_account.merge_patch("StatefulSet", "train", "user-alice", {}, subresource="scale"),
        lambda: lifecycle_account.list("Namespace"),
    ]
    for attempt in refused:
        with pytest.raises(ApiError) as error:
            attempt()
        assert error.value.code == 403
    # Admission holds its changes of a shell to scaling it down and stamping why.
    image = {"spec": {"template": {"spec": {"containers": [{"name": "shell", "image": "evil:latest"}]}}}}
    for change in (
        image,
        {"metadata": {"labels": {"toolkit.dev/user": "bob"}}},
        {"metadata": {"annotations": {"toolkit.dev/expires-at": "2099-01-01T00:00:00Z"}}},
        {"spec": {"replicas": 2}},
    ):
        with pytest.raises(ApiError) as error:
            lifecycle_account.merge_patch("StatefulSet", "train", "user-alice", change)
        assert error.value.code == 403 and "the lifecycle may only scale a shell down" in str(error.value)
    # What it needs, it has.
    assert [s.name for s in shells.list_shells(lifecycle_account, None)] == ["train"]
    shells.pause(lifecycle_account, "alice", "train", idle_at=datetime.now(UTC))
    shells.pause(lifecycle_account, "alice", "train", reaped_at=datetime.now(UTC))


GOOD = {"idleSeconds": 10, "terminals": 0, "gpuUtilization": None, "idleMinutes": 30}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"[" * 2000 + b"]" * 2000,  # deep enough to exhaust a recursive parser, under 4 KiB
        json.dumps({**GOOD, "terminals": {"a": 1}}).encode(),
        json.dumps({key: value for key, value in GOOD.items() if key != "idleMinutes"}).encode(),
        json.dumps({**GOOD, "idleSeconds": -1}).encode(),
        json.dumps({**GOOD, "idleSeconds": 1.5}).encode(),
        json.dumps({**GOOD, "idleSeconds": True}).encode(),
        json.dumps({**GOOD, "gpuUtilization": 101}).encode(),
        json.dumps({**GOOD, "gpuUtilization": "0"}).encode(),
        json.dumps({**GOOD, "more": 1}).encode(),
        json.dumps({**GOOD, "idleSeconds": 10**10}).encode(),
        json.dumps({**GOOD, "idleMinutes": 10**7}).encode(),
        '{"idleSeconds": 1\u00e9}'.encode(),
        b" " * 5000,
    ],
)
def test_a_report_not_of_the_agents_exact_shape_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        lifecycle.parse_activity(body)
    assert lifecycle.parse_activity(json.dumps(GOOD).encode()) == lifecycle.Activity(10, 0, None, 30)


def serve(answer: Callable[[socket.socket], None]) -> int:
    """A one-connection server on loopback that answers as `answer` does, then hangs up; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        connection, _ = listener.accept()
        with connection, listener, contextlib.suppress(OSError):
            connection.recv(4096)
            answer(connection)

    threading.Thread(target=run, daemon=True).start()
    return int(listener.getsockname()[1])


def test_an_agent_that_answers_slowly_or_wrongly_is_cut_off_in_the_toolkits_words() -> None:
    def drip(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.0 200 OK\r\n")
        for _ in range(100):
            connection.sendall(b"X")
            time.sleep(0.1)

    port = serve(drip)
    started = time.monotonic()
    with pytest.raises(ToolkitError) as slow:
        lifecycle.read_activity("127.0.0.1", port, timeout=1.0)
    assert time.monotonic() - started < 2
    assert str(slow.value) == "no activity report from 127.0.0.1: its agent took over 1 s"
    escapes = b"HTTP/1.0 200 \x1b]0;owned\x07\x1b[2J\r\n\r\n{\x85bob/train paused}"
    oversized = b"HTTP/1.0 200 OK\r\nX: " + b"y" * 9000 + b"\r\n\r\n"
    for answer, expected in (
        (b"\x1b[31mnot http\x85forged line\r\n\r\n", "is not an HTTP response of at most 8 KiB"),
        (b"HTTP/1.0 500 \x1b[2J\r\n\r\n", "is not HTTP 200"),
        (escapes, "is not the agent's JSON"),
        (oversized, "is not an HTTP response of at most 8 KiB"),
    ):
        port = serve(lambda connection, answer=answer: connection.sendall(answer))
        with pytest.raises(ToolkitError) as refused:
            lifecycle.read_activity("127.0.0.1", port)
        assert str(refused.value) == f"the activity report from 127.0.0.1 {expected}"


def test_the_record_holds_printable_short_lines_whatever_an_error_quoted(
    admin: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    forged = 'pods "x\x1b[2J" is forbidden\x85bob/train paused, idle 61 min\n' + "y" * 5000
    run = lifecycle.Run(now, now, orphans=[f"user-bob/x not deleted: {forged}"])
    lifecycle.record(lifecycle_account, run)
    found = lifecycle.last_run(admin)
    assert found is not None and found.outcome == "partial"
    [line] = found.actions
    assert "\x1b" not in line and "\x85" not in line and len(line) <= lifecycle.LINE_LIMIT
    assert line.startswith(
        'pod user-bob/x not deleted: pods "x[2J" is forbiddenbob/train paused, idle 61 min yyy'
    )


def test_only_the_shells_own_pod_on_the_pod_network_is_asked(
    alice: kube.Kube, admin: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    make_shell(alice, "train")
    asked: list[str] = []

    def read(address: str) -> lifecycle.Activity:
        asked.append(address)
        return IDLE

    admin.merge_patch("Pod", "train-0", "user-alice", {"status": {"podIP": "169.254.169.254"}}, "status")
    [check] = lifecycle.pause_idle(lifecycle_account, datetime.now(UTC), read)
    assert check.action == "not checked: its pod's address 169.254.169.254 is not on the pod network"
    assert asked == []
    shell = shells.get_shell(alice, "alice", "train")
    networks = [ipaddress.ip_network("10.42.0.0/16")]
    owned = {"kind": "StatefulSet", "name": "train", "uid": shell.uid}
    pod = {"metadata": {"ownerReferences": [owned]}, "status": {"podIP": "10.42.0.99"}}
    assert lifecycle.shell_pod_address(pod, shell, networks) == "10.42.0.99"
    for owners in ([], [{**owned, "uid": "another-statefulset"}], [{**owned, "kind": "ReplicaSet"}]):
        with pytest.raises(ToolkitError, match="its pod is not its StatefulSet's"):
            lifecycle.shell_pod_address({**pod, "metadata": {"ownerReferences": owners}}, shell, networks)
    with pytest.raises(ToolkitError, match="its pod's address \\(none\\) is not on the pod network"):
        lifecycle.shell_pod_address({**pod, "status": {}}, shell, networks)


def toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, as the CronJob and an operator run it."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_reap_status_and_the_lifecycles_own_command(
    alice: kube.Kube, lifecycle_account: kube.Kube, tmp_path: Path
) -> None:
    admin_config = str(tmp_path / "admin.kubeconfig")
    shown = toolkit("shell", "reap", "--status", "--kubeconfig", admin_config)
    assert shown.returncode == 0, shown.stderr
    assert "lifecycle: no run recorded" in shown.stdout
    # What the CronJob runs, with its account; no running shell to ask about.
    account = str(tmp_path / "lifecycle.kubeconfig")
    ran = toolkit("shell", "reap", "-A", "--idle", "--record-status", "--kubeconfig", account)
    assert ran.returncode == 0, ran.stderr
    assert "0 idle shell(s) paused of 0 checked" in ran.stdout
    shown = toolkit("shell", "reap", "--status", "--kubeconfig", admin_config)
    assert "lifecycle: last run" in shown.stdout and ", ok: 0 expired shell(s) reaped" in shown.stdout
    refused = toolkit("shell", "reap", "--status", "--kubeconfig", str(tmp_path / "alice.kubeconfig"))
    assert refused.returncode == 4 and "is for operators" in refused.stderr
    for bad in (["--idle"], ["--record-status"], ["--status", "-A"], ["-A", "--record-status", "--dry-run"]):
        result = toolkit("shell", "reap", *bad, "--kubeconfig", admin_config)
        assert result.returncode == 3 and len(result.stderr.splitlines()) == 1, (bad, result.stderr)


def test_the_lifecycle_deleting_an_expired_shell_keeps_its_home_stamped_and_may_stamp_nothing_else(
    cluster: FakeApiServer, alice: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    settings = render("shells_platform", "shells.yaml.j2", shells_platform_reap_policy="delete")
    cluster.put(settings[1])
    make_shell(alice, "short", hours=1)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1, minutes=1)
    [reaped] = shells.reap(lifecycle_account, None, now=later)
    assert reaped.action == "deleted"
    assert cluster.get("StatefulSet", "short", "user-alice") is None
    home = cluster.get("PersistentVolumeClaim", "short-home", "user-alice")
    assert home is not None and "toolkit.dev/released-at" in home["metadata"]["annotations"]
    # Its right to patch volumes is held to that one stamp.
    for patch in (
        {"metadata": {"labels": {"app.kubernetes.io/component": "anything"}}},
        {"metadata": {"annotations": {"toolkit.dev/created-by": "someone"}}},
        {"spec": {"resources": {"requests": {"storage": "1Pi"}}}},
    ):
        with pytest.raises(ApiError) as refused:
            lifecycle_account.merge_patch("PersistentVolumeClaim", "short-home", "user-alice", patch)
        assert refused.value.code in (403, 422), patch


def test_a_shell_whose_gpus_the_cluster_sees_at_work_is_kept_whatever_its_agent_says(
    cluster: FakeApiServer, alice: kube.Kube, lifecycle_account: kube.Kube
) -> None:
    for name in ("training", "stalled"):
        make_shell(alice, name)
    nodes = {
        n: (cluster.get("Pod", f"{n}-0", "user-alice") or {})["spec"]["nodeName"]
        for n in ("training", "stalled")
    }
    exporters = serve_exporters(cluster, "gpu-1", "gpu-2")
    exporters[nodes["training"]].hold(0, "user-alice", "training-0", utilisation=97, memory_used=70000)
    exporters[nodes["stalled"]].hold(1, "user-alice", "stalled-0", utilisation=0, memory_used=70000)
    # Both agents report no input for 31 minutes and, say, no GPU they could measure.
    quiet = lifecycle.Activity(idle_seconds=31 * 60, terminals=0, gpu_utilization=None)
    read = reports(cluster, {"training": quiet, "stalled": quiet})
    checks = lifecycle.pause_idle(lifecycle_account, datetime.now(UTC), read)
    assert {c.shell.name: c.action for c in checks} == {"training": "", "stalled": "paused"}


def test_each_running_shells_gpu_use_is_published_for_its_owner_alone_to_read(
    cluster: FakeApiServer, alice: kube.Kube, lifecycle_account: kube.Kube, tmp_path: Path
) -> None:
    for name in ("busy", "asleep"):
        make_shell(alice, name, gpus=2 if name == "busy" else 1)
    shells.pause(alice, "alice", "asleep")
    node = (cluster.get("Pod", "busy-0", "user-alice") or {})["spec"]["nodeName"]
    exporter = serve_exporters(cluster, "gpu-1", "gpu-2")[node]
    exporter.hold(0, "user-alice", "busy-0", utilisation=90, memory_used=40000)
    exporter.hold(1, "user-alice", "busy-0", utilisation=70, memory_used=20000)
    now = datetime.now(UTC).replace(microsecond=0)
    measured = gpu_metrics.read(lifecycle_account)
    # The lifecycle's own account writes it, which admission lets it do, and only that.
    assert lifecycle.publish_gpu_use(lifecycle_account, now, measured) == ["alice/busy"]
    busy = shells.get_shell(alice, "alice", "busy")
    assert busy.gpu_use == f"{now:%Y-%m-%dT%H:%M:%SZ} 80 60000 163118 2"
    assert busy.as_dict()["gpu_use"]["utilisation_percent"] == 80
    # Unchanged, it is not written again for 5 minutes; changed, at once.
    assert lifecycle.publish_gpu_use(lifecycle_account, now + timedelta(minutes=1), measured) == []
    exporter.hold(1, "user-alice", "busy-0", utilisation=0, memory_used=20000)
    later = gpu_metrics.read(lifecycle_account)
    assert lifecycle.publish_gpu_use(lifecycle_account, now + timedelta(minutes=1), later) == ["alice/busy"]
    # alice's own list shows it: her kubeconfig reads her StatefulSets, not the exporters.
    kubeconfig = str(tmp_path / "alice.kubeconfig")
    shown = subprocess.run(
        [sys.executable, "-m", "toolkit", "shell", "list", "--kubeconfig", kubeconfig],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert re.search(r"busy .* 45% · 59/159 GiB", shown.stdout), shown.stdout
    assert re.search(r"asleep .* paused \(by hand\) +│ - ", shown.stdout), shown.stdout


def test_a_users_own_gpu_use_annotation_is_read_strictly_and_fools_only_them() -> None:
    for written in ("", "soon 1 2 3 4", "2026-12-04T11:00:00Z 101 1 2 1", "2026-12-04T11:00:00Z 5 3 2 1",
                    "2026-12-04T11:00:00Z 5 1 2 0", "2026-12-04T11:00:00Z 5 1 2 1 extra"):  # fmt: skip
        assert gpu_metrics.read_published(written) is None, written
    at, use = gpu_metrics.read_published("2026-12-04T11:00:00Z 5 1024 81559 1") or (None, None)
    assert (
        at == datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
        and use is not None
        and use.describe() == "5% · 1/80 GiB"
    )


def test_a_user_reaping_their_own_shells_publishes_nothing_and_reads_no_exporter(
    cluster: FakeApiServer, alice: kube.Kube, tmp_path: Path
) -> None:
    make_shell(alice, "train")
    serve_exporters(cluster, "gpu-1", "gpu-2")
    ran = toolkit("shell", "reap", "--kubeconfig", str(tmp_path / "alice.kubeconfig"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "0 expired shell(s) reaped" in ran.stdout
    assert shells.get_shell(alice, "alice", "train").gpu_use is None
