"""Shell users: a namespace each, a quota, and a kubeconfig limited to that namespace.

`toolkit user add` (an operator, with the admin kubeconfig) creates the user's namespace, a
ResourceQuota on everything a user can consume (GPUs, CPU, memory, storage, volumes, node ports,
load balancers, shells with their pods, Services and Secrets, scratch disk) with a LimitRange so
that nothing escapes it, a NetworkPolicy the user can read
but not change, a ServiceAccount bound to a Role in that namespace, and read access to what
`toolkit shell` must see cluster-wide (nodes, classes, pods' placement for `shell avail`, the
shells configuration). Then it writes the user's kubeconfig, mode 0600.

The cluster enforces all of it, whatever client the user runs: PodSecurity admission holds the
namespace's pods to the `baseline` standard (the shell pod passes it; `restricted` would forbid
its sshd running as root), quota and LimitRange admission the amounts, RBAC the rest.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from toolkit import datasets, gpu_queue, quantity, shells, sshkeys
from toolkit.addresses import is_ip_address
from toolkit.capacity import GPU, NodeCapacity, share
from toolkit.errors import BadInputError, ToolkitError
from toolkit.kube import Kube
from toolkit.kubeconfig import write_kubeconfig
from toolkit.lifecycle import ACCOUNT as LIFECYCLE_ACCOUNT
from toolkit.lifecycle import NAMESPACE as LIFECYCLE_NAMESPACE
from toolkit.lifecycle import TENANT_ROLE as LIFECYCLE_TENANT_ROLE
from toolkit.paths import reserve_private_file
from toolkit.shell_manifests import (
    ACTIVITY_PORT,
    SSH_PORT,
    WEB_PORT,
    shared_claim,
)
from toolkit.shell_settings import SYSTEM_NAMESPACE, Platform, platform
from toolkit.tenancy import MANAGED_BY, QUOTA_NAME, SHELLS_QUOTA, USER_LABEL, check_user_name, namespace_of

ACCOUNT = "shell-user"
TOKEN_SECRET = "shell-user-token"
SUDO_LABEL = "toolkit.dev/sudo"  # on a user's namespace: their shells may have sudo
PROFILE = "toolkit-user"  # ConfigMap in the user's namespace: what the operator recorded about them
CLUSTER_ROLE = "toolkit-shell-user"
CONFIG_READER = "toolkit-shells-config-reader"
NETWORK_POLICY = "toolkit-tenant"
LIMIT_RANGE = "toolkit-defaults"
LABELS = {MANAGED_BY: "toolkit"}
# The strictest Pod Security Standard the shell pod passes: it starts sshd as root.
POD_SECURITY_LEVEL = "baseline"
POD_SECURITY = {
    f"pod-security.kubernetes.io/{mode}": POD_SECURITY_LEVEL for mode in ("enforce", "warn", "audit")
} | {"pod-security.kubernetes.io/enforce-version": "latest"}
# Requests and limits of a container that states none, so that it still counts against the quota;
# its scratch disk's limit is the site's shellEphemeralStorage.
CONTAINER_DEFAULT_REQUEST = {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
CONTAINER_DEFAULT_LIMIT = {"cpu": "1", "memory": "1Gi"}

# What a user may do in their own namespace: run shells, nothing else.
USER_RULES = [
    # Not statefulsets/scale: replicas change through the StatefulSet, where admission reads its
    # expiry (shells_platform's toolkit-shell-lifetime policy).
    {"apiGroups": ["apps"], "resources": ["statefulsets"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services", "secrets", "persistentvolumeclaims"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
    # A web terminal's HTTPS route; shells_platform's toolkit-user-ingresses policy binds its host.
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods", "events", "resourcequotas", "limitranges"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [PROFILE], "verbs": ["get"]},
    # Where the cluster queues shells (Kueue): their own queue, their shells' places in it.
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues", "workloads"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["visibility.kueue.x-k8s.io"], "resources": ["localqueues/pendingworkloads"],
     "verbs": ["get"]},
]  # fmt: skip
# Cluster-wide reads, for sizing shells. Never other tenants' pods: `shell avail` reads the GPU
# counts the cluster publishes instead (toolkit.capacity).
CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
    {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get"]},
    {"apiGroups": ["node.k8s.io"], "resources": ["runtimeclasses"], "verbs": ["get"]},
]


class NoSuchUser(BadInputError):
    """The cluster has no namespace for this user."""


@dataclass(frozen=True)
class Limits:
    """What a user may hold besides GPUs, CPU and memory; the cluster's defaults when not given."""

    storage: str = Platform.user_max_storage
    volumes: int = Platform.user_max_volumes
    node_ports: int = Platform.user_max_node_ports
    load_balancers: int = Platform.user_max_load_balancers
    shells: int = Platform.user_max_shells

    @classmethod
    def of(cls, settings: Platform, **given: Any) -> Limits:
        """The settings' defaults, with each value given that is not None."""
        defaults = cls(
            settings.user_max_storage,
            settings.user_max_volumes,
            settings.user_max_node_ports,
            settings.user_max_load_balancers,
            settings.user_max_shells,
        )
        chosen = {key: value for key, value in given.items() if value is not None}
        for key, value in chosen.items():
            if key != "storage" and value < 0:
                raise BadInputError(f"--max-{key.replace('_', '-')} must be 0 or more, not {value}")
        if "storage" in chosen:
            chosen["storage"] = quantity.memory(quantity.parse(chosen["storage"], "--max-storage"))
        return replace(defaults, **chosen)


