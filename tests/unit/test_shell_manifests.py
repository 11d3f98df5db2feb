"""The shell's and the user's objects validate against the Kubernetes 1.33 schemas, and carry the
security settings, sizes and labels the toolkit promises."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest

from tests.manifests import validate
from toolkit import shell_manifests, users
from toolkit.capacity import NodeCapacity
from toolkit.errors import BadInputError
from toolkit.shell_plan import ClusterFacts, CreateRequest, Endpoint, ShellPlan, plan_create
from toolkit.shell_settings import Platform

H100_NODE = NodeCapacity(
    name="gpu-1", address="10.0.0.11", ready=True, schedulable=True, labels={}, gpus=8,
    cpu=Fraction(192), memory=Fraction(2 * 2**40),
)  # fmt: skip
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


FACTS = ClusterFacts(
    settings=Platform(web_domain="shells.example.org"), nodes=(H100_NODE,),
    quota={"spec": {"hard": {"requests.nvidia.com/gpu": "8"}}},
    storage_class="shared-wekafs", storage_class_exists=True, runtime_class="nvidia",
    runtime_class_exists=True, shell_exists=False,
)  # fmt: skip
ENDPOINT = Endpoint("10.0.0.11", 30022, 30681)


def plan(settings: Platform = FACTS.settings, **changes: Any) -> ShellPlan:
    fields = {"name": "train", "user": "alice", "authorized_keys": ("ssh-ed25519 AAAA alice",)}
    return plan_create(CreateRequest(**(fields | changes)), replace(FACTS, settings=settings), NOW)


def spec(**changes: Any) -> shell_manifests.ShellSpec:
    return plan(**changes).spec


NODE_PORT_WEB = Platform(web_expose="nodeport")


@pytest.mark.parametrize("settings", [FACTS.settings, NODE_PORT_WEB], ids=["ingress", "nodeport"])
@pytest.mark.parametrize("web", [False, True])
def test_every_shell_object_validates(web: bool, settings: Platform) -> None:
    validate(plan(settings, web=web, shm="16Gi").objects(ENDPOINT))


def test_the_web_terminal_is_https_behind_the_ingress_at_the_shells_own_host() -> None:
    web = plan(web=True)
    objects = web.objects(Endpoint("10.0.0.11", 30022, None))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("Secret", "train-ssh"), ("PersistentVolumeClaim", "train-home"), ("Service", "train"),
        ("Service", "train-web"), ("Ingress", "train"), ("StatefulSet", "train"),
    ]  # fmt: skip
    ssh_service, web_service, ingress, statefulset = objects[2], objects[3], objects[4], objects[5]
    # Nothing of the web terminal on a node port: only the ingress reaches it, inside the cluster.
    assert [p["port"] for p in ssh_service["spec"]["ports"]] == [22]
    assert web_service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in web_service["spec"]["ports"]] == [7681]
    host = "train--alice.shells.example.org"
    # No Secret named: the ingress serves the site's default certificate, never in a user's namespace.
    assert ingress["spec"]["tls"] == [{"hosts": [host]}]
    assert ingress["spec"]["ingressClassName"] == "traefik"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == host
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "train-web", "port": {"number": 7681}}
    assert statefulset["metadata"]["annotations"]["toolkit.dev/web-endpoint"] == f"{host}:443"
    assert web.web_url(ENDPOINT) == f"https://{host}/" and not web.web_is_plain_http


def test_a_site_that_opts_out_of_the_ingress_gets_plain_http_on_a_node_port_and_is_told() -> None:
    web = plan(NODE_PORT_WEB, web=True)
    assert web.web_objects == [] and web.web_is_plain_http
    assert [p["port"] for p in web.service["spec"]["ports"]] == [22, 7681]
    assert web.web_url(ENDPOINT) == "http://10.0.0.11:30681/"


@pytest.mark.parametrize(
    ("settings", "name", "user", "reason"),
    [
        (Platform(), "train", "alice", "has no web domain (an operator sets shells_platform_web_domain)"),
        (FACTS.settings, "a--b", "alice", "a shell with a web terminal can't have '--' in its name ('a--b')"),
        (FACTS.settings, "t" * 40, "u" * 30, "is 72 characters, more than a DNS label's 63"),
    ],
    ids=["no-domain", "double-dash", "too-long"],
)
def test_a_web_terminal_without_a_unique_host_name_is_refused(
    settings: Platform, name: str, user: str, reason: str
) -> None:
    with pytest.raises(BadInputError, match=re.escape(reason)):
        plan(settings, name=name, user=user, web=True)
    plan(settings, name=name, user=user)  # without --web, the same shell is fine


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


def test_the_namespaces_network_policy_admits_only_ssh_and_ttyd_and_the_lifecycle_from_outside_it() -> None:
    settings = Platform(pod_cidrs=("10.42.0.0/16",), egress_denied_cidrs=("192.0.2.10/32",))
    policy = users.network_policy("user-alice", {}, settings)["spec"]
    assert policy["podSelector"] == {} and policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {"from": [{"podSelector": {}}]},
        {"ports": [{"port": 22, "protocol": "TCP"}, {"port": 7681, "protocol": "TCP"}]},
        # The shell agents' activity reports, to the lifecycle's namespace alone.
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "toolkit-lifecycle"}}}
            ],
            "ports": [{"port": 7682, "protocol": "TCP"}],
        },
    ]
    own, dns, outside = policy["egress"]
    assert own == {"to": [{"podSelector": {}}]}
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert dns["to"][0]["namespaceSelector"] == kube_system
    assert [p["port"] for p in dns["ports"]] == [53, 53]
    denied = ["10.42.0.0/16", "192.0.2.10/32"]
    # Single-stack: IPv6 stays closed, as before any block was written.
    assert outside == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": denied}}]}


def test_a_dual_stack_network_policy_denies_every_address_the_nodes_report_ipv4_and_ipv6() -> None:
    nodes = [
        {
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "192.0.2.10"},
                    {"type": "InternalIP", "address": "2001:db8::10"},
                    {"type": "ExternalIP", "address": "198.51.100.7"},
                    {"type": "Hostname", "address": "gpu-1"},
                ]
            }
        },
        {"status": {"addresses": [{"type": "InternalIP", "address": "not-an-address"}]}},
        {"status": {}},
    ]
    addresses = users.node_addresses(nodes)
    assert addresses == ["192.0.2.10", "2001:db8::10", "198.51.100.7"]
    settings = Platform(pod_cidrs=("10.42.0.0/16", "fd00:42::/56"), egress_denied_cidrs=("192.0.2.10/32",))
    ipv4, ipv6 = users.network_policy("user-alice", {}, settings, addresses)["spec"]["egress"][2]["to"]
    # Each exception lies inside its block's CIDR, as the API server requires, and none repeats.
    assert ipv4["ipBlock"]["except"] == ["10.42.0.0/16", "192.0.2.10/32", "198.51.100.7/32"]
    assert ipv6["ipBlock"] == {"cidr": "::/0", "except": ["fd00:42::/56", "2001:db8::10/128"]}


def test_every_object_carries_the_managed_by_shell_and_user_labels() -> None:
    objects = plan(Platform(shared_storage="100Gi")).objects(ENDPOINT)
    for manifest in objects:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "toolkit", manifest["kind"]
        assert labels["toolkit.dev/user"] == "alice", manifest["kind"]
        # The user's shared area belongs to none of their shells.
        shared = manifest["metadata"]["name"] == "shared"
        assert labels.get("toolkit.dev/shell") == (None if shared else "train"), manifest["kind"]
    claims = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claims == ["train-home", "shared"]


def test_secret_holds_keys_host_key_and_credential_and_shm_is_memory_backed() -> None:
    rendered = spec(shm="16Gi", web=True)
    data = shell_manifests.secret(rendered)["stringData"]
    assert data["authorized_keys"] == "ssh-ed25519 AAAA alice\n"
    assert data["ssh_host_ed25519_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert data["ttyd-credential"] == f"alice:{rendered.ttyd_password}"
    volumes = shell_manifests.statefulset(rendered)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16384Mi"}} in volumes


def test_a_shell_of_another_image_runs_the_toolbox_an_init_container_copies_in() -> None:
    objects = plan(image="nvcr.io/nvidia/pytorch:24.08-py3", web=True).objects(ENDPOINT)
    validate(objects)
    [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    [copier] = pod["initContainers"]
    [shell] = pod["containers"]
    assert copier["image"] == FACTS.settings.image and shell["image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    assert copier["command"] == ["cp", "-a", "/opt/shell-toolbox/.", "/toolbox/"]
    assert copier["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert shell["command"][0] == "/opt/shell-toolbox/bin/tini"
    assert shell["command"][-1] == "/opt/shell-toolbox/entrypoint.sh"
    assert {"name": "SHELL_TOOLBOX", "value": "true"} in shell["env"]
    assert {"name": "toolbox", "mountPath": "/opt/shell-toolbox", "readOnly": True} in shell["volumeMounts"]
    assert {"name": "toolbox", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    # Whatever runs it, the shell's container keeps the same few capabilities.
    assert shell["securityContext"]["capabilities"]["add"] == shell_manifests.SSHD_CAPABILITIES


def test_a_shell_of_the_sites_image_runs_its_own_entrypoint() -> None:
    [statefulset] = [o for o in plan().objects(ENDPOINT) if o["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    assert "initContainers" not in pod and "command" not in pod["containers"][0]
    assert all(env["name"] != "SHELL_TOOLBOX" for env in pod["containers"][0]["env"])
    assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_jupyter_implies_the_web_terminal_and_its_token_is_the_secrets_alone() -> None:
    jupyter = plan(jupyter=True)
    objects = jupyter.objects(ENDPOINT)
    validate(objects)
    assert jupyter.spec.web and jupyter.spec.web_host == "train--alice.shells.example.org"
    [secret] = [o for o in objects if o["kind"] == "Secret"]
    token = secret["stringData"]["jupyter-token"]
    assert len(token) >= 32 and token == jupyter.spec.jupyter_token
    [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
    env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SHELL_JUPYTER", "value": "true"} in env and {"name": "SHELL_WEB", "value": "true"} in env
    assert token not in str(statefulset)
    assert jupyter.jupyter_url(ENDPOINT) == "https://train--alice.shells.example.org/jupyter/lab"
    assert plan(jupyter=True).spec.jupyter_token != token  # a new one for each shell
    without = plan(web=True)
    assert "jupyter-token" not in without.secret["stringData"] and without.jupyter_url(ENDPOINT) is None
