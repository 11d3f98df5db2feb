"""Users may not list other tenants' pods, so `shell avail` reads the GPU counts the cluster
publishes. shells_platform's publisher script runs here as its CronJob would, as the
ServiceAccount its manifests create, against the STAND-IN API server with those manifests
applied; a user's `shell avail` then shows what the operator's own count shows."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.conftest import PROJECT, toolkit
from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import load_script
from toolkit import capacity, kube, users
from toolkit.errors import ToolkitError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

SCRIPT = PROJECT / "roles" / "shells_platform" / "files" / "publish-capacity.py"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


def publisher_module() -> ModuleType:
    return load_script(SCRIPT)


PODS = [
    {"spec": {"nodeName": "gpu-1", "containers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}}]}},
    {"spec": {"nodeName": "gpu-1", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}},
    {
        "spec": {
            "nodeName": "gpu-1",
            "containers": [{"resources": {}}, {"resources": {"limits": {"cpu": "1"}}}],
        }
    },
    {
        "spec": {
            "nodeName": "gpu-2",
            "containers": [{"name": "a", "resources": {"requests": {"nvidia.com/gpu": 4}}}],
        }
    },
    {"spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "8"}}}]}},  # not scheduled
    {  # an init container needing more than the containers after it
        "spec": {
            "nodeName": "gpu-2",
            "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "3"}}}],
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        }
    },
    {  # a sidecar's GPU is held beside the containers', and beside the init container after it
        "spec": {
            "nodeName": "gpu-2",
            "initContainers": [
                {"restartPolicy": "Always", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                {"resources": {"limits": {"nvidia.com/gpu": "4"}}},
            ],
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        }
    },
]


@pytest.mark.parametrize("pod", PODS)
def test_the_publisher_counts_a_pods_gpus_by_the_toolkits_rule(pod: dict[str, Any]) -> None:
    assert publisher_module().gpu_requests(pod) == capacity.gpu_requests(pod)


def test_the_published_manifest_carries_the_script_as_it_is() -> None:
    documents = render("shells_platform", "capacity-publisher.yaml.j2")
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    assert config_map["data"]["publish-capacity.py"] == SCRIPT.read_text()


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    server = FakeApiServer().start()
    for name in ("gpu-1", "gpu-2"):
        server.add_gpu_node(name, labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    server.seed("Namespace", {"metadata": {"name": "toolkit-system"}})
    for document in render("shells_platform", "capacity-publisher.yaml.j2"):
        server.seed(document["kind"], document)
    yield server
    server.stop()


def account_dir(cluster: FakeApiServer, tmp_path: Path) -> Path:
    """The ServiceAccount's token and the cluster's CA, where a pod of the CronJob has them."""
    cluster.seed("Secret", {
        "metadata": {"name": "toolkit-capacity-token", "namespace": "toolkit-system",
                     "annotations": {"kubernetes.io/service-account.name": "toolkit-capacity"}},
        "type": "kubernetes.io/service-account-token",
    })  # fmt: skip
    for _ in range(100):
        secret = cluster.get("Secret", "toolkit-capacity-token", "toolkit-system")
        if secret and (secret.get("data") or {}).get("token"):
            break
        time.sleep(0.05)
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(base64.b64decode(secret["data"]["token"]).decode())  # type: ignore[index]
    (directory / "ca.crt").write_bytes(cluster.ca_pem)
    return directory


def run_publisher(cluster: FakeApiServer, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(cluster.port),
        "SERVICE_ACCOUNT_DIR": str(directory),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_user_sees_the_published_counts_and_no_other_tenants_pods(
    cluster: FakeApiServer, tmp_path: Path
) -> None:
    admin = kube.connect(cluster.kubeconfig(tmp_path / "admin.kubeconfig"))
    for user in ("alice", "bob"):
        users.add(admin, user, 4, tmp_path / f"{user}.kubeconfig", None, None)
    alice, bob = (kube.connect(tmp_path / f"{user}.kubeconfig") for user in ("alice", "bob"))
    with pytest.raises(kube.ApiError) as forbidden:
        alice.list("Pod", "user-bob")
    assert forbidden.value.code == 403
    with pytest.raises(ToolkitError, match="this cluster has not published the GPUs its nodes hold"):
        capacity.availability(alice)

    directory = account_dir(cluster, tmp_path)
    create(bob, CreateRequest(name="train", user="bob", authorized_keys=(KEY,), gpus=3), lambda _: None)
    first = run_publisher(cluster, directory)
    assert first.returncode == 0, first.stderr
    assert "published capacity of 2 node(s): 3 GPUs held" in first.stdout
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,), gpus=2), lambda _: None)
    again = run_publisher(cluster, directory)  # the ConfigMap exists now: patched, not created
    assert again.returncode == 0, again.stderr

    seen = capacity.availability(alice)
    counted = capacity.availability(admin)
    assert seen.nodes == counted.nodes and sum(n.gpus_used for n in seen.nodes) == 5
    assert seen.published_at and counted.published_at is None
    result = toolkit("shell", "avail", "--kubeconfig", str(tmp_path / "alice.kubeconfig"))
    assert result.returncode == 0, result.stderr
    assert f"11 GPUs free (as the cluster counted them at {seen.published_at})" in result.stdout
    # Each node's GPU product, from its label (which users may read): what --gpu-type matches.
    as_json = toolkit(
        "shell", "avail", "--output", "json", "--kubeconfig", str(tmp_path / "alice.kubeconfig")
    )
    assert as_json.returncode == 0, as_json.stderr
    assert [n["gpu_product"] for n in json.loads(as_json.stdout)] == ["NVIDIA-H100-80GB-HBM3"] * 2
    published = cluster.get("ConfigMap", "capacity", "toolkit-system")
    assert published is not None and set(json.loads(published["data"]["nodes"])) == {"gpu-1", "gpu-2"}


def test_the_publishers_account_may_write_only_its_own_config_map(
    cluster: FakeApiServer, tmp_path: Path
) -> None:
    directory = account_dir(cluster, tmp_path)
    token = (directory / "token").read_text()
    publisher = kube.connect(cluster.kubeconfig(tmp_path / "publisher.kubeconfig", token=token))
    assert publisher.list("Node")["items"]
    patch = {"data": {"x": "y"}}
    with pytest.raises(kube.ApiError) as refused:
        publisher.merge_patch("ConfigMap", "toolkit-capacity-publisher", "toolkit-system", patch)
    assert refused.value.code == 403
    with pytest.raises(kube.ApiError) as secrets:
        publisher.list("Secret", "toolkit-system")
    assert secrets.value.code == 403
