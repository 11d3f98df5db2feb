"""Planning a shell: the user's request and what the cluster holds in, every object to apply out.

Nothing here talks to the API server. `shell_create` reads the `ClusterFacts` (one request
each), asks `plan_create` for the objects, applies them and waits; unit tests check plans
without any server. A request the cluster can't honour is refused with every reason at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from toolkit import durations, gpu_types, image_refs, quantity
from toolkit import shell_manifests as manifests
from toolkit.capacity import GPU, NodeCapacity, share
from toolkit.errors import BadInputError, ToolkitError
from toolkit.shell_settings import MOST_IDLE_MINUTES, SHORTEST_IDLE_MINUTES, Platform
from toolkit.sshkeys import KeyPair, generate_key_pair
from toolkit.tenancy import SHELLS_QUOTA, check_user_name, namespace_of

EXPOSE_CHOICES = ("NodePort", "LoadBalancer")
DEFAULT_STORAGE = "100Gi"  # a new home's size
CREATED_BY = "toolkit.dev/created-by"
DNS_LABEL_MAX = 63


@dataclass(frozen=True)
class CreateRequest:
    name: str
    user: str
    authorized_keys: tuple[str, ...]
    gpus: int = 1  # per node
    nodes: int = 1  # pods, one per node (a multi-node shell)
    cpu: str | None = None
    memory: str | None = None
    shm: str | None = None
    image: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_type: str | None = None  # a GPU product as people say it (h100); gpu_types matches it
    web: bool = False
    jupyter: bool = False  # JupyterLab, served beside the web terminal (so it implies web)
    hours: Fraction | None = None  # the shell's lifetime; None: the cluster's default
    idle_minutes: int | None = None  # paused after this long idle (0: never); None: the cluster's
    storage: str | None = None  # a new home's size; None: DEFAULT_STORAGE
    storage_class: str | None = None
    disk: str | None = None  # an existing volume of the user's as the home, instead of a new one
    forward_agent: bool = False
    sudo: bool = False  # passwordless sudo in the shell, where the site or the operator allows it
    expose: str | None = None
    timeout: float = 300
    keep_on_failure: bool = False
    # Where the cluster queues shells (Kueue): False fails at once when the GPUs are taken
    # (--no-queue); `wait` False returns once the shell is queued or starting (--no-wait).
    queue: bool = True
    wait: bool = True


@dataclass(frozen=True)
class ClusterFacts:
    """What a create must know of the cluster before it applies anything."""

    settings: Platform
    nodes: tuple[NodeCapacity, ...]
    quota: dict[str, Any] | None  # the user's ResourceQuota; None when the user is not set up
    storage_class: str  # the class the home volume asks for
    storage_class_exists: bool
    runtime_class: str | None  # None for a CPU-only shell, or a cluster without one
    runtime_class_exists: bool
    shell_exists: bool
    # The disk asked for as the home (None: not asked, or not found), and what holds it: the
    # shells and pods of the namespace that mount it.
    disk: dict[str, Any] | None = None
    disk_users: tuple[str, ...] = ()
    sudo_allowed_to_user: bool = False  # `user add --sudo` (read only when sudo is asked for)
    # NAME-peers is already a Service (a shell named so): read only for a multi-node shell.
    peers_service_taken: bool = False
    # A shell named like another's extra Service (X-web, X-peers) finds it there: read only then.
    name_is_a_service: bool = False
    datasets: bool = False  # the user has the site's datasets (`user add` gave them), and the site still does


@dataclass(frozen=True)
class Endpoint:
    """Where users reach the shell: the host, SSH's port and the web terminal's (or None)."""

    host: str
    ssh_port: int
    web_port: int | None

    def annotations(self) -> dict[str, str]:
        if not self.host:
            return {}
        found = {manifests.ENDPOINT: f"{self.host}:{self.ssh_port}"}
        if self.web_port:
            found[manifests.WEB_ENDPOINT] = f"{self.host}:{self.web_port}"
        return found


def service_endpoint(
    name: str, service: dict[str, Any], load_balanced: bool, node_host: str, web: bool
) -> Endpoint:
    """Where a shell's Service is reached, from the API server's own fields: a load balancer's
    address once it has one, at the Service's ports; otherwise `node_host` (the site's SSH host
    or a node's address) at the node ports."""
    spec = service.get("spec") or {}
    if load_balanced:
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        host = (ingress[0].get("ip") or ingress[0].get("hostname", "")) if ingress else ""
    else:
        host = node_host
    ports = {
        port.get("name"): int(port["port"] if load_balanced else port["nodePort"])
        for port in spec.get("ports") or []
        if (port.get("port") if load_balanced else port.get("nodePort"))
    }
    if "ssh" not in ports:
        raise ToolkitError(f"service {name} has no ssh port")
    return Endpoint(host, ports["ssh"], ports.get("web") if web else None)


