"""`toolkit cluster status` from the STAND-IN API server: nodes, versions, GPUs held, shells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.standins.kube_apiserver import FakeApiServer
from tests.support import eventually
from toolkit import cluster_status, kube, shells, users
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


def test_status_counts_gpus_held_per_node_and_lists_shells(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    fake_cluster.add_gpu_node("server-1", gpus=0, labels={"node-role.kubernetes.io/control-plane": "true"})
    admin = kube.connect(admin_kubeconfig)
    users.add(admin, "alice", 4, tmp_path / "alice", None, None)
    create(admin, CreateRequest(name="train", user="alice", authorized_keys=(KEY,), gpus=3), lambda _: None)
    create(admin, CreateRequest(name="idle", user="alice", authorized_keys=(KEY,)), lambda _: None)
    shells.pause(admin, "alice", "idle")

    found = cluster_status.collect(admin)
    assert [(n.name, n.role) for n in found.nodes] == [
        ("server-1", "server"),
        ("gpu-1", "agent"),
        ("gpu-2", "agent"),
    ]
    assert (found.gpus, found.gpus_used) == (16, 3)
    assert sorted(n.gpus_used for n in found.nodes) == [0, 0, 3]
    assert all(n.k3s_version == "v1.33.5+k3s1" and n.driver_version is None for n in found.nodes)
    assert {(s.name, s.status) for s in found.shells} == {("train", "ready"), ("idle", "paused")}


def test_status_command_prints_json(fake_cluster: FakeApiServer, admin_kubeconfig: Path) -> None:
    command = ["cluster", "status", "--output", "json", "--kubeconfig", str(admin_kubeconfig)]
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["gpus"] == {"allocatable": 16, "used": 0}
    assert [n["gpu_product"] for n in report["nodes"]] == ["NVIDIA-H100-80GB-HBM3"] * 2
    assert report["lifecycle"] is None


def test_status_shows_the_lifecycles_last_run(fake_cluster: FakeApiServer, admin_kubeconfig: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from toolkit import lifecycle

    admin = kube.connect(admin_kubeconfig)
    admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lifecycle.NAMESPACE}})
    finished = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    lifecycle.record(admin, lifecycle.Run(finished, finished, error="Forbidden: statefulsets is forbidden"))
    found = cluster_status.collect(admin)
    assert found.lifecycle is not None and found.lifecycle.outcome == "failed"
    assert found.as_dict()["lifecycle"]["finished"] == finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "cluster", "status", "--kubeconfig", str(admin_kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("lifecycle:")]
    assert line.startswith("lifecycle: last run 20 min ago, failed: 0 expired shell(s) reaped")
    assert "error: Forbidden: statefulsets is forbidden" in line
    assert "not running? it last ran 20 min ago: check CronJob toolkit-lifecycle/toolkit-lifecycle" in line


def test_a_lifecycle_whose_image_cant_be_had_says_so_and_what_to_do(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path
) -> None:
    from toolkit import lifecycle

    admin = kube.connect(admin_kubeconfig)
    admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lifecycle.NAMESPACE}})
    assert cluster_status.collect(admin).lifecycle_trouble is None  # no pod yet: nothing to say
    # The CronJob's pod, on a cluster that has no localhost/toolkit image and can't pull one.
    fake_cluster.behaviour.image_pull_backoff = True
    admin.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "toolkit-lifecycle-29000000-abcde", "namespace": lifecycle.NAMESPACE},
        "spec": {"containers": [{"name": "lifecycle", "image": "localhost/toolkit:latest"}]},
    })  # fmt: skip
    assert eventually(lambda: cluster_status.collect(admin).lifecycle_trouble is not None)
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "cluster", "status", "--kubeconfig", str(admin_kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    [line] = [line for line in result.stdout.splitlines() if line.startswith("lifecycle:")]
    assert line.startswith("lifecycle: no run recorded"), line
    assert (
        "its pod toolkit-lifecycle-29000000-abcde can't get its image localhost/toolkit:latest "
        "(ImagePullBackOff): build it with 'toolkit images build --image toolkit'"
    ) in line
    status = subprocess.run(
        [sys.executable, "-m", "toolkit", "shell", "reap", "--status", "--kubeconfig", str(admin_kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert "can't get its image localhost/toolkit:latest" in status.stdout, status.stdout + status.stderr


def test_a_lifecycle_run_that_failed_is_named_with_its_exit_code_and_a_starting_one_is_not() -> None:
    from toolkit import lifecycle

    def run_pod(name: str, phase: str, state: dict[str, object]) -> dict[str, object]:
        return {
            "metadata": {"name": name, "namespace": lifecycle.NAMESPACE,
                         "creationTimestamp": f"2026-12-03T10:0{name[-1]}:00Z"},
            "status": {"phase": phase, "containerStatuses": [{"name": "lifecycle", "state": state}]},
        }  # fmt: skip

    starting = run_pod("toolkit-lifecycle-1", "Pending", {"waiting": {"reason": "ContainerCreating"}})
    assert lifecycle.why_stuck([starting]) is None
    failed = run_pod("toolkit-lifecycle-2", "Failed", {"terminated": {"reason": "Error", "exitCode": 4}})
    assert lifecycle.why_stuck([starting, failed]) == (
        "its last run failed (Error, exit code 4): kubectl -n toolkit-lifecycle logs toolkit-lifecycle-2"
    )
