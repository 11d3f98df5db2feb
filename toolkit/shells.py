"""Users' GPU shells on the cluster: create, wait, list, pause, resume, extend, reap, delete.

Every function takes a `Kube` connection and returns plain data; the CLI presents it. Requests
are counted: creating a shell reads what it must validate (platform settings, nodes, the quota,
the classes, a duplicate), applies each object once with server-side apply, and waits on one
watch (bench/shell_api.py lists them).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from toolkit import quantity
from toolkit import shell_manifests as manifests
from toolkit.capacity import GPU, NodeCapacity, share
from toolkit.errors import BadInputError, ToolkitError
from toolkit.kube import Kube
from toolkit.shell_settings import Platform, platform
from toolkit.sshkeys import KeyPair, generate_key_pair

NAMESPACE_PREFIX = "user-"
QUOTA_NAME = "shells"
SHELLS_SELECTOR = f"{manifests.MANAGED_BY}=toolkit,{manifests.COMPONENT}=shell"
# Container waiting reasons that will not fix themselves: the create fails with the reason.
FATAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}  # fmt: skip
# How long to wait for the pod to appear before asking whether its creation was refused.
POD_CREATE_CHECK_SECONDS = 5
# User names become namespaces (DNS-1123 labels) and the shell's Linux user (at most 32).
USER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")


class ShellFailed(ToolkitError):
    """The shell did not become ready; the message is the cause, in one line."""


def namespace_of(user: str) -> str:
    return f"{NAMESPACE_PREFIX}{user}"


def check_user_name(user: str) -> str:
    if not USER_NAME.match(user):
        raise BadInputError(
            f"user name {user!r} is invalid: use 1-32 lowercase letters, digits and '-', starting with a "
            "letter and ending with a letter or digit"
        )
    return user


def check_shell_name(name: str) -> str:
    if not manifests.SHELL_NAME.match(name):
        raise BadInputError(
            f"shell name {name!r} is invalid: use 1-40 lowercase letters, digits and '-', starting with a "
            "letter and ending with a letter or digit"
        )
    return name


def user_from_context(kube: Kube, explicit: str | None) -> str:
    """`--user`, or the user whose namespace the kubeconfig's context points at."""
    if explicit:
        return check_user_name(explicit)
    if kube.namespace and kube.namespace.startswith(NAMESPACE_PREFIX):
        return check_user_name(kube.namespace[len(NAMESPACE_PREFIX) :])
    raise BadInputError(
        "which user? pass --user NAME (operators), or use the kubeconfig 'toolkit user add' wrote (users)"
    )


# --- create ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequest:
    name: str
    user: str
    authorized_keys: tuple[str, ...]
    gpus: int = 1
    cpu: str | None = None
    memory: str | None = None
    shm: str | None = None
    image: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    web: bool = False
    hours: int | None = None
    storage: str = "100Gi"
    storage_class: str | None = None
    expose: str | None = None
    timeout: float = 300
    keep_on_failure: bool = False


@dataclass(frozen=True)
class CreatedShell:
    name: str
    user: str
    namespace: str
    ssh_host: str
    ssh_port: int
    host_key: str
    expires_at: datetime
    node: str
    web_url: str | None = None
    web_credential: str | None = None


Phase = Callable[[str], None]