@dataclass(frozen=True)
class ShellPlan:
    """A shell's objects, in the order they are applied. The StatefulSet records its endpoint,
    which depends on the Service's node port, so it is rendered once that is known."""

    spec: manifests.ShellSpec
    node: NodeCapacity  # the node the shell was sized from
    ssh_host: str | None  # the site's SSH host name, if it set one
    # Marks every object this create makes, so a failed or interrupted create removes only its
    # own: never a home kept from an earlier shell, nor another create's objects of the name.
    creation_id: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def secret(self) -> dict[str, Any]:
        return self._marked(manifests.secret(self.spec))

    @property
    def claim(self) -> dict[str, Any] | None:
        """The new home, or None when the shell mounts an existing disk."""
        return None if self.spec.home_claim else self._marked(manifests.claim(self.spec))

    @property
    def shared_claim(self) -> dict[str, Any] | None:
        """The user's shared area, which `user add` made, for a create to make again should its
        owner have deleted it (unmarked: it is the user's, and kept when the create fails); None
        where the site gives none."""
        spec = self.spec
        if not spec.shared_storage:
            return None
        return manifests.shared_claim(
            spec.namespace, spec.user, spec.storage_class, spec.access_mode, spec.shared_storage
        )

    @property
    def service(self) -> dict[str, Any]:
        return self._marked(manifests.service(self.spec))

    @property
    def peers_service(self) -> dict[str, Any] | None:
        """A multi-node shell's headless Service, which names its pods; None for one node."""
        return self._marked(manifests.peers_service(self.spec)) if self.spec.multi_node else None

    @property
    def web_objects(self) -> list[dict[str, Any]]:
        """The web terminal's Service and Ingress, when it is served through the ingress."""
        if not self.spec.web_host:
            return []
        return [self._marked(manifests.web_service(self.spec)), self._marked(manifests.ingress(self.spec))]

    @property
    def web_is_plain_http(self) -> bool:
        """The site opted out of the ingress: the web terminal is plain HTTP on a node port."""
        return self.spec.web and not self.spec.web_host

    def jupyter_url(self, endpoint: Endpoint) -> str | None:
        """JupyterLab's address (without its token)."""
        web = self.web_url(endpoint)
        return f"{web.rstrip('/')}{manifests.JUPYTER_PATH}" if self.spec.jupyter and web else None

    def web_url(self, endpoint: Endpoint) -> str | None:
        if self.spec.web_host:
            return f"https://{self.spec.web_host}/"
        if self.spec.web and endpoint.host and endpoint.web_port:
            return f"http://{endpoint.host}:{endpoint.web_port}/"
        return None

    def _marked(self, manifest: dict[str, Any]) -> dict[str, Any]:
        metadata = manifest["metadata"]
        metadata["annotations"] = {**(metadata.get("annotations") or {}), CREATED_BY: self.creation_id}
        return manifest

    def endpoint(self, service: dict[str, Any]) -> Endpoint:
        """Where the applied Service is reached (service_endpoint), from the sized node."""
        load_balanced = self.spec.expose == "LoadBalancer"
        host = self.ssh_host or self.node.address
        return service_endpoint(self.spec.name, service, load_balanced, host, self.spec.web)

    def statefulset(self, endpoint: Endpoint) -> dict[str, Any]:
        recorded = endpoint.annotations()
        if self.spec.web_host:
            recorded[manifests.WEB_ENDPOINT] = f"{self.spec.web_host}:443"
        return self._marked(
            manifests.statefulset(
                replace(
                    self.spec,
                    ssh_endpoint=recorded.get(manifests.ENDPOINT, ""),
                    web_endpoint=recorded.get(manifests.WEB_ENDPOINT, ""),
                )
            )
        )

    def objects(self, endpoint: Endpoint) -> list[dict[str, Any]]:
        """Every object, as `shell_create` applies them."""
        volumes = [claim for claim in (self.claim, self.shared_claim) if claim]
        peers = [self.peers_service] if self.peers_service else []
        return [self.secret, *volumes, self.service, *peers, *self.web_objects, self.statefulset(endpoint)]


