"""Cluster-wide settings of shells, as `toolkit cluster up` leaves them in toolkit-system."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from toolkit import quantity
from toolkit.errors import BadInputError, ToolkitError
from toolkit.image_names import SHELL_IMAGE
from toolkit.kube import ApiError, Kube

SYSTEM_NAMESPACE = "toolkit-system"
CONFIG_LABEL = "toolkit.dev/shells-config"
# The shortest idle pause a shell may ask for: the lifecycle checks every minute, and the shell
# warns its terminals 2 minutes before.
SHORTEST_IDLE_MINUTES = 5
MOST_IDLE_MINUTES = 999_999  # six digits, which every reader of the annotation takes


@dataclass(frozen=True)
class Platform:
    """Cluster-wide settings for shells, from labelled ConfigMaps in toolkit-system.

    `toolkit cluster up` writes them (roles wekafs_csi and shells_platform); a cluster without
    them gets these defaults.
    """

    storage_class: str = "shared-wekafs"
    # How shells' volumes are mounted: ReadWriteMany on WekaFS, so a disk moves between shells
    # without waiting for a detach; ReadWriteOnce on local-path (wekafs_csi's ConfigMap says).
    # Without the key (roles not yet re-run) the mode every class binds.
    access_mode: str = "ReadWriteOnce"
    # Each user's shared area, mounted at /shared in all of their shells; "" (none) where the
    # storage can't be shared across nodes, or the site has not said.
    shared_storage: str = ""
    # Passwordless sudo for every user's shells; False: for the users `user add --sudo` allowed.
    allow_sudo: bool = False
    # The site's read-only datasets at /datasets in every shell: a PersistentVolume source (one
    # of DATASETS_SOURCES), which `user add` gives each user as a PV and PVC of their own; None:
    # the site has none.
    datasets_volume: dict[str, Any] | None = None
    datasets_size: str = "1Ti"  # what the datasets' PVs say they hold
    runtime_class: str | None = "nvidia"
    image: str = SHELL_IMAGE
    # Where users' own images may come from (`shell create --image`): registries or repository
    # prefixes (image_refs.allowed_by); empty: anywhere. The site's shell image is always allowed.
    allowed_images: tuple[str, ...] = ()
    default_hours: int = 24
    max_hours: int = 168
    max_lifetime_hours: int = 720  # from creation: no expiry, however extended, is later
    expose: str = "NodePort"
    ssh_host: str | None = None
    require_gpu: bool = True
    reap_policy: str = "pause"
    # Minutes without terminal input or GPU use after which the lifecycle pauses a shell; 0: never.
    idle_minutes: int = 60
    # The most a shell may ask for (`create --idle-minutes`); 0: no limit, and shells may turn
    # idle pause off.
    max_idle_minutes: int = 240
    # What `user add` gives each user unless told otherwise, besides GPUs, CPU and memory.
    user_max_storage: str = "1Ti"
    user_max_volumes: int = 8
    user_max_node_ports: int = 16
    user_max_load_balancers: int = 0
    user_max_shells: int = 8  # also bounds their pods, Services and Secrets (one each, and a token)
    # Scratch disk (ephemeral storage) a shell's containers may fill outside their volumes.
    shell_ephemeral_storage: str = "100Gi"
    # How web terminals are served: "ingress" (HTTPS at NAME--USER.web_domain, through the
    # cluster's ingress and the site's certificate) or "nodeport" (plain HTTP, an opt-in).
    web_expose: str = "ingress"
    web_domain: str | None = None
    web_ingress_class: str = "traefik"
    # k3s's pod network: a user's pods reach no other namespace's pods in it.
    pod_cidrs: tuple[str, ...] = ("10.42.0.0/16",)
    # Never reached from a user's pods, e.g. the nodes' own addresses (their kubelets).
    egress_denied_cidrs: tuple[str, ...] = ()
    # Kueue's queue (toolkit.gpu_queue): the LocalQueue each user namespace gets, and the ClusterQueue
    # it feeds. None: the cluster has no queue, and a shell that doesn't fit fails at once.
    queue: str | None = None
    cluster_queue: str | None = None
    # Multi-node shells (`create --nodes`): the most pods (nodes) one shell may have, which
    # admission holds its StatefulSet to; 1: none (also on a cluster whose roles predate them).
    max_nodes: int = 1
    # Node labels a multi-node shell's pods prefer to share, most wanted first: an NVLink domain
    # (GPU feature discovery's nvidia.com/gpu.clique), then what the site labels, e.g. a leaf switch.
    topology_labels: tuple[str, ...] = ()
    # NCCL over the pods' network: the interface for sockets, and RDMA where the site gives each
    # pod a device (the resource an RDMA device plugin advertises; "" none: NCCL uses sockets).
    nccl_socket_ifname: str = "eth0"
    rdma_resource: str = ""

    @classmethod
    def from_config_maps(cls, config_maps: list[dict[str, Any]]) -> Platform:
        data: dict[str, str] = {}
        for config_map in sorted(config_maps, key=lambda c: c["metadata"]["name"]):
            data.update(config_map.get("data") or {})
        defaults = cls()

        def number(key: str, default: int) -> int:
            try:
                return int(data.get(key, default))
            except ValueError:
                raise ToolkitError(
                    f"{SYSTEM_NAMESPACE} ConfigMap key {key} is not a number: {data[key]!r}"
                ) from None

        def size(key: str, default: str) -> str:
            """A volume's size; "" for none (empty or 0)."""
            text = data.get(key, default).strip()
            try:
                value = quantity.parse(text, key) if text else 0
            except BadInputError:
                raise ToolkitError(
                    f"{SYSTEM_NAMESPACE} ConfigMap key {key} is not a size: {text!r}"
                ) from None
            return text if value > 0 else ""

        def cidrs(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            if key not in data:
                return default
            found = tuple(part.strip() for part in data[key].split(",") if part.strip())
            for cidr in found:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise ToolkitError(
                        f"{SYSTEM_NAMESPACE} ConfigMap key {key} holds {cidr!r}, not a CIDR"
                    ) from None
            return found

        return cls(
            storage_class=data.get("storageClassName", defaults.storage_class),
            access_mode=access_mode(data.get("accessMode", defaults.access_mode)),
            shared_storage=size("sharedStorage", defaults.shared_storage),
            runtime_class=data.get("runtimeClassName", defaults.runtime_class or "") or None,
            image=data.get("image", defaults.image),
            allowed_images=tuple(
                part.strip() for part in data.get("allowedImages", "").split(",") if part.strip()
            ),
            default_hours=number("defaultHours", defaults.default_hours),
            max_hours=number("maxHours", defaults.max_hours),
            max_lifetime_hours=number("maxLifetimeHours", defaults.max_lifetime_hours),
            expose=data.get("expose", defaults.expose),
            ssh_host=data.get("sshHost") or None,
            require_gpu=data.get("requireGpu", "true").lower() == "true",
            allow_sudo=data.get("allowSudo", "false").lower() == "true",
            datasets_volume=datasets_volume(data.get("datasetsVolume", "")),
            datasets_size=size("datasetsSize", defaults.datasets_size) or defaults.datasets_size,
            reap_policy=data.get("reapPolicy", defaults.reap_policy),
            idle_minutes=number("idleMinutes", defaults.idle_minutes),
            max_idle_minutes=number("maxIdleMinutes", defaults.max_idle_minutes),
            user_max_storage=data.get("userMaxStorage", defaults.user_max_storage),
            user_max_volumes=number("userMaxVolumes", defaults.user_max_volumes),
            user_max_node_ports=number("userMaxNodePorts", defaults.user_max_node_ports),
            user_max_load_balancers=number("userMaxLoadBalancers", defaults.user_max_load_balancers),
            user_max_shells=number("userMaxShells", defaults.user_max_shells),
            shell_ephemeral_storage=data.get("shellEphemeralStorage", defaults.shell_ephemeral_storage),
            web_expose=data.get("webExpose", defaults.web_expose),
            web_domain=data.get("webDomain") or None,
            web_ingress_class=data.get("webIngressClass") or defaults.web_ingress_class,
            pod_cidrs=cidrs("podCidrs", defaults.pod_cidrs),
            egress_denied_cidrs=cidrs("egressDeniedCidrs", defaults.egress_denied_cidrs),
            queue=data.get("queueName") or None,
            cluster_queue=(data.get("clusterQueueName") or data.get("queueName"))
            if data.get("queueName")
            else None,
            max_nodes=max(1, number("maxNodes", defaults.max_nodes)),
            topology_labels=_label_keys(data.get("topologyLabels", "")),
            nccl_socket_ifname=_interface(data.get("ncclSocketIfname", defaults.nccl_socket_ifname)),
            rdma_resource=_resource(data.get("rdmaResource", "").strip()),
        )


ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany")
# A label key as Kubernetes takes it (an optional DNS prefix, then a name), and an extended
# resource's name (a DNS domain, then a name: rdma/rdma_shared_device_a).
LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
RESOURCE_NAME = re.compile(
    r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
# NCCL_SOCKET_IFNAME: interface names or prefixes, "^" to exclude, "=" for an exact match.
INTERFACES = re.compile(r"[\^=]?[A-Za-z0-9_.:-]{1,15}(,[\^=]?[A-Za-z0-9_.:-]{1,15})*")


def _label_keys(text: str) -> tuple[str, ...]:
    found = tuple(part.strip() for part in text.split(",") if part.strip())
    for key in found:
        if not LABEL_KEY.fullmatch(key):
            raise ToolkitError(
                f"{SYSTEM_NAMESPACE} ConfigMap key topologyLabels holds {key!r}, not a label key"
            )
    return found


def _interface(text: str) -> str:
    if not INTERFACES.fullmatch(text.strip()):
        raise ToolkitError(
            f"{SYSTEM_NAMESPACE} ConfigMap key ncclSocketIfname is {text!r}, not interface names (eth0)"
        )
    return text.strip()


def _resource(text: str) -> str:
    if text and not RESOURCE_NAME.fullmatch(text):
        raise ToolkitError(
            f"{SYSTEM_NAMESPACE} ConfigMap key rdmaResource is {text!r}, not a resource name "
            "(rdma/rdma_shared_device_a)"
        )
    return text


# The PersistentVolume sources the site's datasets may come from, with what each must name: a CSI
# driver's volume (WekaFS's dir/v1 handles) or an NFS export; never a node's own paths.
DATASETS_SOURCES = {"csi": ("driver", "volumeHandle"), "nfs": ("server", "path")}


def datasets_volume(text: str) -> dict[str, Any] | None:
    """The datasets' PV source from its JSON (the role's `to_json`), or None when empty."""
    if not text.strip():
        return None
    try:
        source = json.loads(text)
    except ValueError:
        source = None
    ((kind, settings),) = source.items() if isinstance(source, dict) and len(source) == 1 else (("", None),)
    needed = DATASETS_SOURCES.get(kind, ())
    if not (needed and isinstance(settings, dict)
            and all(isinstance(settings.get(key), str) and settings[key] for key in needed)):  # fmt: skip
        raise ToolkitError(
            f"{SYSTEM_NAMESPACE} ConfigMap key datasetsVolume is not one PersistentVolume source as "
            f"JSON, csi with driver and volumeHandle or nfs with server and path: {text[:80]!r}"
        )
    return {kind: settings}


def access_mode(text: str) -> str:
    if text not in ACCESS_MODES:
        raise ToolkitError(
            f"{SYSTEM_NAMESPACE} ConfigMap key accessMode is {text!r}, not one of {', '.join(ACCESS_MODES)}"
        )
    return text


def platform(kube: Kube) -> Platform:
    """One list call: every ConfigMap in toolkit-system labelled as shells configuration."""
    try:
        found = kube.list("ConfigMap", SYSTEM_NAMESPACE, labels=f"{CONFIG_LABEL}=true")["items"]
    except ApiError as error:
        if error.code != 404:
            raise
        found = []
    return Platform.from_config_maps(found)
