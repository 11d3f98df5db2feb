"""The Kubernetes objects of one GPU shell, rendered from a ShellSpec as plain manifests.

A shell is a Secret (authorized_keys, the shell's SSH host key, the ttyd credential), a PVC
(the user's home, kept when the shell is paused or deleted without --purge; or one of their
disks, `create --disk`), a StatefulSet of one replica and a Service; every shell of a user also
mounts their shared area (PVC `shared`, at /shared) where the site gives one. A multi-node shell
(`create --nodes N`) is a StatefulSet of N replicas, one per node, started in parallel, named
NAME-I.NAME-peers by a headless Service; users come in to pod 0. The namespace's
own NetworkPolicy, which `user add` makes and the user cannot change, admits only SSH and ttyd
from outside it. The container runs as root only to start sshd: every capability beyond what
sshd needs is dropped, it is never privileged, and sessions run as the user
(images/shell/entrypoint.sh). A shell of another image (`create --image`) runs the same entrypoint
from the shell image's toolbox, which an init container copies into the pod (TOOLBOX_PATH).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from toolkit import quantity
from toolkit.gpu_queue import QUEUE_NAME_LABEL
from toolkit.gpu_types import PRODUCT_LABEL as GPU_PRODUCT
from toolkit.sshkeys import KeyPair
from toolkit.tenancy import MANAGED_BY, USER_LABEL, check_name

# Kubernetes' own: the label every StatefulSet pod carries with its name, and its ordinal.
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
HOSTNAME_LABEL = "kubernetes.io/hostname"

Manifest = dict[str, Any]

COMPONENT = "app.kubernetes.io/component"
SHELL_LABEL = "toolkit.dev/shell"
EXPIRES_AT = "toolkit.dev/expires-at"
HOST_KEY = "toolkit.dev/ssh-host-key"
ENDPOINT = "toolkit.dev/ssh-endpoint"
WEB_ENDPOINT = "toolkit.dev/web-endpoint"
GPUS = "toolkit.dev/gpus"  # per node
# A multi-node shell's pods (one per node), which resume scales it back to; its owner can write
# it, so it is read as input and admission holds the replicas to the cluster's maxNodes.
NODES = "toolkit.dev/nodes"
KEYS_REVISION = "toolkit.dev/keys-revision"  # bumped to restart a shell whose image has no agent
# The shell's image runs shell-agent.py, which follows the Secret: keys and expiry, no restart.
AGENT = "toolkit.dev/agent"
EXPIRES_AT_KEY = "expires-at"  # the Secret's copy of the expiry, which the running shell reads
REAPED_AT = "toolkit.dev/reaped-at"  # when the reaper paused the shell, expired; only operators write it
# Minutes without activity after which the lifecycle pauses the shell ("0": never), as asked at
# creation; its owner can write it, so the lifecycle holds it to the cluster's limits.
IDLE_MINUTES = "toolkit.dev/idle-minutes"
IDLE_MINUTES_KEY = "idle-minutes"  # the Secret's copy, for the shell's own idle warnings
IDLE_PAUSED_AT = "toolkit.dev/idle-paused-at"  # when the lifecycle paused it, idle; for list/show
# The shell's GPU use as the lifecycle last read it from dcgm-exporter, for its owner's list and
# show (toolkit.gpu_metrics.PUBLISHED); its owner can write it too, and fool only themselves.
GPU_USE = "toolkit.dev/gpu-use"
# A queued shell's lifetime in seconds, which starts when it runs: until then its expires-at is only
# the latest it could be. Whoever sees it start first (its create, the lifecycle) rebases the expiry
# on the pod's start and removes this mark.
EXPIRY_FROM_START = "toolkit.dev/expiry-from-start"
SSH_PORT = 22
WEB_PORT = 7681
# The shell agent's activity report (images/shell/shell-agent.py), which the lifecycle reads.
ACTIVITY_PORT = 7682
SHELL_UID = 1000
JUPYTER_PORT = 8888  # JupyterLab's, on the shell's loopback: the web gate's and `ssh -L`'s way in
JUPYTER_PATH = "/jupyter/lab"  # where JupyterLab answers (its base_url, /jupyter/, then lab)
JUPYTER_TOKEN_KEY = "jupyter-token"
JUPYTER_TUNNEL = f"{JUPYTER_PORT}:127.0.0.1:{JUPYTER_PORT}"  # ssh -L's forward to it
# A multi-node shell: torchrun's rendezvous on pod 0, the hostfile every pod gets (OpenMPI's and
# DeepSpeed's format alike: "HOST slots=N"), and the key its pods log in to each other with.
MASTER_PORT = 29500
# Where a multi-node shell's pods log in to each other with its peer key: a port the namespace's
# NetworkPolicy opens to its own pods only (users come in on SSH_PORT, with their own keys).
PEER_SSH_PORT = 2222
HOSTFILE = "/etc/shell/hostfile"
PEER_KEY = "peer_ed25519_key"
# How much each topology label weighs when a multi-node shell's pods are placed: the first label
# the site names (an NVLink domain) most, then each next one (a leaf switch) less.
TOPOLOGY_WEIGHTS = (100, 50, 25, 10)
# Where the shell image keeps its toolbox (images/shell/build-toolbox.sh), and where a shell of
# another image finds its copy: every program there is bound to this path.
TOOLBOX_PATH = "/opt/shell-toolbox"
# bash -p: the image's BASH_ENV, ENV and exported functions never reach the root entrypoint.
TOOLBOX_COMMAND = [
    f"{TOOLBOX_PATH}/bin/tini",
    "-g",
    "--",
    f"{TOOLBOX_PATH}/bin/bash",
    "-p",
    f"{TOOLBOX_PATH}/entrypoint.sh",
]
SHARED_CLAIM = "shared"  # each user's one shared area, mounted at /shared in all their shells
SHARED_PATH = "/shared"
DATASETS_CLAIM = "datasets"  # the site's read-only datasets, in each user's namespace (user add)
DATASETS_PATH = "/datasets"
DATASETS_VOLUME_PREFIX = "toolkit-datasets-"  # then the user and a digest of the source
# When a disk was last released by a shell (`shell delete` keeps it), for `disk list`.
RELEASED_AT = "toolkit.dev/released-at"
# Shell names become Service names (DNS-1035: a letter first) and prefix the PVC and Secret
# names; 40 leaves room for the "-home" and "-0" suffixes within Kubernetes' limits.
SHELL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
# A PVC's name: a DNS-1123 subdomain.
DISK_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
# What sshd needs to bind port 22 as root and switch to the user (found by running the image with
# exactly these: tests/integration/test_shell_end_to_end.py); everything else is dropped.
SSHD_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
    "NET_BIND_SERVICE",
]


@dataclass(frozen=True)
class ShellSpec:
    name: str
    user: str
    namespace: str
    image: str
    gpus: int
    cpu: Fraction  # the shell's share: requests are 90% of it, limits 150%
    memory: Fraction  # bytes
    storage: str
    storage_class: str
    expires_at: datetime
    authorized_keys: tuple[str, ...]
    host_key: KeyPair
    ttyd_password: str
    ssh_endpoint: str  # "HOST:PORT" users connect to, or "" until a load balancer assigns one
    web: bool = False
    shm: Fraction | None = None
    runtime_class: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    # The GPU products (nvidia.com/gpu.product) the shell may run on; () any.
    gpu_products: tuple[str, ...] = ()
    expose: str = "NodePort"
    web_endpoint: str = ""
    # The web terminal's host name behind the cluster's ingress (HTTPS); "" serves it on a node port.
    web_host: str = ""
    web_ingress_class: str = "traefik"
    idle_minutes: int = 0  # 0: never paused for being idle
    # Kueue's LocalQueue the shell waits in for its GPUs (toolkit.gpu_queue); "" on a cluster without.
    queue: str = ""
    # Set for a queued shell: its lifetime, whose clock starts when it runs (EXPIRY_FROM_START),
    # and the latest it may expire however long it waited (its maximum lifetime's end).
    lifetime_seconds: int = 0
    latest_expiry: datetime | None = None
    # The home's PVC: the shell's own (NAME-home), or an existing disk of the user's (--disk).
    home_claim: str = ""
    access_mode: str = "ReadWriteOnce"
    shared_storage: str = ""  # the user's shared area's size; "": the site gives none
    datasets: bool = False  # the site's read-only datasets at /datasets
    forward_agent: bool = False  # sshd lets the owner forward their ssh agent
    # Passwordless sudo: the entrypoint writes the sudoers line, and setuid sudo needs privilege
    # escalation allowed (toolkit-user-sudo admits that only where the site or operator allows).
    sudo: bool = False
    # Another image than the site's shell image: that image (toolbox_image, the site's) lends its
    # toolbox, and the shell runs from it.
    toolbox_image: str = ""
    # JupyterLab beside the web terminal, behind the same gate at /jupyter/, with its own token.
    jupyter: bool = False
    jupyter_token: str = ""
    # A multi-node shell: `nodes` pods of `gpus` GPUs each, one per node, reaching each other by
    # name through the headless Service NAME-peers and logging in to each other with `peer_key`.
    nodes: int = 1
    peer_key: KeyPair | None = None
    # Node labels the pods prefer to share, most wanted first (an NVLink domain, a leaf switch).
    topology_labels: tuple[str, ...] = ()
    # The site's NCCL settings, as environment variables (shell_plan.nccl_environment).
    nccl_env: tuple[tuple[str, str], ...] = ()
    # A resource each pod asks one of for RDMA (the RDMA shared device plugin's); "": none.
    rdma_resource: str = ""

    @property
    def home(self) -> str:
        return self.home_claim or claim_name(self.name)

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def processes_per_node(self) -> int:
        return max(self.gpus, 1)


def check_shell_name(name: str) -> str:
    return check_name("shell", name, SHELL_NAME, 40)


def labels(name: str, user: str) -> dict[str, str]:
    return {MANAGED_BY: "toolkit", COMPONENT: "shell", SHELL_LABEL: name, USER_LABEL: user}


def selector(name: str, user: str) -> dict[str, str]:
    return {SHELL_LABEL: name, USER_LABEL: user}


def selector_query(name: str, user: str) -> str:
    """The shell's pods as a label selector in a list request's query."""
    return ",".join(f"{key}={value}" for key, value in selector(name, user).items())


def secret_name(name: str) -> str:
    return f"{name}-ssh"


def claim_name(name: str) -> str:
    return f"{name}-home"


def web_service_name(name: str) -> str:
    return f"{name}-web"


def peers_service_name(name: str) -> str:
    return f"{name}-peers"


def peer_host(name: str, ordinal: int) -> str:
    """A multi-node shell's pod by its stable name, which the pods' DNS search path completes."""
    return f"{name}-{ordinal}.{peers_service_name(name)}"


def pod_names(name: str, nodes: int) -> list[str]:
    return [f"{name}-{ordinal}" for ordinal in range(max(nodes, 1))]


def entry_selector(spec: ShellSpec) -> dict[str, str]:
    """The pods users come in to: the shell's, or pod 0 of a multi-node shell."""
    found = selector(spec.name, spec.user)
    if spec.multi_node:
        found[POD_NAME_LABEL] = f"{spec.name}-0"
    return found


def timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def secret(spec: ShellSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(spec.name),
            "namespace": spec.namespace,
            "labels": labels(spec.name, spec.user),
        },
        "type": "Opaque",
        "stringData": {
            "authorized_keys": "".join(f"{key}\n" for key in spec.authorized_keys),
            "ssh_host_ed25519_key": spec.host_key.private_openssh,
            "ttyd-credential": f"{spec.user}:{spec.ttyd_password}",
            # What the shell shows and warns about; extend updates it (the image's shell-agent.py).
            # A queued shell counts its lifetime from its own start until one is written here.
            EXPIRES_AT_KEY: "" if spec.lifetime_seconds else timestamp(spec.expires_at),
            IDLE_MINUTES_KEY: str(spec.idle_minutes),
            **({JUPYTER_TOKEN_KEY: spec.jupyter_token} if spec.jupyter else {}),
            **(
                {PEER_KEY: spec.peer_key.private_openssh, f"{PEER_KEY}.pub": spec.peer_key.public}
                if spec.multi_node and spec.peer_key
                else {}
            ),
        },
    }


def claim(spec: ShellSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(spec.name),
            "namespace": spec.namespace,
            "labels": labels(spec.name, spec.user),
        },
        "spec": {
            "accessModes": [spec.access_mode],
            "storageClassName": spec.storage_class,
            "resources": {"requests": {"storage": spec.storage}},
        },
    }