def check_request(request: CreateRequest) -> None:
    """What can be refused before asking the cluster anything: names, choices, signs, quantities."""
    check_user_name(request.user)
    manifests.check_shell_name(request.name)
    reasons = []
    if request.expose not in (None, *EXPOSE_CHOICES):
        reasons.append(f"--expose must be nodeport or loadbalancer, not {request.expose!r}")
    if request.gpus < 0:
        reasons.append(f"--gpus must be 0 or more, not {request.gpus}")
    if request.nodes < 1:
        reasons.append(f"--nodes must be 1 or more, not {request.nodes}")
    if request.disk is not None:
        if not manifests.DISK_NAME.fullmatch(request.disk):
            reasons.append(
                f"--disk {request.disk!r} is not a volume's name (lowercase letters, digits, '-', '.')"
            )
        if request.storage is not None or request.storage_class is not None:
            reasons.append(
                "--disk mounts an existing volume: --storage and --storage-class are for a new one"
            )
    if request.idle_minutes is not None and request.idle_minutes < 0:
        reasons.append(f"--idle-minutes must be 0 or more, not {request.idle_minutes}")
    if request.image is not None:
        try:
            image_refs.full_reference(request.image)
        except BadInputError as error:
            reasons.append(str(error))
    if request.gpu_type is not None:
        try:
            gpu_types.check_gpu_type(request.gpu_type)
        except BadInputError as error:
            reasons.append(str(error))
    for option, text in (("--cpu", request.cpu), ("--memory", request.memory), ("--shm", request.shm),
                         ("--storage", request.storage)):  # fmt: skip
        if text is not None:
            try:
                quantity.parse(text, option)
            except BadInputError as error:
                reasons.append(str(error))
    _refuse(reasons)