@dataclass(frozen=True)
class User:
    name: str
    namespace: str
    max_gpus: int
    gpus_used: int
    created: str
    active: bool  # False once removed without --purge: only the homes are left
    github: str = ""
    # Each quota'd resource, as the ResourceQuota names it: (used, hard).
    quota: dict[str, tuple[str, str]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # from `user add`: what it kept as it was, and why


def _binding_subject(user: str) -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace_of(user)}]


def node_addresses(nodes: list[dict[str, Any]]) -> list[str]:
    """Every address the API server gives for the nodes (InternalIP, ExternalIP), IPv4 and IPv6."""
    found = (
        address.get("address", "")
        for node in nodes
        for address in (node.get("status") or {}).get("addresses") or []
        if address.get("type") in ("InternalIP", "ExternalIP")
    )
    return [address for address in dict.fromkeys(found) if is_ip_address(address)]


def network_policy(
    namespace: str, labels: dict[str, str], settings: Platform, nodes: list[str] | None = None
) -> dict[str, Any]:
    """The namespace's traffic, owned by the operator: its own pods reach each other; from
    elsewhere only SSH and the web terminal come in; out go DNS and anything outside the pod
    network, the denied ranges and the `nodes`' own addresses (their kubelets), never another
    namespace's pods. IPv4 and, on a dual-stack cluster, IPv6 each get their own block, as an
    ipBlock's exceptions must lie inside its CIDR."""
    pod_networks = [ipaddress.ip_network(cidr, strict=False) for cidr in settings.pod_cidrs]
    denied = pod_networks + [
        ipaddress.ip_network(cidr, strict=False) for cidr in [*settings.egress_denied_cidrs, *(nodes or [])]
    ]
    # IPv6 goes out only on a dual-stack cluster, whose IPv6 pod network is then excepted too;
    # elsewhere it stays closed, as an IPv4 block alone leaves it.
    versions = [("0.0.0.0/0", 4)] + ([("::/0", 6)] if any(n.version == 6 for n in pod_networks) else [])
    outside = [
        {
            "ipBlock": {
                "cidr": everything,
                "except": list(dict.fromkeys(str(n) for n in denied if n.version == v)),
            }
        }
        for everything, v in versions
    ]
    dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": NETWORK_POLICY, "namespace": namespace, "labels": labels},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": {}}]},
                {"ports": [{"port": port, "protocol": "TCP"} for port in (SSH_PORT, WEB_PORT)]},
                # The shell agents' activity reports, for the lifecycle's idle pause only.
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": LIFECYCLE_NAMESPACE}
                            }
                        }
                    ],
                    "ports": [{"port": ACTIVITY_PORT, "protocol": "TCP"}],
                },
            ],
            "egress": [
                {"to": [{"podSelector": {}}]},
                {"to": [dns], "ports": [{"port": 53, "protocol": p} for p in ("UDP", "TCP")]},
                {"to": outside},
            ],
        },
    }