def datasets_volumes(user: str, namespace: str, source: dict[str, Any], size: str) -> list[Manifest]:
    """The site's datasets for one user: a PersistentVolume of the site's source, read-only
    whatever the source says, reserved for the user's claim, and that claim. The claim asks for
    1Mi, so the user's storage quota barely counts what the site holds."""
    name = datasets_volume_name(user, source)
    kind, settings = next(iter(source.items()))
    labels = {MANAGED_BY: "toolkit", COMPONENT: "datasets", USER_LABEL: user}
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": namespace, "name": DATASETS_CLAIM},
                kind: {**settings, "readOnly": True},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": DATASETS_CLAIM, "namespace": namespace, "labels": labels},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": name,
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    ]


def datasets_volume_name(user: str, source: dict[str, Any]) -> str:
    """Named after the user and the source, so a changed source is a new volume (a PV's source
    can't change) while the old one is still going away."""
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:8]
    return f"{DATASETS_VOLUME_PREFIX}{user}-{digest}"


def is_sites_datasets(claim: Manifest, user: str) -> bool:
    """Whether the claim is the one `user add` made for the site's datasets: named so, on a volume
    of the user's datasets. Users can't name a claim's volume (toolkit-user-claims), so only an
    operator's claim can be that."""
    volume = str((claim.get("spec") or {}).get("volumeName") or "")
    prefix = f"{DATASETS_VOLUME_PREFIX}{user}-"
    return (
        claim.get("metadata", {}).get("name") == DATASETS_CLAIM
        and volume.startswith(prefix)
        and re.fullmatch("[0-9a-f]{8}", volume[len(prefix) :]) is not None
    )