def plan_create(
    request: CreateRequest,
    facts: ClusterFacts,
    now: datetime,
    host_key: KeyPair | None = None,
    ttyd_password: str | None = None,
    peer_key: KeyPair | None = None,
) -> ShellPlan:
    """The shell's plan, or a BadInputError naming every reason the cluster can't honour it."""
    check_request(request)
    settings = facts.settings
    reasons = []
    if request.gpus == 0 and settings.require_gpu:
        reasons.append(
            "--gpus 0: this cluster's shells need a GPU (shells config requireGpu is true); "
            "ask for --gpus 1 or more"
        )
    hours = request.hours if request.hours is not None else Fraction(settings.default_hours)
    too_long_or_short = durations.refusal(hours, settings.max_hours)
    if too_long_or_short:
        reasons.append(too_long_or_short)
    idle_minutes = _idle_minutes(request.idle_minutes, settings, reasons)
    gpu_products = _gpu_products(request, facts.nodes, reasons)
    node = (
        _largest_candidate(request, facts.nodes, gpu_products, reasons) if gpu_products is not None else None
    )
    group = [node] if node is not None else []
    spreads = settings.max_nodes > 1 and settings.access_mode == "ReadWriteMany"
    if (
        node is not None
        and request.gpus > node.gpus
        and request.nodes == 1
        and gpu_products is not None
        and spreads
    ):
        reasons[-1] += _spread_hint(request, facts.nodes, gpu_products, settings.max_nodes)
    if request.nodes > 1:
        reasons += _group_refusals(request, facts)
        if node is not None and gpu_products is not None and request.gpus <= node.gpus:
            group = _group_candidates(request, facts.nodes, gpu_products, reasons)
            node = group[0] if group else None
    reasons += _quota_refusals(request, facts.quota, settings.web_expose == "ingress")
    if not facts.storage_class_exists:
        reasons.append(f"StorageClass {facts.storage_class!r} does not exist on this cluster")
    if facts.runtime_class and not facts.runtime_class_exists:
        reasons.append(
            f"RuntimeClass {facts.runtime_class!r} does not exist: "
            "the GPU stack is not deployed (toolkit cluster up)"
        )
    if request.disk is not None:
        reasons += _disk_refusals(request, facts)
    if request.sudo and not (settings.allow_sudo or facts.sudo_allowed_to_user):
        reasons.append(
            f"--sudo: this cluster gives sudo only to the users an operator allows, and {request.user} "
            f"is not one of them (toolkit user add {request.user} --sudo)"
        )
    if facts.name_is_a_service:
        reasons.append(
            f"the Service {request.name!r} is another shell's (its web terminal's, or the one naming a "
            "multi-node shell's pods): pick another name"
        )
    if facts.shell_exists:
        reasons.append(
            f"{request.user} already has a shell named {request.name!r}: pick another name or delete it"
        )
    image = _image(request, settings, reasons)
    web = request.web or request.jupyter
    web_host = _web_host(request, settings, reasons) if web else ""
    # A shell more GPUs than the node has is refused already; its share would only say so again.
    sizes = _size(request, group, reasons) if node and request.gpus <= node.gpus else None
    _refuse(reasons)
    multi_node = request.nodes > 1
    assert node is not None and sizes is not None  # a missing node is a refusal above
    cpu, memory = sizes
    spec = manifests.ShellSpec(
        name=request.name,
        user=request.user,
        namespace=namespace_of(request.user),
        image=image,
        gpus=request.gpus,
        cpu=cpu,
        memory=memory,
        storage=request.storage or DEFAULT_STORAGE,
        storage_class=facts.storage_class,
        expires_at=now + durations.as_timedelta(hours),
        authorized_keys=request.authorized_keys,
        host_key=host_key or generate_key_pair(),
        ttyd_password=ttyd_password or secrets.token_urlsafe(18),
        ssh_endpoint="",
        web=web,
        shm=quantity.parse(request.shm, "--shm") if request.shm else None,
        runtime_class=facts.runtime_class,
        node_selector=dict(request.node_selector),
        gpu_products=gpu_products or (),
        expose=request.expose or settings.expose,
        web_host=web_host,
        web_ingress_class=settings.web_ingress_class,
        idle_minutes=idle_minutes,
        queue=settings.queue or "",
        # Queued, its lifetime starts when it runs (manifests.EXPIRY_FROM_START).
        lifetime_seconds=int(durations.as_timedelta(hours).total_seconds()) if settings.queue else 0,
        latest_expiry=now + timedelta(hours=settings.max_lifetime_hours) if settings.queue else None,
        home_claim=request.disk or "",
        access_mode=settings.access_mode,
        shared_storage=settings.shared_storage,
        datasets=facts.datasets,
        forward_agent=request.forward_agent,
        sudo=request.sudo,
        toolbox_image="" if image == settings.image else settings.image,
        jupyter=request.jupyter,
        jupyter_token=secrets.token_urlsafe(24) if request.jupyter else "",
        nodes=request.nodes,
        peer_key=(peer_key or generate_key_pair()) if multi_node else None,
        topology_labels=settings.topology_labels if multi_node else (),
        nccl_env=nccl_environment(settings) if multi_node else (),
        rdma_resource=settings.rdma_resource if multi_node else "",
    )
    return ShellPlan(spec, node, settings.ssh_host)


def nccl_environment(settings: Platform) -> tuple[tuple[str, str], ...]:
    """NCCL (and gloo, torch's CPU backend) on the pods' own interface; InfiniBand/RoCE only where
    the site gives pods an RDMA device, else NCCL is told to use sockets rather than probe for it."""
    found = [
        ("NCCL_SOCKET_IFNAME", settings.nccl_socket_ifname),
        ("GLOO_SOCKET_IFNAME", settings.nccl_socket_ifname),
        ("NCCL_IB_DISABLE", "0" if settings.rdma_resource else "1"),
    ]
    return tuple(found)


def _image(request: CreateRequest, settings: Platform, reasons: list[str]) -> str:
    """The shell's image: the site's shell image, or the user's, written out in full and held to
    the site's allowed registries. Any other image than the site's runs from its toolbox."""
    if request.image is None:
        return settings.image
    image = image_refs.full_reference(request.image)
    if image == image_refs.full_reference(settings.image):
        return settings.image
    if settings.allowed_images and not image_refs.allowed_by(image, settings.allowed_images):
        reasons.append(
            f"--image {request.image}: this cluster runs users' images only from "
            f"{', '.join(settings.allowed_images)} (shells_platform_allowed_images)"
        )
    return image