def _validate(kube: Kube, request: CreateRequest, settings: Platform) -> tuple[NodeCapacity, str, str | None]:
    """The reads a create needs, each one request: the node to size from, the classes."""
    namespace = namespace_of(request.user)
    if request.gpus < 0:
        raise BadInputError(f"--gpus must be 0 or more, not {request.gpus}")
    if request.gpus == 0 and settings.require_gpu:
        raise BadInputError(
            "--gpus 0: this cluster's shells need a GPU (shells config requireGpu is true); "
            "ask for --gpus 1 or more"
        )
    hours = request.hours if request.hours is not None else settings.default_hours
    if hours <= 0 or hours > settings.max_hours:
        raise BadInputError(
            f"--hours must be between 1 and {settings.max_hours} (this cluster's maximum), not {hours}"
        )
    nodes = [NodeCapacity.from_node(n) for n in kube.list("Node")["items"]]
    candidates = [n for n in nodes if n.ready and n.schedulable and n.matches(request.node_selector)]
    if not candidates:
        wanted = ",".join(f"{k}={v}" for k, v in request.node_selector.items())
        raise BadInputError(f"no ready node matches {wanted}" if wanted else "the cluster has no ready node")
    largest = max(candidates, key=lambda n: (n.gpus, n.cpu, n.memory))
    if request.gpus > largest.gpus:
        where = " matching the selector" if request.node_selector else ""
        raise BadInputError(
            f"--gpus {request.gpus} is more than any node{where} has "
            f"(the largest, {largest.name}, has {largest.gpus})"
        )
    quota = kube.get("ResourceQuota", QUOTA_NAME, namespace)
    if quota is None:
        raise BadInputError(
            f"user {request.user!r} is not set up on this cluster: "
            f"an operator runs 'toolkit user add {request.user}'"
        )
    hard = int((quota.get("spec") or {}).get("hard", {}).get(f"requests.{GPU}", "0"))
    used = int(((quota.get("status") or {}).get("used") or {}).get(f"requests.{GPU}", "0"))
    if request.gpus > hard - used:
        raise BadInputError(
            f"--gpus {request.gpus} is more than {request.user}'s quota allows: "
            f"{hard} GPUs, {used} in use by other shells"
        )
    storage_class = request.storage_class or settings.storage_class
    if kube.get("StorageClass", storage_class) is None:
        raise BadInputError(f"StorageClass {storage_class!r} does not exist on this cluster")
    runtime_class = settings.runtime_class if request.gpus else None
    if runtime_class and kube.get("RuntimeClass", runtime_class) is None:
        raise BadInputError(
            f"RuntimeClass {runtime_class!r} does not exist: "
            "the GPU stack is not deployed (toolkit cluster up)"
        )
    if kube.get("StatefulSet", request.name, namespace) is not None:
        raise BadInputError(
            f"{request.user} already has a shell named {request.name!r}: pick another name or delete it"
        )
    return largest, storage_class, runtime_class


def build_spec(
    request: CreateRequest,
    settings: Platform,
    node: NodeCapacity,
    storage_class: str,
    runtime_class: str | None,
    now: datetime,
    host_key: KeyPair | None = None,
) -> manifests.ShellSpec:
    cpu_share, memory_share = share(node, request.gpus)
    cpu = quantity.parse(request.cpu, "--cpu") if request.cpu else cpu_share
    memory = quantity.parse(request.memory, "--memory") if request.memory else memory_share
    if cpu <= 0 or memory <= 0:
        raise BadInputError("--cpu and --memory must be more than 0")
    if cpu * Fraction(9, 10) > node.cpu or memory * Fraction(9, 10) > node.memory:
        raise BadInputError(
            f"--cpu {quantity.cpu(cpu)} / --memory {quantity.human_bytes(memory)} is more than "
            f"{node.name} has ({quantity.cpu(node.cpu)} CPUs, {quantity.human_bytes(node.memory)})"
        )
    shm = quantity.parse(request.shm, "--shm") if request.shm else None
    quantity.parse(request.storage, "--storage")
    hours = request.hours if request.hours is not None else settings.default_hours
    return manifests.ShellSpec(
        name=request.name,
        user=request.user,
        namespace=namespace_of(request.user),
        image=request.image or settings.image,
        gpus=request.gpus,
        cpu=cpu,
        memory=memory,
        storage=request.storage,
        storage_class=storage_class,
        expires_at=now + timedelta(hours=hours),
        authorized_keys=request.authorized_keys,
        host_key=host_key or generate_key_pair(),
        ttyd_password=secrets.token_urlsafe(18),
        ssh_endpoint="",
        web=request.web,
        shm=shm,
        runtime_class=runtime_class,
        node_selector=dict(request.node_selector),
        expose=request.expose or settings.expose,
    )


