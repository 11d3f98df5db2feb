"""The shell's and the user's objects validate against the Kubernetes 1.33 schemas, and carry the
security settings, sizes and labels the toolkit promises."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest

from tests.manifests import validate
from toolkit import shell_manifests, users
from toolkit.capacity import NodeCapacity
from toolkit.shell_plan import ClusterFacts, CreateRequest, Endpoint, ShellPlan, plan_create
from toolkit.shell_settings import Platform

H100_NODE = NodeCapacity(
    name="gpu-1", address="10.0.0.11", ready=True, schedulable=True, labels={}, gpus=8,
    cpu=Fraction(192), memory=Fraction(2 * 2**40),
)  # fmt: skip
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


FACTS = ClusterFacts(
    settings=Platform(), nodes=(H100_NODE,), quota={"spec": {"hard": {"requests.nvidia.com/gpu": "8"}}},
    storage_class="shared-wekafs", storage_class_exists=True, runtime_class="nvidia",
    runtime_class_exists=True, shell_exists=False,
)  # fmt: skip
ENDPOINT = Endpoint("10.0.0.11", 30022, 30681)


def plan(**changes: Any) -> ShellPlan:
    request = CreateRequest(
        name="train", user="alice", authorized_keys=("ssh-ed25519 AAAA alice",), **changes
    )
    return plan_create(request, FACTS, NOW)


def spec(**changes: Any) -> shell_manifests.ShellSpec:
    return plan(**changes).spec


@pytest.mark.parametrize("web", [False, True])
def test_every_shell_object_validates(web: bool) -> None:
    validate(plan(web=web, shm="16Gi").objects(ENDPOINT))


def test_user_objects_validate() -> None:
    validate(users.manifests("alice", 2, Fraction(48), Fraction(512 * 2**30)))


def test_one_h100_gets_an_eighth_of_the_node_requests_ninety_limits_one_fifty_percent() -> None:
    container = shell_manifests.statefulset(spec(gpus=1))["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "21600m", "memory": "235929Mi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "36", "memory": "393216Mi", "nvidia.com/gpu": "1"},
    }


def test_the_shell_is_never_privileged_and_keeps_only_sshds_capabilities() -> None:
    pod = shell_manifests.statefulset(spec())["spec"]["template"]["spec"]
    security = pod["containers"][0]["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "SYS_ADMIN" not in security["capabilities"]["add"]
    assert pod["runtimeClassName"] == "nvidia" and pod["automountServiceAccountToken"] is False
    probes = pod["containers"][0]
    assert (
        probes["readinessProbe"]["tcpSocket"]["port"] == 22
        and probes["livenessProbe"]["tcpSocket"]["port"] == 22
    )


def test_the_namespaces_network_policy_admits_only_ssh_and_ttyd_from_outside_it() -> None:
    settings = Platform(pod_cidrs=("10.42.0.0/16",), egress_denied_cidrs=("192.0.2.10/32",))
    policy = users.network_policy("user-alice", {}, settings)["spec"]
    assert policy["podSelector"] == {} and policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {"from": [{"podSelector": {}}]},
        {"ports": [{"port": 22, "protocol": "TCP"}, {"port": 7681, "protocol": "TCP"}]},
    ]
    own, dns, outside = policy["egress"]
    assert own == {"to": [{"podSelector": {}}]}
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert dns["to"][0]["namespaceSelector"] == kube_system
    assert [p["port"] for p in dns["ports"]] == [53, 53]
    denied = ["10.42.0.0/16", "192.0.2.10/32"]
    assert outside == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": denied}}]}


def test_every_object_carries_the_managed_by_shell_and_user_labels() -> None:
    for manifest in plan().objects(ENDPOINT):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "toolkit", manifest["kind"]
        assert (labels["toolkit.dev/shell"], labels["toolkit.dev/user"]) == ("train", "alice")


def test_secret_holds_keys_host_key_and_credential_and_shm_is_memory_backed() -> None:
    rendered = spec(shm="16Gi", web=True)
    data = shell_manifests.secret(rendered)["stringData"]
    assert data["authorized_keys"] == "ssh-ed25519 AAAA alice\n"
    assert data["ssh_host_ed25519_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert data["ttyd-credential"] == f"alice:{rendered.ttyd_password}"
    volumes = shell_manifests.statefulset(rendered)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16384Mi"}} in volumes