def manifests(
    user: str,
    max_gpus: int,
    cpu: Fraction,
    memory: Fraction,
    github: str = "",
    limits: Limits | None = None,
    settings: Platform | None = None,
    nodes: list[str] | None = None,
    sudo: bool = False,
) -> list[dict[str, Any]]:
    """Every object of one user, in the order they are applied; `nodes` are the nodes' addresses,
    which the user's pods may not reach. `sudo` lets their shells have sudo (toolkit-user-sudo
    reads the namespace's label; `shell create` reads the profile's copy)."""
    limits, settings = limits or Limits(), settings or Platform()
    namespace = namespace_of(user)
    labels = {**LABELS, USER_LABEL: user}
    rbac = "rbac.authorization.k8s.io/v1"
    scratch = quantity.parse(settings.shell_ephemeral_storage, "shellEphemeralStorage")
    queued = (
        [gpu_queue.local_queue(namespace, settings.queue, settings.cluster_queue or settings.queue, labels)]
        if settings.queue
        else []
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                # Written either way: re-running `user add` without --sudo takes it back.
                "labels": {**labels, **POD_SECURITY, SUDO_LABEL: "true" if sudo else "false"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "hard": {
                    f"requests.{GPU}": str(max_gpus),
                    "requests.cpu": quantity.cpu(cpu),
                    "requests.memory": quantity.memory(memory),
                    "requests.storage": limits.storage,
                    # Their homes, and their shared area and the site's datasets beside them.
                    "persistentvolumeclaims": str(
                        limits.volumes
                        + bool(settings.shared_storage)
                        + (settings.datasets_volume is not None)
                    ),
                    "services.nodeports": str(limits.node_ports),
                    "services.loadbalancers": str(limits.load_balancers),
                    # Per shell: a pod (one per node of a multi-node shell), a StatefulSet, a
                    # Secret, an Ingress and two Services (SSH, and the web terminal's for the
                    # ingress; a third names a multi-node shell's pods); and the user's token's Secret.
                    "pods": str(limits.shells * settings.max_nodes),
                    SHELLS_QUOTA: str(limits.shells),
                    "services": str((2 if settings.max_nodes == 1 else 3) * limits.shells),
                    "count/ingresses.networking.k8s.io": str(limits.shells),
                    "count/secrets": str(limits.shells + 1),
                    "limits.ephemeral-storage": quantity.memory(scratch * limits.shells * settings.max_nodes),
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": LIMIT_RANGE, "namespace": namespace, "labels": labels},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": CONTAINER_DEFAULT_LIMIT
                        | {"ephemeral-storage": settings.shell_ephemeral_storage},
                        "defaultRequest": dict(CONTAINER_DEFAULT_REQUEST),
                    }
                ]
            },
        },
        network_policy(namespace, labels, settings, nodes),
        *queued,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PROFILE, "namespace": namespace, "labels": labels},
            "data": {"github": github, "sudo": "true" if sudo else "false"},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": ACCOUNT, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": ACCOUNT, "namespace": namespace, "labels": labels},
            "rules": USER_RULES,
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": ACCOUNT, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": _binding_subject(user),
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": LIFECYCLE_ACCOUNT, "namespace": namespace, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": LIFECYCLE_TENANT_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": LIFECYCLE_ACCOUNT, "namespace": LIFECYCLE_NAMESPACE}
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE, "labels": LABELS},
            "rules": CLUSTER_RULES,
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{CLUSTER_ROLE}-{user}", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
            "subjects": _binding_subject(user),
        },
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": SYSTEM_NAMESPACE, "labels": LABELS},
        },
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": CONFIG_READER, "namespace": SYSTEM_NAMESPACE, "labels": LABELS},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {
                "name": f"{CONFIG_READER}-{user}",
                "namespace": SYSTEM_NAMESPACE,
                "labels": labels,
            },
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONFIG_READER},
            "subjects": _binding_subject(user),
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": TOKEN_SECRET,
                "namespace": namespace,
                "labels": labels,
                "annotations": {"kubernetes.io/service-account.name": ACCOUNT},
            },
        },
    ]


def _wait_for_token(kube: Kube, namespace: str, timeout: float = 30) -> dict[str, str]:
    """Kubernetes' token controller fills the Secret shortly after it is created: watch for it."""
    for event in kube.watch("Secret", namespace, fields=f"metadata.name={TOKEN_SECRET}", timeout=timeout):
        data = (event["object"].get("data") or {}) if event["type"] in ("ADDED", "MODIFIED") else {}
        if data.get("token"):
            return {key: base64.b64decode(value).decode() for key, value in data.items()}
    raise ToolkitError(f"the API server did not issue a token for {namespace}/{ACCOUNT} in {timeout:.0f}s")


def _make_volumes(kube: Kube, user: str, settings: Platform) -> list[str]:
    """The user's shared area and the site's datasets, where the site gives them; warnings."""
    if settings.shared_storage:
        shared = shared_claim(
            namespace_of(user), user, settings.storage_class, settings.access_mode, settings.shared_storage
        )
        datasets.create_within_quota(kube, shared)
    return datasets.give(kube, user, settings)