def _remove(kube: Kube, namespace: str, applied: list[dict[str, Any]]) -> list[str]:
    """Delete what a failed create made, newest first; what could not be deleted, as kind/name."""
    left = []
    for manifest in reversed(applied):
        try:
            kube.delete(manifest["kind"], manifest["metadata"]["name"], namespace)
        except ToolkitError:
            left.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    return left


def _port(service: dict[str, Any], name: str, expose: str) -> int:
    for port in service["spec"].get("ports") or []:
        if port.get("name") == name:
            return int(port["nodePort"] if expose == "NodePort" else port["port"])
    raise ToolkitError(f"service {service['metadata']['name']} has no {name} port")


def _endpoint_host(settings: Platform, nodes_address: str, service: dict[str, Any], expose: str) -> str:
    if expose == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return (ingress[0].get("ip") or ingress[0].get("hostname", "")) if ingress else ""
    return settings.ssh_host or nodes_address


def create(
    kube: Kube, request: CreateRequest, on_phase: Phase, now: datetime | None = None
) -> tuple[CreatedShell, manifests.ShellSpec]:
    """Validate, apply the shell's objects, wait until it is Ready; undo everything on failure."""
    check_user_name(request.user)
    check_shell_name(request.name)
    if request.expose not in (None, "NodePort", "LoadBalancer"):
        raise BadInputError(f"--expose must be nodeport or loadbalancer, not {request.expose!r}")
    started = now or datetime.now(UTC).replace(microsecond=0)
    settings = platform(kube)
    node, storage_class, runtime_class = _validate(kube, request, settings)
    spec = build_spec(request, settings, node, storage_class, runtime_class, started)
    applied: list[dict[str, Any]] = []

    def apply(manifest: dict[str, Any]) -> dict[str, Any]:
        result = kube.apply(manifest)
        applied.append(manifest)
        return result

    try:
        apply(manifests.secret(spec))
        # Created, not applied: a home kept from an earlier shell of this name is reused as it is,
        # and never removed when this create fails.
        claim = manifests.claim(spec)
        _, new_home = kube.create(claim)
        if new_home:
            applied.append(claim)
        else:
            on_phase("reusing the home volume kept from an earlier shell")
        service = apply(manifests.service(spec))
        apply(manifests.network_policy(spec))
        host = _endpoint_host(settings, node.address, service, spec.expose)
        ssh_port = _port(service, "ssh", spec.expose)
        web_port = _port(service, "web", spec.expose) if spec.web else None
        spec = replace(
            spec,
            ssh_endpoint=f"{host}:{ssh_port}" if host else "",
            web_endpoint=f"{host}:{web_port}" if host and web_port else "",
        )
        apply(manifests.statefulset(spec))
        pod = wait_ready(kube, spec.namespace, spec.name, on_phase, request.timeout)
    except (ToolkitError, KeyboardInterrupt) as failure:
        if not request.keep_on_failure:
            on_phase("cleaning up")
            left = _remove(kube, spec.namespace, applied)
            if left:
                raise ToolkitError(f"{failure}; cleaning up failed, left behind: {', '.join(left)}") from None
        if isinstance(failure, ShellFailed) and request.keep_on_failure:
            raise ShellFailed(
                f"{failure} (kept for inspection: toolkit shell delete {spec.name} --purge)"
            ) from None
        raise
    if spec.expose == "LoadBalancer" and not host:
        host = _endpoint_host(
            settings, node.address, kube.get("Service", spec.name, spec.namespace) or {}, spec.expose
        )
        if host:
            endpoints = {manifests.ENDPOINT: f"{host}:{ssh_port}"}
            if web_port:
                endpoints[manifests.WEB_ENDPOINT] = f"{host}:{web_port}"
            kube.merge_patch(
                "StatefulSet", spec.name, spec.namespace, {"metadata": {"annotations": endpoints}}
            )
    created = CreatedShell(
        name=spec.name,
        user=spec.user,
        namespace=spec.namespace,
        ssh_host=host,
        ssh_port=ssh_port,
        host_key=spec.host_key.public,
        expires_at=spec.expires_at,
        node=pod["spec"].get("nodeName", ""),
        web_url=f"http://{host}:{web_port}/" if spec.web and host else None,
        web_credential=f"{spec.user}:{spec.ttyd_password}" if spec.web else None,
    )
    return created, spec


