"""The Kubernetes-API half of playbooks/verify.yml, which the lab's stand-in k3s cannot serve: run
through `toolkit cluster verify` on this machine (a local-connection host) against the STAND-IN
API server, with a real kubectl in place of `k3s kubectl` and a version-only k3s in place of k3s.

This host has no k3s service, no GPU and no Weka, so those checks fail or skip as they should;
what is asserted is the nodes check, on Ready and NotReady nodes, the GPU node's checks, and that
the shell check asks for a GPU from the GPU nodes verify.yml records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import PROJECT, toolkit
from tests.standins.kube_apiserver import FakeApiServer
from tests.unit.test_gpu_facts import NVIDIA, sysfs_from_lspci
from toolkit import verify
from toolkit.checks import Check, Status
from toolkit.runner import RunOutcome, RunRequest, RunTracker, run_playbook

STANDINS = PROJECT / "tests" / "standins"

KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.fixture
def verify_run(fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path) -> Any:
    return make_run(fake_cluster, admin_kubeconfig, tmp_path, gpu=False)


def make_run(fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path, gpu: bool) -> Any:
    inventory, extra, env = verify_setup(admin_kubeconfig, tmp_path, gpu)

    def run() -> dict[str, tuple[str, str]]:
        result = toolkit("cluster", "verify", "-i", str(inventory), "--output", "json", *extra, env=env)
        assert result.returncode == 1, result.stdout + result.stderr  # no k3s service on this machine
        assert result.stdout.startswith("["), result.stdout + result.stderr
        return {c["check"]: (c["status"], c["detail"]) for c in json.loads(result.stdout)}

    return run


def verify_setup(admin_kubeconfig: Path, tmp_path: Path, gpu: bool) -> tuple[Path, list[str], dict[str, str]]:
    """This machine as the one host of an inventory, and the `-e` options and environment that put
    the stand-ins in place."""
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    groups = {
        "k3s_servers": {"hosts": {"local-server": local}},
        "k3s_agents": {},
        "gpu_nodes": {"hosts": {"local-server": None}} if gpu else {},
        "weka_clients": {},
    }
    inventory.write_text(json.dumps({"cluster": {"children": groups}}))
    k3s = tmp_path / "k3s"  # answers --version as a real k3s does; anything else is an error
    k3s.write_text('#!/bin/sh\n[ "$1" = --version ] || exit 1\necho "k3s version v1.33.5+k3s1 (abcdef12)"\n')
    k3s.chmod(0o755)

    extra = ["-e", f"verify_k3s={k3s}", "-e", f"verify_kubectl='{KUBECTL} --kubeconfig {admin_kubeconfig}'"]
    extra += ["-e", "wekafs_enabled=false"]
    env = {}
    if gpu:  # an HGX H100's PCI bus and nvidia-smi, replayed from real captures (tests/fixtures/nvidia)
        pci = sysfs_from_lspci(tmp_path / "pci", "h100-hgx8-rhel94-host-lspci-Dnn-egrep.txt")
        extra += [
            "-e",
            f"verify_pci_devices_path={pci}",
            "-e",
            f"verify_nvidia_smi={STANDINS / 'nvidia-smi'}",
        ]
        env = {
            "NVIDIA_SMI_STANDIN_QUERY_XML": str(NVIDIA / "h100-hgx8-k8s-test-infra-nvidia-smi-q-x.xml"),
            "NVIDIA_SMI_STANDIN_TOPO": str(NVIDIA / "h100-hgx8-tpgds-aihub0007-topo-m.txt"),
        }
    return inventory, extra, env


def test_ready_nodes_pass_and_a_not_ready_node_fails_by_name(
    verify_run: Any, fake_cluster: FakeApiServer
) -> None:
    fake_cluster.add_gpu_node("server-1", gpus=0)  # no nvidia.com/gpu at all, as on a CPU server
    checks = verify_run()
    assert checks["nodes ready"] == ("pass", "3 nodes Ready")
    assert checks["gpu allocatable"] == ("skip", "no GPU node")
    assert checks["shells volume"] == ("skip", "wekafs_enabled is false")
    assert checks["k3s service"] == ("fail", "k3s.service not installed")

    node = fake_cluster.objects[("nodes", "", "gpu-2")]
    node["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]
    assert verify_run()["nodes ready"] == ("fail", "not ready: gpu-2")


def test_gpu_node_checks_on_an_hgx_h100(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    import socket
    import xml.etree.ElementTree as ElementTree

    run = make_run(fake_cluster, admin_kubeconfig, tmp_path, gpu=True)
    fake_cluster.add_gpu_node(socket.gethostname(), gpus=8)  # this machine, as the k3s node of the host
    query = ElementTree.parse(NVIDIA / "h100-hgx8-k8s-test-infra-nvidia-smi-q-x.xml").getroot()
    listing = [f"GPU {i}: {gpu.findtext('product_name')} (UUID: {gpu.findtext('uuid')})" for i, gpu in
               enumerate(query.iter("gpu"))]  # fmt: skip
    fake_cluster.behaviour.command_output["nvidia-smi -L"] = listing[0] + "\n"  # the pod's one GPU
    checks = run()
    assert checks["nvidia-smi"] == ("pass", "8 of 8 GPUs, driver 580.105.08")
    assert checks["fabric manager"] == (
        "fail",
        "nvidia-fabricmanager not installed",
    )  # NVSwitches, no service
    assert checks["gpu allocatable"] == ("pass", "8 allocatable nvidia.com/gpu, 8 on the host")
    assert checks["cuda smoke pod"] == ("pass", "nvidia-smi listed 1 GPU(s) of the 1 the pod asked for")

    node = fake_cluster.objects[("nodes", "", socket.gethostname())]
    node["status"]["allocatable"]["nvidia.com/gpu"] = "7"  # a GPU the device plugin lost
    fake_cluster.behaviour.command_output.clear()  # and a pod whose nvidia-smi is missing
    checks = run()
    assert checks["gpu allocatable"] == ("fail", "7 allocatable nvidia.com/gpu, 8 on the host")
    assert checks["cuda smoke pod"][0] == "fail"


def test_the_shell_check_asks_for_a_gpu_from_the_gpu_nodes_verify_yml_records(
    fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    inventory, extra, env = verify_setup(admin_kubeconfig, tmp_path, gpu=True)
    fake_cluster.add_gpu_node(socket.gethostname(), gpus=8)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    asked: list[int] = []

    def shell_check(kubeconfig: Path, scratch: Path, gpus: int) -> Check:
        asked.append(gpus)
        return Check(verify.SHELL_CHECK, "-", Status.SKIP, f"asked for {gpus} GPU")

    def playbook(name: str, extra_vars: list[str]) -> RunOutcome:
        if name == "kubeconfig.yml":  # this machine runs no k3s: its kubeconfig is the stand-in's
            Path(extra_vars[0].partition("=")[2]).write_text(admin_kubeconfig.read_text())
            return RunOutcome(RunTracker(), runner_rc=0, status="successful", artifacts=tmp_path)
        request = RunRequest(PROJECT / "playbooks" / name, inventory, extra_vars=tuple(extra_vars))
        return run_playbook(PROJECT, request, RunTracker())

    monkeypatch.setattr(verify, "shell_check", shell_check)
    report = verify.run(playbook, extra[1::2])  # the values of the `-e` options
    assert asked == [1]
    assert report.checks[-1].detail == "asked for 1 GPU"