def sudo_allowed(kube: Kube, user: str) -> bool:
    """Whether the operator let the user's shells have sudo (`user add --sudo`)."""
    profile = kube.get("ConfigMap", PROFILE, namespace_of(user)) or {}
    return (profile.get("data") or {}).get("sudo") == "true"


def recorded_github(kube: Kube, user: str) -> str:
    """The GitHub account the operator recorded for the user, or ""."""
    profile = kube.get("ConfigMap", PROFILE, namespace_of(user)) or {}
    return str((profile.get("data") or {}).get("github", ""))


def shell_keys(kube: Kube, user: str, ssh_keys: list[Path], github: list[str], github_url: str) -> list[str]:
    """The public keys given for a shell; with none, those of the GitHub account recorded for the user."""
    github_users = list(github)
    if not ssh_keys and not github_users:
        account = recorded_github(kube, user)
        github_users = [account] if account else []
    return sshkeys.gather(ssh_keys, github_users, github_url)


def kubeconfig_for(user: str, server: str, token: str, ca_certificate: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_certificate:
        cluster["certificate-authority-data"] = base64.b64encode(ca_certificate.encode()).decode()
    name = f"toolkit-{user}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace_of(user)}}
        ],
        "current-context": name,
        "preferences": {},
    }


def _refuse_lookalike(user: str, others: list[str]) -> None:
    """A new user's name may not hold "--" nor extend another user's at a "-" (or be extended by
    it). The ingress controller keys each web terminal's backend by namespace, Service and port
    with every run of other characters made one "-" (Traefik's Normalize): alice's shell lee-gpu
    (user-alice, lee-gpu-web) and alice-lee's shell gpu (user-alice-lee, gpu-web) would be one."""
    if "--" in user:
        raise BadInputError(
            f"user name {user!r} has '--': the cluster's ingress could not tell its web terminals "
            "from another user's; pick another name"
        )
    for other in others:
        if other != user and (user.startswith(f"{other}-") or other.startswith(f"{user}-")):
            raise BadInputError(
                f"user name {user!r} and the user {other!r} differ only past a '-': the cluster's "
                "ingress could not tell their web terminals apart; pick another name"
            )


def add(
    kube: Kube,
    user: str,
    max_gpus: int,
    kubeconfig_path: Path,
    cpu: str | None,
    memory: str | None,
    github: str = "",
    github_url: str = sshkeys.GITHUB_KEYS_URL,
    overwrite: bool = False,
    storage: str | None = None,
    volumes: int | None = None,
    node_ports: int | None = None,
    load_balancers: int | None = None,
    shells: int | None = None,
    sudo: bool | None = None,
) -> User:
    """Create or update the user (idempotent), and write their kubeconfig (0600).

    `github` records the user's GitHub account: their shells get its published keys when no key
    is given. It must publish at least one key. An existing kubeconfig file is replaced only
    with `overwrite`; the file is checked before anything is created on the cluster. Storage,
    volumes, node ports, load balancers and shells not given take the cluster's defaults.
    """
    check_user_name(user)
    namespace = namespace_of(user)
    found = kube.get("Namespace", namespace)
    existed = found is not None
    if sudo is None:  # as the operator left it
        sudo = ((found or {}).get("metadata", {}).get("labels") or {}).get(SUDO_LABEL) == "true"
    if not existed:
        others = kube.list("Namespace", labels=f"{MANAGED_BY}=toolkit,{USER_LABEL}")["items"]
        _refuse_lookalike(user, [ns["metadata"]["labels"][USER_LABEL] for ns in others])
    settings = platform(kube)
    limits = Limits.of(
        settings,
        storage=storage,
        volumes=volumes,
        node_ports=node_ports,
        load_balancers=load_balancers,
        shells=shells,
    )
    if github:
        sshkeys.keys_from_github(github, github_url)
    if max_gpus < 0:
        raise BadInputError(f"--max-gpus must be 0 or more, not {max_gpus}")
    listed = kube.list("Node")["items"]
    nodes = [NodeCapacity.from_node(n) for n in listed]
    gpu_nodes = [n for n in nodes if n.gpus] or nodes
    if not gpu_nodes:
        raise BadInputError("the cluster has no nodes: run 'toolkit cluster up' first")
    largest = max(gpu_nodes, key=lambda n: (n.gpus, n.cpu))
    if max_gpus > sum(n.gpus for n in nodes):
        raise BadInputError(
            f"--max-gpus {max_gpus} is more than the cluster's {sum(n.gpus for n in nodes)} GPUs"
        )
    cpu_share, memory_share = share(largest, max(max_gpus, 1))
    cpu_quota = quantity.parse(cpu, "--cpu") if cpu else cpu_share
    memory_quota = quantity.parse(memory, "--memory") if memory else memory_share
    reserved = reserve_private_file(kubeconfig_path, "--output", overwrite)
    try:
        objects = manifests(
            user, max_gpus, cpu_quota, memory_quota, github, limits, settings, node_addresses(listed), sudo
        )
        # In a new namespace before its quota, which admission can't judge until its usage is
        # counted; in an existing one after, whose limits may have been raised for them. Made
        # once, never re-applied: a claim's size and access mode are fixed once bound.
        volumes_after = "ResourceQuota" if existed else "Namespace"
        warnings: list[str] = []
        for manifest in objects:
            kube.apply(manifest)
            if manifest["kind"] == volumes_after:
                warnings = _make_volumes(kube, user, settings)
        token = _wait_for_token(kube, namespace)
    except (ToolkitError, KeyboardInterrupt):
        if reserved:
            kubeconfig_path.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(NoSuchUser):  # the namespace never got made: nothing to undo
                remove(kube, user, purge=True)
        raise
    document = kubeconfig_for(user, kube.server, token["token"], token.get("ca.crt", ""))
    write_kubeconfig(kubeconfig_path, document)
    return User(user, namespace, max_gpus, 0, "", True, github, warnings=tuple(warnings))