# --- waiting ----------------------------------------------------------------------------------


def pod_phase(pod: dict[str, Any]) -> tuple[str, str | None]:
    """(phase shown to the user, a fatal cause or None) for one pod."""
    status = pod.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False":
        message = scheduled.get("message") or "unschedulable"
        if "unbound" in message and "PersistentVolumeClaim" in message:
            return "waiting for the home volume", None
        return "scheduling", _insufficient(message)
    if scheduled.get("status") != "True":
        return "scheduling", None
    if conditions.get("Ready", {}).get("status") == "True":
        return "ready", None
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return "pulling image", f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        if (container.get("state") or {}).get("running"):
            return "starting", None
    return "pulling image", None


def _insufficient(message: str) -> str:
    """The scheduler's message, led by what is short, GPUs first: 'Insufficient nvidia.com/gpu (...)'."""
    short = [found.rstrip(".") for found in re.findall(r"Insufficient ([\w./-]+)", message)]
    if short:
        lead = GPU if GPU in short else short[0]
        return f"Insufficient {lead} ({message.strip()})"
    return f"Unschedulable: {message.strip()}"


def wait_ready(kube: Kube, namespace: str, name: str, on_phase: Phase, timeout: float) -> dict[str, Any]:
    """Watch the shell's pod until it is Ready; a ShellFailed with the cause otherwise."""
    import time

    pod_name = f"{name}-0"
    deadline = time.monotonic() + timeout
    last_phase = ""
    pod: dict[str, Any] = {}
    on_phase("scheduling")
    while time.monotonic() < deadline:
        remaining = max(1, int(deadline - time.monotonic()))
        # Until the pod exists, come up every few seconds to see whether it was refused.
        window = remaining if pod else min(remaining, POD_CREATE_CHECK_SECONDS)
        for event in kube.watch("Pod", namespace, fields=f"metadata.name={pod_name}", timeout=window):
            if event["type"] not in ("ADDED", "MODIFIED"):
                continue
            pod = event["object"]
            phase, fatal = pod_phase(pod)
            if fatal:
                raise ShellFailed(f"shell {name} cannot start: {fatal}")
            if phase != last_phase:
                on_phase(phase)
                last_phase = phase
            if phase == "ready":
                return pod
            if time.monotonic() >= deadline:
                break
        if not pod:
            refused = _pod_refused(kube, namespace, name)
            if refused:
                raise ShellFailed(f"shell {name} cannot start: {refused}")
    raise ShellFailed(_timeout_cause(kube, namespace, name, pod, timeout))


def _pod_refused(kube: Kube, namespace: str, name: str) -> str | None:
    """Why the StatefulSet could not create its pod (a quota, an admission policy), if it said."""
    events = kube.list("Event", namespace, fields=f"involvedObject.name={name},reason=FailedCreate")["items"]
    return str(events[-1]["message"]).strip() if events else None


def _timeout_cause(kube: Kube, namespace: str, name: str, pod: dict[str, Any], timeout: float) -> str:
    claim = kube.get("PersistentVolumeClaim", manifests.claim_name(name), namespace)
    if claim and (claim.get("status") or {}).get("phase") != "Bound":
        events = kube.list("Event", namespace, fields=f"involvedObject.name={manifests.claim_name(name)}")[
            "items"
        ]
        why = events[-1]["message"] if events else "no provisioner has answered"
        claim_text = manifests.claim_name(name)
        return f"shell {name} timed out after {timeout:.0f}s: PVC {claim_text} is stuck Pending ({why})"
    if not pod:
        events = kube.list("Event", namespace, fields=f"involvedObject.name={name}")["items"]
        failed = [e for e in events if e.get("type") == "Warning"]
        if failed:
            return f"shell {name} timed out after {timeout:.0f}s: {failed[-1]['message']}"
        return f"shell {name} timed out after {timeout:.0f}s: no pod was created"
    phase, _ = pod_phase(pod)
    return f"shell {name} timed out after {timeout:.0f}s while {phase}"