def _disk_refusals(request: CreateRequest, facts: ClusterFacts) -> list[str]:
    """A disk mounts as a home only when it exists, is no one's home now, and is not the shared area."""
    if facts.disk is None:
        return [f"--disk {request.disk}: {request.user} has no volume of that name ('toolkit disk list')"]
    if request.disk == manifests.DATASETS_CLAIM:
        return [
            f"--disk {request.disk}: the name is kept for the site's datasets, read-only at /datasets "
            "in every shell"
        ]
    if request.disk == manifests.SHARED_CLAIM and facts.settings.shared_storage:
        return [
            f"--disk {request.disk}: that is {request.user}'s shared area, mounted at /shared in every shell"
        ]
    if facts.disk_users:
        return [
            f"--disk {request.disk} is in use by {', '.join(facts.disk_users)}: delete that shell first "
            "(its home is kept), then create this one"
        ]
    return []


def _idle_minutes(asked: int | None, settings: Platform, reasons: list[str]) -> int:
    """The shell's idle minutes within the cluster's limits (the lifecycle holds it to them too)."""
    shortest, most = SHORTEST_IDLE_MINUTES, settings.max_idle_minutes
    if settings.idle_minutes == 0:
        if asked:
            reasons.append("--idle-minutes: this cluster never pauses idle shells (idleMinutes is 0)")
        return 0
    if asked is None:
        return settings.idle_minutes
    if asked == 0 and most:
        reasons.append(
            f"--idle-minutes 0: this cluster pauses every idle shell; ask for {shortest} to {most} minutes"
        )
    elif asked > MOST_IDLE_MINUTES:
        reasons.append(f"--idle-minutes must be at most {MOST_IDLE_MINUTES}, not {asked}")
    elif asked and (asked < shortest or (most and asked > most)):
        limit = f"{shortest} to {most} on this cluster" if most else f"at least {shortest} (or 0: never)"
        reasons.append(f"--idle-minutes must be {limit}, not {asked}")
    return asked


def _web_host(request: CreateRequest, settings: Platform, reasons: list[str]) -> str:
    """The web terminal's host name, NAME--USER.DOMAIN, when the cluster serves web terminals
    through its ingress; "" when the site opted for plain HTTP on node ports. A shell name without
    "--" keeps the split unambiguous, so one host names one user's one shell (the cluster's
    toolkit-user-ingresses policy holds every Ingress to it)."""
    if settings.web_expose != "ingress":
        return ""
    option = "--web" if request.web else "--jupyter"
    if not settings.web_domain:
        reasons.append(
            f"{option}: this cluster serves web terminals through its ingress but has no web domain "
            "(an operator sets shells_platform_web_domain)"
        )
        return ""
    label = f"{request.name}--{request.user}"
    if "--" in request.name:
        reasons.append(
            f"{option}: a shell with a web terminal can't have '--' in its name ({request.name!r})"
        )
    elif len(label) > DNS_LABEL_MAX:
        reasons.append(
            f"{option}: the web terminal's host name {label!r} is {len(label)} characters, "
            f"more than a DNS label's {DNS_LABEL_MAX}: pick a shorter shell name"
        )
    return f"{label}.{settings.web_domain}"


def _refuse(reasons: list[str]) -> None:
    if reasons:
        raise BadInputError("; ".join(reasons))


def _gpu_products(
    request: CreateRequest, nodes: tuple[NodeCapacity, ...], reasons: list[str]
) -> tuple[str, ...] | None:
    """The GPU products --gpu-type names among the nodes' (none asked: all of them, ()); None when it
    names none, with the reason."""
    if request.gpu_type is None:
        return ()
    products = {n.labels[gpu_types.PRODUCT_LABEL] for n in nodes if n.labels.get(gpu_types.PRODUCT_LABEL)}
    if not products:
        reasons.append(
            f"--gpu-type {request.gpu_type}: no node says which GPUs it has (label "
            f"{gpu_types.PRODUCT_LABEL}): ask an operator, whose GPU feature discovery and Node Feature "
            "Discovery put it there (gpu_feature_discovery_enabled, with their pods running)"
        )
        return None
    matched = gpu_types.matching_products(request.gpu_type, products)
    if not matched:
        reasons.append(
            f"--gpu-type {request.gpu_type} is none of this cluster's GPUs: {', '.join(sorted(products))}"
        )
        return None
    return matched