def shared_claim(namespace: str, user: str, storage_class: str, access_mode: str, size: str) -> Manifest:
    """The user's shared area: one per user, which `user add` makes (and a shell, should its
    owner have deleted it)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": SHARED_CLAIM,
            "namespace": namespace,
            "labels": {MANAGED_BY: "toolkit", COMPONENT: "shared", USER_LABEL: user},
        },
        "spec": {
            "accessModes": [access_mode],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


def _resources(spec: ShellSpec) -> Manifest:
    requests = {
        "cpu": quantity.cpu(spec.cpu * Fraction(9, 10)),
        "memory": quantity.memory(spec.memory * Fraction(9, 10)),
    }
    limits = {
        "cpu": quantity.cpu(spec.cpu * Fraction(3, 2)),
        "memory": quantity.memory(spec.memory * Fraction(3, 2)),
    }
    if spec.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpus)
    if spec.multi_node and spec.rdma_resource:
        requests[spec.rdma_resource] = limits[spec.rdma_resource] = "1"
    return {"requests": requests, "limits": limits}


def _group_env(spec: ShellSpec) -> list[Manifest]:
    """What torchrun, DeepSpeed and MPI need on each pod of a multi-node shell; the entrypoint
    passes it on to every session, and writes the hostfile from SHELL_NODES and SHELL_PEERS."""
    if not spec.multi_node:
        return []
    rank = {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}
    return [
        {"name": "SHELL_NODES", "value": str(spec.nodes)},
        {"name": "SHELL_PEERS", "value": peers_service_name(spec.name)},
        {"name": "SHELL_PEER_SSH_PORT", "value": str(PEER_SSH_PORT)},
        {"name": "MASTER_ADDR", "value": peer_host(spec.name, 0)},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "NNODES", "value": str(spec.nodes)},
        {"name": "NPROC_PER_NODE", "value": str(spec.processes_per_node)},
        {"name": "WORLD_SIZE", "value": str(spec.nodes * spec.processes_per_node)},
        {"name": "NODE_RANK", "valueFrom": rank},
        *({"name": key, "value": value} for key, value in spec.nccl_env),
    ]


def _group_affinity(spec: ShellSpec) -> Manifest:
    """One pod per node, and the pods together in the site's topology where they can be."""
    pods = {"matchLabels": selector(spec.name, spec.user)}
    affinity: Manifest = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": pods, "topologyKey": HOSTNAME_LABEL}
            ]
        }
    }
    if spec.topology_labels:
        affinity["podAffinity"] = {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": weight, "podAffinityTerm": {"labelSelector": pods, "topologyKey": label}}
                for label, weight in zip(spec.topology_labels, TOPOLOGY_WEIGHTS, strict=False)
            ]
        }
    return affinity