# --- reading shells --------------------------------------------------------------------------


@dataclass(frozen=True)
class Shell:
    name: str
    user: str
    namespace: str
    gpus: int
    status: str  # ready, starting, paused
    created: datetime
    expires_at: datetime | None
    endpoint: str
    host_key: str
    web_endpoint: str | None
    replicas: int

    @classmethod
    def from_statefulset(cls, sts: dict[str, Any]) -> Shell:
        metadata = sts["metadata"]
        annotations = metadata.get("annotations") or {}
        replicas = int((sts.get("spec") or {}).get("replicas", 1))
        ready = int((sts.get("status") or {}).get("readyReplicas", 0) or 0)
        status = "paused" if replicas == 0 else "ready" if ready >= replicas else "starting"
        expires = annotations.get(manifests.EXPIRES_AT)
        return cls(
            name=metadata["name"],
            user=(metadata.get("labels") or {}).get(manifests.USER_LABEL, ""),
            namespace=metadata.get("namespace", ""),
            gpus=int(annotations.get(manifests.GPUS, "0")),
            status=status,
            created=_parse_time(metadata["creationTimestamp"]),
            expires_at=_parse_time(expires) if expires else None,
            endpoint=annotations.get(manifests.ENDPOINT, ""),
            host_key=annotations.get(manifests.HOST_KEY, ""),
            web_endpoint=annotations.get(manifests.WEB_ENDPOINT),
            replicas=replicas,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "user": self.user,
            "namespace": self.namespace,
            "gpus": self.gpus,
            "status": self.status,
            "created": manifests.timestamp(self.created),
            "expires": manifests.timestamp(self.expires_at) if self.expires_at else None,
            "endpoint": self.endpoint,
            "web": self.web_endpoint,
        }


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def list_shells(kube: Kube, user: str | None) -> list[Shell]:
    """One list call: the user's shells, or every user's when `user` is None."""
    namespace = namespace_of(user) if user else None
    items = kube.list("StatefulSet", namespace, labels=SHELLS_SELECTOR)["items"]
    return sorted((Shell.from_statefulset(sts) for sts in items), key=lambda s: (s.user, s.name))


def get_shell(kube: Kube, user: str, name: str) -> Shell:
    sts = kube.get("StatefulSet", check_shell_name(name), namespace_of(user))
    if sts is None or (sts["metadata"].get("labels") or {}).get(manifests.COMPONENT) != "shell":
        raise BadInputError(f"{user} has no shell named {name!r} (toolkit shell list shows them)")
    return Shell.from_statefulset(sts)


def logs(kube: Kube, user: str, name: str, tail: int = 200) -> str:
    get_shell(kube, user, name)
    return kube.text(f"/api/v1/namespaces/{namespace_of(user)}/pods/{name}-0/log", {"tailLines": tail})


# --- changing shells -------------------------------------------------------------------------


def delete(kube: Kube, user: str, name: str, purge: bool) -> list[str]:
    """Delete the shell; its home volume too only when `purge`. What was deleted, as kind/name."""
    get_shell(kube, user, name)
    namespace = namespace_of(user)
    doomed = [
        ("StatefulSet", name),
        ("Service", name),
        ("NetworkPolicy", name),
        ("Secret", manifests.secret_name(name)),
    ]
    if purge:
        doomed.append(("PersistentVolumeClaim", manifests.claim_name(name)))
    return [f"{kind}/{obj}" for kind, obj in doomed if kube.delete(kind, obj, namespace)]