def _largest_candidate(
    request: CreateRequest, nodes: tuple[NodeCapacity, ...], gpu_products: tuple[str, ...], reasons: list[str]
) -> NodeCapacity | None:
    """The largest ready node the selector and the GPU products allow: shells are sized from it."""
    candidates = _fitting(request, nodes, gpu_products, 0)
    wanted = [f"{k}={v}" for k, v in request.node_selector.items()]
    if gpu_products:
        wanted.append(f"--gpu-type {request.gpu_type} ({' or '.join(gpu_products)})")
    if not candidates:
        reasons.append(
            f"no ready node matches {', '.join(wanted)}" if wanted else "the cluster has no ready node"
        )
        return None
    largest = candidates[0]
    if request.gpus > largest.gpus:
        where = " matching " + ", ".join(wanted) if wanted else ""
        reasons.append(
            f"--gpus {request.gpus} is more than any node{where} has "
            f"(the largest, {largest.name}, has {largest.gpus})"
        )
    return largest


def _group_refusals(request: CreateRequest, facts: ClusterFacts) -> list[str]:
    """What a multi-node shell needs of the cluster beyond one node's shell."""
    settings = facts.settings
    reasons = []
    if request.nodes > settings.max_nodes:
        allowed = (
            f"at most {settings.max_nodes} nodes per shell"
            if settings.max_nodes > 1
            else "no multi-node shells (shells_platform_max_nodes is 1)"
        )
        reasons.append(f"--nodes {request.nodes}: this cluster allows {allowed}")
    if settings.access_mode != "ReadWriteMany":
        reasons.append(
            f"--nodes {request.nodes}: a multi-node shell's pods share its home across nodes, and this "
            f"cluster's volumes are {settings.access_mode} (one node at a time): ask for --nodes 1"
        )
    if not request.wait:
        # Kueue admits a group by its quota, not by the nodes' free GPUs: only a create that waits
        # sees every pod start, or removes them all.
        reasons.append(
            f"--no-wait: a multi-node shell's {request.nodes} pods start together or not at all, which "
            "only a create that waits can see to"
        )
    if facts.peers_service_taken:
        reasons.append(
            f"the Service {manifests.peers_service_name(request.name)}, which would name the pods of "
            f"{request.name}, is another shell's: pick another name"
        )
    return reasons


def _fitting(
    request: CreateRequest, nodes: tuple[NodeCapacity, ...], gpu_products: tuple[str, ...], gpus: int
) -> list[NodeCapacity]:
    """The ready nodes the selector and the GPU products allow with at least `gpus` GPUs, largest
    first (of equals, in the cluster's order)."""
    return sorted(
        (
            n
            for n in nodes
            if n.ready
            and n.schedulable
            and n.matches(request.node_selector)
            and (not gpu_products or n.labels.get(gpu_types.PRODUCT_LABEL) in gpu_products)
            and n.gpus >= gpus
        ),
        key=lambda n: (n.gpus, n.cpu, n.memory),
        reverse=True,
    )


def _group_candidates(
    request: CreateRequest, nodes: tuple[NodeCapacity, ...], gpu_products: tuple[str, ...], reasons: list[str]
) -> list[NodeCapacity]:
    """The `request.nodes` largest nodes that may hold a pod of the shell (ready, schedulable,
    matching, with the GPUs): every pod is sized to fit each of them. [], with the reason, when
    fewer nodes than that could ever hold one."""
    fitting = _fitting(request, nodes, gpu_products, request.gpus)
    if len(fitting) < request.nodes:
        which = ", ".join(n.name for n in fitting) or "none"
        reasons.append(
            f"--nodes {request.nodes} --gpus {request.gpus}: the shell needs {request.nodes} nodes with "
            f"{request.gpus} GPUs each, and {len(fitting)} ready node(s) have that ({which})"
        )
        return []
    return fitting[: request.nodes]