def statefulset(spec: ShellSpec) -> Manifest:
    env = [
        {"name": "SHELL_USER", "value": spec.user},
        {"name": "SHELL_NAME", "value": spec.name},
        {"name": "SHELL_UID", "value": str(SHELL_UID)},
        {"name": "SHELL_GID", "value": str(SHELL_UID)},
        {"name": "SHELL_WEB", "value": "true" if spec.web else "false"},
        {"name": "SHELL_IDLE_MINUTES", "value": str(spec.idle_minutes)},
        {"name": "SHELL_AGENT_FORWARDING", "value": "true" if spec.forward_agent else "false"},
        {"name": "SHELL_SUDO", "value": "true" if spec.sudo else "false"},
        *([{"name": "SHELL_TOOLBOX", "value": "true"}] if spec.toolbox_image else []),
        *(
            [
                {"name": "SHELL_JUPYTER", "value": "true"},
                {"name": "SHELL_JUPYTER_PORT", "value": str(JUPYTER_PORT)},
            ]
            if spec.jupyter
            else []
        ),
        *(
            # A queued shell's agent counts its lifetime from its own start, up to the latest.
            [
                {"name": "SHELL_LIFETIME_SECONDS", "value": str(spec.lifetime_seconds)},
                {"name": "SHELL_LATEST_EXPIRY", "value": timestamp(spec.latest_expiry or spec.expires_at)},
            ]
            if spec.lifetime_seconds
            else [{"name": "SHELL_EXPIRES_AT", "value": timestamp(spec.expires_at)}]
        ),
        *_group_env(spec),
    ]
    ports = [
        {"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"},
        {"name": "activity", "containerPort": ACTIVITY_PORT, "protocol": "TCP"},
    ]
    if spec.web:
        ports.append({"name": "web", "containerPort": WEB_PORT, "protocol": "TCP"})
    mounts = [
        {"name": "home", "mountPath": f"/home/{spec.user}"},
        {"name": "ssh", "mountPath": "/etc/shell/secret", "readOnly": True},
    ]
    volumes: list[Manifest] = [
        {"name": "home", "persistentVolumeClaim": {"claimName": spec.home}},
        {"name": "ssh", "secret": {"secretName": secret_name(spec.name), "defaultMode": 0o400}},
    ]
    if spec.shared_storage:
        mounts.append({"name": "shared", "mountPath": SHARED_PATH})
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_CLAIM}})
    if spec.datasets:
        mounts.append({"name": "datasets", "mountPath": DATASETS_PATH, "readOnly": True})
        volumes.append(
            {"name": "datasets", "persistentVolumeClaim": {"claimName": DATASETS_CLAIM, "readOnly": True}}
        )
    if spec.shm:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes.append(
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity.memory(spec.shm)}}
        )
    if spec.toolbox_image:
        mounts.append({"name": "toolbox", "mountPath": TOOLBOX_PATH, "readOnly": True})
        volumes.append({"name": "toolbox", "emptyDir": {"sizeLimit": "1Gi"}})
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "shell",
                "image": spec.image,
                "imagePullPolicy": "IfNotPresent",
                "env": env,
                "ports": ports,
                "resources": _resources(spec),
                "securityContext": {
                    "privileged": False,
                    "allowPrivilegeEscalation": spec.sudo,
                    "capabilities": {"drop": ["ALL"], "add": SSHD_CAPABILITIES},
                    # The entrypoint starts as root whatever USER another image names (jovyan...).
                    **({"runAsUser": 0, "runAsGroup": 0} if spec.toolbox_image else {}),
                },
                "readinessProbe": {
                    "tcpSocket": {"port": SSH_PORT},
                    "periodSeconds": 2,
                    "failureThreshold": 3,
                },
                "livenessProbe": {
                    "tcpSocket": {"port": SSH_PORT},
                    "initialDelaySeconds": 10,
                    "periodSeconds": 20,
                    "failureThreshold": 3,
                },
                "volumeMounts": mounts,
                # Why it stopped, for `shell create` to say: the entrypoint's last line (an image
                # that can't be a shell) when it exits with an error.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                **({"command": TOOLBOX_COMMAND} if spec.toolbox_image else {}),
            }
        ],
        "volumes": volumes,
    }
    if spec.toolbox_image:
        pod_spec["initContainers"] = [_toolbox_copier(spec.toolbox_image)]
    if spec.runtime_class:
        pod_spec["runtimeClassName"] = spec.runtime_class
    node_selector = dict(spec.node_selector)
    if len(spec.gpu_products) == 1:
        node_selector[GPU_PRODUCT] = spec.gpu_products[0]
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if spec.multi_node:
        pod_spec["affinity"] = _group_affinity(spec)
    if len(spec.gpu_products) > 1:
        pod_spec.setdefault("affinity", {})["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_PRODUCT, "operator": "In", "values": list(spec.gpu_products)}
                        ]
                    }
                ]
            }
        }
    annotations = {
        AGENT: "1",
        EXPIRES_AT: timestamp(spec.expires_at),
        HOST_KEY: spec.host_key.public,
        ENDPOINT: spec.ssh_endpoint,
        GPUS: str(spec.gpus),
        IDLE_MINUTES: str(spec.idle_minutes),
    }
    if spec.web:
        annotations[WEB_ENDPOINT] = spec.web_endpoint
    if spec.lifetime_seconds:
        annotations[EXPIRY_FROM_START] = str(spec.lifetime_seconds)
    if spec.multi_node:
        annotations[NODES] = str(spec.nodes)
    sts_labels = labels(spec.name, spec.user)
    if spec.queue:
        sts_labels[QUEUE_NAME_LABEL] = spec.queue
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": sts_labels,
            "annotations": annotations,
        },
        "spec": {
            "replicas": spec.nodes,
            "serviceName": peers_service_name(spec.name) if spec.multi_node else spec.name,
            # A multi-node shell's pods start together, not one after another's readiness.
            **({"podManagementPolicy": "Parallel"} if spec.multi_node else {}),
            "selector": {"matchLabels": selector(spec.name, spec.user)},
            "template": {"metadata": {"labels": labels(spec.name, spec.user)}, "spec": pod_spec},
        },
    }