def scale(kube: Kube, user: str, name: str, replicas: int) -> Shell:
    get_shell(kube, user, name)
    kube.merge_patch("StatefulSet", name, namespace_of(user), {"spec": {"replicas": replicas}}, "scale")
    return get_shell(kube, user, name)


def pause(kube: Kube, user: str, name: str) -> Shell:
    """Scale to 0: the GPU is freed, the home volume and the shell's keys are kept."""
    return scale(kube, user, name, 0)


def resume(kube: Kube, user: str, name: str, on_phase: Phase, timeout: float) -> Shell:
    shell = get_shell(kube, user, name)
    if shell.expires_at and shell.expires_at <= datetime.now(UTC):
        raise BadInputError(
            f"shell {name} expired at {manifests.timestamp(shell.expires_at)}: extend it first"
        )
    scale(kube, user, name, 1)
    wait_ready(kube, namespace_of(user), name, on_phase, timeout)
    return get_shell(kube, user, name)


def extend(kube: Kube, user: str, name: str, hours: int, now: datetime | None = None) -> Shell:
    """Push the expiry `hours` later (from now when already past), within the cluster's maximum."""
    settings = platform(kube)
    shell = get_shell(kube, user, name)
    moment = now or datetime.now(UTC).replace(microsecond=0)
    if hours <= 0:
        raise BadInputError(f"--hours must be more than 0, not {hours}")
    base = max(shell.expires_at or moment, moment)
    expires = base + timedelta(hours=hours)
    if expires > moment + timedelta(hours=settings.max_hours):
        raise BadInputError(
            f"that would expire at {manifests.timestamp(expires)}, "
            f"more than {settings.max_hours} hours from now "
            "(this cluster's maximum)"
        )
    kube.merge_patch(
        "StatefulSet",
        name,
        namespace_of(user),
        {"metadata": {"annotations": {manifests.EXPIRES_AT: manifests.timestamp(expires)}}},
    )
    return get_shell(kube, user, name)


def add_keys(kube: Kube, user: str, name: str, keys: list[str]) -> int:
    """Add collaborators' keys; the shell restarts to load them (its home is kept). How many were new."""
    get_shell(kube, user, name)
    namespace = namespace_of(user)
    current = kube.get("Secret", manifests.secret_name(name), namespace)
    if current is None:
        raise ToolkitError(f"shell {name} has no Secret {manifests.secret_name(name)}: recreate the shell")
    import base64

    existing = base64.b64decode(current["data"]["authorized_keys"]).decode().splitlines()
    known = {line.split()[1] for line in existing if line.strip()}
    new = [key for key in keys if key.split()[1] not in known]
    if not new:
        return 0
    text = "".join(f"{line}\n" for line in [*existing, *new] if line.strip())
    kube.merge_patch(
        "Secret",
        manifests.secret_name(name),
        namespace,
        {"data": {"authorized_keys": base64.b64encode(text.encode()).decode()}},
    )
    revision = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    kube.merge_patch(
        "StatefulSet",
        name,
        namespace,
        {"spec": {"template": {"metadata": {"annotations": {manifests.KEYS_REVISION: revision}}}}},
    )
    return len(new)


@dataclass(frozen=True)
class Reaped:
    shell: Shell
    action: str  # paused or deleted


def reap(kube: Kube, user: str | None, now: datetime | None = None, dry_run: bool = False) -> list[Reaped]:
    """Pause or delete (keeping homes), per the cluster's reapPolicy, the shells past their expiry."""
    settings = platform(kube)
    moment = now or datetime.now(UTC)
    done = []
    for shell in list_shells(kube, user):
        if not shell.expires_at or shell.expires_at > moment:
            continue
        if settings.reap_policy == "delete":
            if not dry_run:
                delete(kube, shell.user, shell.name, purge=False)
            done.append(Reaped(shell, "deleted"))
        elif shell.replicas > 0:
            if not dry_run:
                pause(kube, shell.user, shell.name)
            done.append(Reaped(shell, "paused"))
    return done
