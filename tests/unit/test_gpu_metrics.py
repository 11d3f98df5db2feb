"""GPU use from dcgm-exporter: its page parsed (the STAND-IN exporter renders it as upstream's
template does, tests/standins/dcgm_exporter.py), read through the STAND-IN API server's pods proxy,
and shown by `toolkit cluster status`: per node, per shell, and who holds GPUs at 0%."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.standins.dcgm_exporter import DcgmExporter, serve_exporters
from tests.standins.kube_apiserver import FakeApiServer
from toolkit import cluster_status, gpu_metrics, kube, users
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
# The sample upstream's README shows (dcgm-exporter 4.5.3-4.8.2, README.md), its label spacing
# kept: fields the toolkit does not read, of a GPU no pod holds.
README_GPU = 'gpu="0", UUID="GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52",container="",namespace="",pod=""'
README_SAMPLE = (
    "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).\n"
    "# TYPE DCGM_FI_DEV_SM_CLOCK gauge\n"
    f"DCGM_FI_DEV_SM_CLOCK{{{README_GPU}}} 139\n"
    f"DCGM_FI_DEV_MEM_CLOCK{{{README_GPU}}} 405\n"
)


def test_each_gpu_is_read_with_the_pod_holding_it() -> None:
    exporter = DcgmExporter("gpu-1")
    exporter.hold(0, "user-alice", "train-0", utilisation=87, memory_used=61440)
    exporter.hold(1, "user-alice", "train-0", utilisation=91, memory_used=40960)
    exporter.hold(5, "user-bob", "idle-0", utilisation=0, memory_used=512)
    gpus = gpu_metrics.parse(exporter.metrics(), "gpu-1")
    assert [g.index for g in gpus] == [str(i) for i in range(8)]
    assert {g.model for g in gpus} == {"NVIDIA H100 80GB HBM3"} and {g.driver for g in gpus} == {"580.105.08"}
    assert gpus[0].uuid == "GPU-00000000-0000-0000-0000-000000000000" and gpus[0].memory_total == 81559
    reading = gpu_metrics.Reading(gpus=gpus)
    train = reading.by_pod("user-alice", "train-0")
    assert train == gpu_metrics.Use(gpus=2, utilisation=89, memory_used=102400, memory_total=2 * 81559)
    assert train.describe() == "89% · 100/159 GiB" and not train.idle
    idle = reading.by_pod("user-bob", "idle-0")
    assert idle is not None and idle.idle and idle.gpus == 1
    assert reading.by_pod("user-alice", "other-0") is None
    node = reading.by_node("gpu-1")
    assert node is not None and node.gpus == 8 and node.utilisation == (87 + 91) / 8


def test_a_page_the_toolkit_reads_nothing_from_gives_no_gpus_and_bad_lines_are_passed_over() -> None:
    assert gpu_metrics.parse(README_SAMPLE, "gpu-1") == []
    page = (
        'DCGM_FI_DEV_GPU_UTIL{gpu="0", UUID="GPU-a"} 42\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b" 7\n'  # no closing brace
        'DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c"} many\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="3"} 9\n'  # no UUID
        'DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",pod="p\\"q",namespace="n"} 10 1700000000000\n'
    )
    [gpu] = gpu_metrics.parse(page, "gpu-1")
    assert (gpu.uuid, gpu.utilisation, gpu.memory_used, gpu.pod, gpu.namespace) == (
        "GPU-a",
        42,
        10,
        'p"q',
        "n",
    )


def test_status_shows_each_node_and_shell_at_work_and_who_holds_gpus_idle(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    admin = kube.connect(admin_kubeconfig)
    users.add(admin, "alice", 4, tmp_path / "alice", None, None)
    create(admin, CreateRequest(name="train", user="alice", authorized_keys=(KEY,), gpus=2), lambda _: None)
    create(admin, CreateRequest(name="idle", user="alice", authorized_keys=(KEY,)), lambda _: None)
    on = {s: (admin.get("Pod", f"{s}-0", "user-alice") or {})["spec"]["nodeName"] for s in ("train", "idle")}
    found = serve_exporters(fake_cluster, "gpu-1", "gpu-2")
    found[on["train"]].hold(0, "user-alice", "train-0", utilisation=80, memory_used=40000)
    found[on["train"]].hold(1, "user-alice", "train-0", utilisation=60, memory_used=20000)
    found[on["idle"]].hold(2, "user-alice", "idle-0", utilisation=0, memory_used=0)

    status = cluster_status.collect(admin)
    assert status.gpu_use_unavailable == ""
    assert [(f.shell, f.use.utilisation, f.use.gpus) for f in status.shell_gpu_use] == [
        ("idle", 0, 1),
        ("train", 70, 2),
    ]
    assert [f.shell for f in status.idle_holders] == ["idle"]
    assert {n.name: n.driver_version for n in status.nodes} == {"gpu-1": "580.105.08", "gpu-2": "580.105.08"}

    shown = subprocess.run(
        [sys.executable, "-m", "toolkit", "cluster", "status", "--kubeconfig", str(admin_kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, env={"COLUMNS": "200", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "holding GPUs at 0%: alice/idle (1 GPU)" in shown.stdout
    assert "70% · 59/159 GiB" in shown.stdout
    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "toolkit", "cluster", "status", "--output", "json",
             "--kubeconfig", str(admin_kubeconfig)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    assert report["gpu_use"]["idle_holders"] == ["alice/idle"]


def test_without_an_exporter_or_its_answer_the_figures_are_na_and_say_why_once(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path
) -> None:
    admin = kube.connect(admin_kubeconfig)
    reading = gpu_metrics.read(admin)
    assert (
        reading.gpus == [] and "no dcgm-exporter runs in namespace toolkit-monitoring" in reading.unavailable
    )
    shown = subprocess.run(
        [sys.executable, "-m", "toolkit", "cluster", "status", "--kubeconfig", str(admin_kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, env={"COLUMNS": "200", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert shown.stdout.count("gpu use: n/a, no dcgm-exporter runs") == 1, shown.stdout
    serve_exporters(fake_cluster, "gpu-1", "gpu-2")
    del fake_cluster.proxied[(gpu_metrics.EXPORTER_NAMESPACE, "dcgm-exporter-gpu-2", 9400)]
    partly = gpu_metrics.read(admin)
    assert partly.unanswered == ("gpu-2",) and {g.node for g in partly.gpus} == {"gpu-1"}
    assert cluster_status.collect(admin).gpu_use_unanswered == ("gpu-2",)
    # An exporter that hangs costs its few seconds, and is named; the others are still read.
    fake_cluster.proxied[(gpu_metrics.EXPORTER_NAMESPACE, "dcgm-exporter-gpu-2", 9400)] = lambda path: (
        time.sleep(gpu_metrics.PAGE_TIMEOUT + 2) or ""
    )
    hung = gpu_metrics.read(admin)
    assert hung.unanswered == ("gpu-2",) and {g.node for g in hung.gpus} == {"gpu-1"}


def test_a_users_kubeconfig_reads_no_one_s_gpu_figures(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    admin = kube.connect(admin_kubeconfig)
    serve_exporters(fake_cluster, "gpu-1")
    users.add(admin, "alice", 1, tmp_path / "alice.kubeconfig", None, None)
    alice = kube.connect(tmp_path / "alice.kubeconfig")
    reading = gpu_metrics.read(alice)
    assert reading.gpus == [] and "can't be listed" in reading.unavailable
    path = f"/api/v1/namespaces/{gpu_metrics.EXPORTER_NAMESPACE}/pods/dcgm-exporter-gpu-1:9400/proxy/metrics"
    try:
        alice.text(path)
        raise AssertionError("alice read the exporter through the proxy")
    except kube.ApiError as error:
        assert error.code == 403 and 'cannot get resource "pods/proxy"' in str(error)


def test_mig_instances_of_one_gpu_are_each_their_own_and_a_label_twice_or_a_nan_is_passed_over() -> None:
    page = (
        'DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",GPU_I_PROFILE="3g.40gb",GPU_I_ID="1",'
        'namespace="user-alice",pod="a-0"} 5000\n'
        'DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",GPU_I_PROFILE="3g.40gb",GPU_I_ID="2",'
        'namespace="user-bob",pod="b-0"} 10\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",pod="x-0",UUID="GPU-c"} 90\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-d",pod="y-0",namespace="user-carol"} NaN\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="3",UUID="GPU-e",pod="z-0",namespace="user-carol"} 250\n'
    )
    reading = gpu_metrics.Reading(gpus=gpu_metrics.parse(page, "gpu-1"))
    alice, bob = reading.by_pod("user-alice", "a-0"), reading.by_pod("user-bob", "b-0")
    assert alice is not None and bob is not None
    assert (alice.memory_used, bob.memory_used) == (5000, 10)
    assert [g.uuid for g in reading.gpus] == ["GPU-a", "GPU-a"]