def list_users(kube: Kube) -> list[User]:
    """Three list calls: the users' namespaces, their quotas and their recorded profiles."""
    namespaces = kube.list("Namespace", labels=f"{MANAGED_BY}=toolkit,{USER_LABEL}")["items"]
    quotas = {
        q["metadata"]["namespace"]: q
        for q in kube.list("ResourceQuota", labels=f"{MANAGED_BY}=toolkit")["items"]
        if q["metadata"]["name"] == QUOTA_NAME
    }
    profiles = {
        c["metadata"]["namespace"]: (c.get("data") or {}).get("github", "")
        for c in kube.list("ConfigMap", labels=f"{MANAGED_BY}=toolkit,{USER_LABEL}")["items"]
        if c["metadata"]["name"] == PROFILE
    }
    users = []
    for ns in namespaces:
        name = ns["metadata"]["labels"][USER_LABEL]
        quota = quotas.get(ns["metadata"]["name"], {})
        hard = (quota.get("spec") or {}).get("hard") or {}
        used = (quota.get("status") or {}).get("used") or {}
        users.append(
            User(
                name=name,
                namespace=ns["metadata"]["name"],
                max_gpus=int(hard.get(f"requests.{GPU}", "0")),
                gpus_used=int(used.get(f"requests.{GPU}", "0")),
                created=ns["metadata"].get("creationTimestamp", ""),
                active=bool(quota),
                github=profiles.get(ns["metadata"]["name"], ""),
                quota={name: (str(used.get(name, "0")), str(limit)) for name, limit in hard.items()},
            )
        )
    return sorted(users, key=lambda u: u.name)


def remove(kube: Kube, user: str, purge: bool) -> list[str]:
    """Remove the user's shells and access; their homes (PVCs) stay unless `purge`."""
    check_user_name(user)
    namespace = namespace_of(user)
    if kube.get("Namespace", namespace) is None:
        raise NoSuchUser(f"there is no user {user!r} on this cluster (toolkit user list shows them)")
    removed = (
        [f"ClusterRoleBinding/{CLUSTER_ROLE}-{user}"]
        if kube.delete("ClusterRoleBinding", f"{CLUSTER_ROLE}-{user}")
        else []
    )
    if kube.delete("RoleBinding", f"{CONFIG_READER}-{user}", SYSTEM_NAMESPACE):
        removed.append(f"RoleBinding/{CONFIG_READER}-{user}")
    if purge:
        removed += datasets.take_back(kube, user, claim_too=False)  # the namespace takes the claim
        kube.delete("Namespace", namespace)
        return [*removed, f"Namespace/{namespace} (with every shell and home volume in it)"]
    for shell in shells.list_shells(kube, user):
        removed += shells.delete(kube, user, shell.name, purge=False)
    removed += datasets.take_back(kube, user, claim_too=True)
    for kind, name in (
        ("ConfigMap", PROFILE),
        ("Secret", TOKEN_SECRET),
        ("RoleBinding", ACCOUNT),
        ("Role", ACCOUNT),
        ("ServiceAccount", ACCOUNT),
        ("ResourceQuota", QUOTA_NAME),
        ("LimitRange", LIMIT_RANGE),
        ("NetworkPolicy", NETWORK_POLICY),
    ):
        if kube.delete(kind, name, namespace):
            removed.append(f"{kind}/{name}")
    return removed