def _spread_hint(
    request: CreateRequest, nodes: tuple[NodeCapacity, ...], gpu_products: tuple[str, ...], max_nodes: int
) -> str:
    """For more GPUs than a node has: the fewest nodes that could hold them in equal parts, as
    options to ask with; "" where none could."""
    for spread in range(2, max_nodes + 1):
        each = request.gpus // spread
        if request.gpus % spread == 0 and len(_fitting(request, nodes, gpu_products, each)) >= spread:
            return f": spread them over nodes with --nodes {spread} --gpus {each}"
    return ""


def _quota_refusals(
    request: CreateRequest, quota: dict[str, Any] | None, web_ingress: bool = False
) -> list[str]:
    if quota is None:
        return [
            f"user {request.user!r} is not set up on this cluster: "
            f"an operator runs 'toolkit user add {request.user}'"
        ]
    limits = (quota.get("spec") or {}).get("hard") or {}
    in_use = (quota.get("status") or {}).get("used") or {}
    hard = _count(limits.get(f"requests.{GPU}", "0"))
    used = _count(in_use.get(f"requests.{GPU}", "0"))
    reasons = []
    wanted = request.gpus * request.nodes
    if wanted > hard - used:
        asked = (
            f"--nodes {request.nodes} --gpus {request.gpus} ({wanted} GPUs)"
            if request.nodes > 1
            else f"--gpus {request.gpus}"
        )
        reasons.append(
            f"{asked} is more than {request.user}'s quota allows: {hard} GPUs, {used} in use by other shells"
        )
    if request.nodes > 1:
        # Counted by `user add`, per shell, for the nodes the site lets one span: a user added
        # before the site allowed as many has room for fewer.
        web_service = (request.web or request.jupyter) and web_ingress
        services = 2 + web_service
        for counted, needed in (("pods", request.nodes), ("services", services)):
            room = max(0, _count(limits.get(counted, "0")) - _count(in_use.get(counted, "0")))
            if counted in limits and needed > room:
                reasons.append(
                    f"--nodes {request.nodes}: the shell needs {needed} {counted}, and {request.user}'s "
                    f"quota has room for {room} more: an operator re-runs 'toolkit user add {request.user}' "
                    "to count multi-node shells"
                )
    shells = SHELLS_QUOTA in limits and _count(in_use.get(SHELLS_QUOTA, "0")) >= _count(limits[SHELLS_QUOTA])
    if shells:
        reasons.append(
            f"{request.user} already has {limits[SHELLS_QUOTA]} shell(s), the most their quota allows: "
            "delete one first (toolkit shell list shows them)"
        )
    return reasons


def _count(value: Any) -> int:
    """A quota's figure as the API server writes it back (a count of 1000 reads "1k")."""
    try:
        return int(quantity.parse(str(value), "quota"))
    except BadInputError:
        return 0


def _size(request: CreateRequest, nodes: list[NodeCapacity], reasons: list[str]) -> tuple[Fraction, Fraction]:
    """CPU and memory: as asked, or the GPUs' share of the node (the smallest share of a multi-node
    shell's nodes); never more than any of its nodes has."""
    shares = [share(node, request.gpus) for node in nodes]
    cpu = quantity.parse(request.cpu, "--cpu") if request.cpu else min(cpu for cpu, _ in shares)
    memory = quantity.parse(request.memory, "--memory") if request.memory else min(m for _, m in shares)
    shm = quantity.parse(request.shm, "--shm") if request.shm else None
    if cpu <= 0 or memory <= 0:
        reasons.append("--cpu and --memory must be more than 0")
        return cpu, memory
    short = [n for n in nodes if cpu * Fraction(9, 10) > n.cpu or memory * Fraction(9, 10) > n.memory]
    if short:
        node = short[0]
        reasons.append(
            f"--cpu {quantity.cpu(cpu)} / --memory {quantity.human_bytes(memory)} is more than "
            f"{node.name} has ({quantity.cpu(node.cpu)} CPUs, {quantity.human_bytes(node.memory)})"
        )
    if shm is not None and shm > memory:
        # /dev/shm is memory-backed: it is charged to the shell's memory and can never exceed it.
        limit = quantity.human_bytes(memory)
        reasons.append(f"--shm {quantity.human_bytes(shm)} is more than the shell's memory ({limit})")
    return cpu, memory