def _toolbox_copier(image: str) -> Manifest:
    """The init container that copies the shell image's toolbox into the pod, with no privilege."""
    return {
        "name": "toolbox",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-a", f"{TOOLBOX_PATH}/.", "/toolbox/"],
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "toolbox", "mountPath": "/toolbox"}],
    }


def service(spec: ShellSpec) -> Manifest:
    """SSH on a node port or load balancer; the web terminal there too only when it has no host
    name behind the ingress (the site's plain-HTTP opt-in)."""
    ports = [{"name": "ssh", "port": SSH_PORT, "targetPort": SSH_PORT, "protocol": "TCP"}]
    if spec.web and not spec.web_host:
        ports.append({"name": "web", "port": WEB_PORT, "targetPort": WEB_PORT, "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels(spec.name, spec.user)},
        "spec": {"type": spec.expose, "selector": entry_selector(spec), "ports": ports},
    }


def peers_service(spec: ShellSpec) -> Manifest:
    """The headless Service that names a multi-node shell's pods NAME-I.NAME-peers (the
    StatefulSet's serviceName), published before they are ready so a rendezvous can start."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": peers_service_name(spec.name),
            "namespace": spec.namespace,
            "labels": labels(spec.name, spec.user),
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(spec.name, spec.user),
            "ports": [
                {"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT, "protocol": "TCP"}
            ],
        },
    }


def web_service(spec: ShellSpec) -> Manifest:
    """The web terminal inside the cluster only (ClusterIP), for the ingress to reach."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": web_service_name(spec.name),
            "namespace": spec.namespace,
            "labels": labels(spec.name, spec.user),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": entry_selector(spec),
            "ports": [{"name": "web", "port": WEB_PORT, "targetPort": WEB_PORT, "protocol": "TCP"}],
        },
    }


def ingress(spec: ShellSpec) -> Manifest:
    """HTTPS at the shell's host name. The TLS entry names no Secret: the ingress controller serves
    its default certificate, the site's (shells_platform's TLSStore), whose key never enters a
    user's namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels(spec.name, spec.user)},
        "spec": {
            "ingressClassName": spec.web_ingress_class,
            "tls": [{"hosts": [spec.web_host]}],
            "rules": [
                {
                    "host": spec.web_host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {
                                        "name": web_service_name(spec.name),
                                        "port": {"number": WEB_PORT},
                                    }
                                },
                            }
                        ]
                    },
                }
            ],
        },
    }
