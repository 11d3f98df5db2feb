"""Users' GPU shells once created: read, list, pause, resume, extend, add keys, reap, delete.

Every function takes a `Kube` connection and returns plain data; the CLI presents it. Creating
a shell is `shell_plan` (what to apply) and `shell_create` (applying it).
"""

from __future__ import annotations

import base64
import contextlib
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from toolkit import durations, gpu_metrics, gpu_queue
from toolkit import shell_manifests as manifests
from toolkit.addresses import is_ip_address
from toolkit.capacity import NodeCapacity
from toolkit.errors import BadInputError, Interrupted, ToolkitError
from toolkit.interrupts import ignoring_interrupts
from toolkit.kube import ApiError, Kube
from toolkit.shell_plan import Endpoint, service_endpoint
from toolkit.shell_settings import MOST_IDLE_MINUTES, Platform, platform
from toolkit.shell_wait import Phase, ShellFailed, wait_ready
from toolkit.sshkeys import PUBLIC_KEY_TYPES, public_key_line
from toolkit.tenancy import MANAGED_BY, NAMESPACE_PREFIX, USER_NAME, namespace_of

SHELLS_SELECTOR = f"{MANAGED_BY}=toolkit,{manifests.COMPONENT}=shell"
# A DNS name (RFC 1123 labels); addresses are checked by toolkit.addresses.
HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\Z"
)


@dataclass(frozen=True)
class Shell:
    name: str
    user: str
    namespace: str
    gpus: int
    status: str  # ready, starting, queued (waiting for GPUs in the cluster's queue), paused
    created: datetime
    expires_at: datetime | None
    endpoint: str
    host_key: str
    web_endpoint: str | None
    replicas: int

    problems: tuple[str, ...] = ()  # the annotations that did not parse, each ignored
    reaped_at: datetime | None = None  # when the reaper last stopped it, expired
    idle_paused_at: datetime | None = None  # when the lifecycle last paused it, idle
    idle_minutes: int | None = None  # as asked at creation; None: the cluster's default
    uid: str = ""  # the StatefulSet's, which its pod's owner reference names
    # A queued shell's lifetime, which starts when it runs; until then expires_at is None (or the
    # end of its maximum lifetime).
    lifetime_from_start: timedelta | None = None
    position: int | None = None  # in the cluster's queue while queued, 1 next
    home: str = ""  # the PVC mounted as its home: NAME-home, or a disk given at creation
    forward_agent: bool = False  # its sshd lets the owner forward their ssh agent
    sudo: bool = False  # its user has passwordless sudo
    jupyter: bool = False  # JupyterLab beside the web terminal
    gpu_use: str | None = None  # as the lifecycle last published it (gpu_metrics.read_published)
    nodes: int = 1  # a multi-node shell's pods, one per node, of `gpus` GPUs each

    @property
    def pods(self) -> list[str]:
        """Its pods' names, pod 0 (where users log in) first: as many as its StatefulSet runs
        (admission bounds them; the node count is its owner's to write), or would run resumed."""
        return manifests.pod_names(self.name, self.replicas or self.nodes)

    @property
    def size(self) -> str:
        """Its GPUs as `list` shows them: 8, or 2x8 for two nodes of 8."""
        return f"{self.nodes}x{self.gpus}" if self.nodes > 1 else str(self.gpus)

    @property
    def expiry_starts_when_running(self) -> bool:
        return self.lifetime_from_start is not None

    @classmethod
    def from_statefulset(cls, sts: dict[str, Any], max_lifetime_hours: int | None = None) -> Shell | None:
        """The shell, or None for a StatefulSet outside a user's namespace.

        Its labels and annotations are written by its owner, so this is the one door they come in
        by: the user comes from the namespace; the endpoint must be a host name or address and a
        port, and the host key exactly one public key, or they are left empty; an expiry that does
        not parse counts as expired at creation, and none is later than creation plus
        `max_lifetime_hours`; a GPU count that does not parse counts as 0. Each value refused is
        named in `problems`.
        """
        metadata = sts["metadata"]
        namespace = str(metadata.get("namespace", ""))
        user = namespace.removeprefix(NAMESPACE_PREFIX)
        if not namespace.startswith(NAMESPACE_PREFIX) or not USER_NAME.fullmatch(user):
            return None
        annotations = metadata.get("annotations") or {}
        problems: list[str] = []
        replicas = int((sts.get("spec") or {}).get("replicas", 1))
        ready = int((sts.get("status") or {}).get("readyReplicas", 0) or 0)
        status = "paused" if replicas == 0 else "ready" if ready >= replicas else "starting"
        created = parse_time(metadata.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC)
        expires: datetime | None = None
        # A queued shell's expiry is written when it runs; its maximum lifetime bounds it below.
        lifetime = _lifetime_from_start(annotations.get(manifests.EXPIRY_FROM_START), problems)
        if lifetime is None and manifests.EXPIRES_AT in annotations:
            expires = parse_time(annotations[manifests.EXPIRES_AT])
            if expires is None:
                problems.append("its expiry is not a time: it counts as expired")
                expires = created
        if max_lifetime_hours is not None:
            latest = created + timedelta(hours=max_lifetime_hours)
            if expires is None or expires > latest:
                if expires is not None:
                    counted = manifests.timestamp(latest)
                    problems.append(
                        f"its expiry is past the {max_lifetime_hours}h lifetime: it counts as {counted}"
                    )
                expires = latest
        nodes = _nodes(annotations.get(manifests.NODES), problems)
        gpus = str(annotations.get(manifests.GPUS, "0"))
        if not (gpus.isascii() and gpus.isdigit()):
            problems.append("its GPU count is not a number: it counts as 0")
        endpoint, web_endpoint = (
            _checked_endpoint(annotations.get(key), what, problems)
            for key, what in ((manifests.ENDPOINT, "SSH"), (manifests.WEB_ENDPOINT, "web"))
        )
        return cls(
            name=metadata["name"],
            user=user,
            namespace=namespace,
            gpus=int(gpus) if gpus.isascii() and gpus.isdigit() else 0,
            status=status,
            created=created,
            expires_at=expires,
            endpoint=endpoint or "",
            host_key=_checked_host_key(annotations.get(manifests.HOST_KEY), problems),
            web_endpoint=web_endpoint if manifests.WEB_ENDPOINT in annotations else None,
            replicas=replicas,
            problems=tuple(problems),
            reaped_at=parse_time(annotations.get(manifests.REAPED_AT)),
            idle_paused_at=parse_time(annotations.get(manifests.IDLE_PAUSED_AT)),
            idle_minutes=_idle_minutes(annotations.get(manifests.IDLE_MINUTES), problems),
            uid=str(metadata.get("uid", "")),
            lifetime_from_start=lifetime,
            home=_home_claim(sts) or manifests.claim_name(metadata["name"]),
            forward_agent=_env(sts, "SHELL_AGENT_FORWARDING") == "true",
            sudo=_env(sts, "SHELL_SUDO") == "true",
            jupyter=_env(sts, "SHELL_JUPYTER") == "true",
            gpu_use=annotations.get(manifests.GPU_USE),
            nodes=nodes,
        )

    @property
    def paused_why(self) -> str | None:
        """Why a paused shell is paused: "expired" when the reaper stopped it at this expiry,
        "idle" when the lifecycle found it idle, else "by hand"; None while it runs."""
        if self.status != "paused":
            return None
        reaped = (
            self.reaped_at is not None and self.expires_at is not None and self.reaped_at >= self.expires_at
        )
        return "expired" if reaped else "idle" if self.idle_paused_at else "by hand"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "user": self.user,
            "namespace": self.namespace,
            "gpus": self.gpus,
            "nodes": self.nodes,
            "status": self.status,
            "paused": self.paused_why,
            "idle_minutes": self.idle_minutes,
            "created": manifests.timestamp(self.created),
            "expires": manifests.timestamp(self.expires_at) if self.expires_at else None,
            "lifetime_from_start_seconds": (
                int(self.lifetime_from_start.total_seconds()) if self.lifetime_from_start else None
            ),
            "position": self.position,
            "endpoint": self.endpoint,
            "web": self.web_endpoint,
            "home": self.home,
            "forward_agent": self.forward_agent,
            "sudo": self.sudo,
            "jupyter": self.jupyter,
            "gpu_use": self._gpu_use_dict(),
        }

    def _gpu_use_dict(self) -> dict[str, Any] | None:
        published = gpu_metrics.read_published(self.gpu_use)
        if published is None:
            return None
        at, use = published
        return {
            "at": manifests.timestamp(at),
            "gpus": use.gpus,
            "utilisation_percent": use.utilisation,
            "memory_used_mib": use.memory_used,
            "memory_total_mib": use.memory_total,
        }

    def jupyter_url(self, settings: Platform) -> str | None:
        """JupyterLab's address, without its token (which only the create shows): at the shell's own
        host behind the cluster's ingress, else plain HTTP at the node port its owner may rewrite
        (so only where the site serves web terminals so)."""
        if not self.jupyter:
            return None
        if settings.web_expose == "ingress" and settings.web_domain:
            return f"https://{self.name}--{self.user}.{settings.web_domain}{manifests.JUPYTER_PATH}"
        return f"http://{self.web_endpoint}{manifests.JUPYTER_PATH}" if self.web_endpoint else None


def mounted_claims(spec: Any) -> set[str]:
    """The PVC names a pod spec mounts; a spec its owner wrote, so anything odd mounts nothing."""
    if not isinstance(spec, dict):
        return set()
    found = set()
    for volume in spec.get("volumes") or []:
        claim = volume.get("persistentVolumeClaim") if isinstance(volume, dict) else None
        if isinstance(claim, dict) and isinstance(claim.get("claimName"), str):
            found.add(claim["claimName"])
    return found


def pod_spec(workload: dict[str, Any]) -> Any:
    """A StatefulSet's pod template's spec, as its owner wrote it."""
    template = (workload.get("spec") or {}).get("template")
    return template.get("spec") if isinstance(template, dict) else None


def _pod_spec(sts: dict[str, Any]) -> dict[str, Any]:
    template = (sts.get("spec") or {}).get("template") or {}
    spec = template.get("spec") if isinstance(template, dict) else None
    return spec if isinstance(spec, dict) else {}


def _home_claim(sts: dict[str, Any]) -> str | None:
    """The claim of the volume named "home", when it is a well-formed PVC name."""
    for volume in _pod_spec(sts).get("volumes") or []:
        if isinstance(volume, dict) and volume.get("name") == "home":
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            return claim if isinstance(claim, str) and manifests.DISK_NAME.fullmatch(claim) else None
    return None


def _env(sts: dict[str, Any], name: str) -> str | None:
    containers = _pod_spec(sts).get("containers") or []
    first = containers[0] if containers and isinstance(containers[0], dict) else {}
    for variable in first.get("env") or []:
        if isinstance(variable, dict) and variable.get("name") == name:
            return str(variable.get("value", ""))
    return None


def _checked_endpoint(value: Any, what: str, problems: list[str]) -> str:
    """`HOST:PORT` when it is one (a DNS name or an address, and a port 1-65535); "" otherwise."""
    if value in (None, ""):
        return ""
    text = str(value)
    host, _, port = text.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    address_ok = is_ip_address(bare) or (HOST_NAME.match(bare) is not None and bare == host)
    if address_ok and port.isascii() and port.isdigit() and 0 < int(port) < 65536 and len(port) <= 5:
        return f"{host}:{int(port)}"
    problems.append(f"its {what} endpoint is not HOST:PORT: it is ignored")
    return ""


def _checked_host_key(value: Any, problems: list[str]) -> str:
    """`TYPE BASE64` when the value is exactly one public key line; "" otherwise."""
    if value in (None, ""):
        return ""
    text = str(value)
    try:
        if text != text.strip() or any(c in text for c in "\r\n\0"):
            raise BadInputError("more than one line")
        return " ".join(public_key_line(text, "host key").split()[:2])
    except BadInputError:
        problems.append("its host key is not one public key: it is ignored")
        return ""


def _idle_minutes(value: Any, problems: list[str]) -> int | None:
    if value is None:
        return None
    text = str(value)
    if text.isascii() and text.isdigit() and len(text) <= len(str(MOST_IDLE_MINUTES)):
        return int(text)
    problems.append("its idle minutes are not a number: the cluster's default counts")
    return None


def _nodes(value: Any, problems: list[str]) -> int:
    """A multi-node shell's pods: a number from 1 to 99 (admission holds the replicas to the
    cluster's maximum whatever this says)."""
    if value is None:
        return 1
    text = str(value)
    if text.isascii() and text.isdigit() and len(text) <= 2 and int(text) >= 1:
        return int(text)
    problems.append("its node count is not a number from 1 to 99: it counts as 1")
    return 1


def _lifetime_from_start(value: Any, problems: list[str]) -> timedelta | None:
    if value is None:
        return None
    text = str(value)
    if text.isascii() and text.isdigit() and len(text) <= 9:
        return timedelta(seconds=int(text))
    problems.append("its lifetime from start is not a number of seconds: it counts as 0")
    return timedelta(0)


def parse_time(text: Any) -> datetime | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def list_shells(kube: Kube, user: str | None, max_lifetime_hours: int | None = None) -> list[Shell]:
    """One list call: the user's shells, or every user's when `user` is None."""
    namespace = namespace_of(user) if user else None
    items = kube.list("StatefulSet", namespace, labels=SHELLS_SELECTOR)["items"]
    read = (Shell.from_statefulset(item, max_lifetime_hours) for item in items)
    found = [shell for shell in read if shell is not None]
    return sorted(found, key=lambda s: (s.user, s.name))


def with_places(kube: Kube, found: list[Shell]) -> list[Shell]:
    """The shells Kueue holds in the queue marked "queued", with their place: two requests (the
    settings, the places) when a shell is starting, none otherwise. One user's places come from
    their LocalQueue, several users' (operators) from the ClusterQueue."""
    starting = [shell for shell in found if shell.status == "starting"]
    if not starting:
        return found
    settings = platform(kube)
    if not settings.queue:
        return found
    owners = {shell.user for shell in starting}
    if len(owners) == 1:
        places = gpu_queue.places(kube, namespace_of(owners.pop()), settings.queue)
    else:
        places = gpu_queue.cluster_places(kube, settings.cluster_queue or settings.queue)
    return [
        replace(shell, status="queued", position=places[shell.uid])
        if shell.status == "starting" and shell.uid in places
        else shell
        for shell in found
    ]


def start_clocks(kube: Kube, user: str | None, settings: Platform, dry_run: bool = False) -> list[Reaped]:
    """Queued shells that now run get their expiry: their lifetime from when their pod became
    Ready, within their maximum lifetime. One list call, and a pod list when one waits. A shell
    whose expiry could not be written is reported ("not started: WHY"); the others are done."""
    waiting = [
        shell
        for shell in list_shells(kube, user, settings.max_lifetime_hours)
        if shell.lifetime_from_start is not None and shell.replicas
    ]
    if not waiting:
        return []
    namespace = namespace_of(user) if user else None
    pods = {
        (pod["metadata"].get("namespace"), pod["metadata"]["name"]): pod
        for pod in kube.list("Pod", namespace, labels=SHELLS_SELECTOR)["items"]
    }
    started = []
    for shell in waiting:
        pod = pods.get((shell.namespace, f"{shell.name}-0")) or {}
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready" and c.get("status") == "True"), None)
        since = parse_time((ready or {}).get("lastTransitionTime"))
        if since is None or shell.lifetime_from_start is None:
            continue
        expires = since + shell.lifetime_from_start
        if shell.expires_at is not None:  # the end of its maximum lifetime
            expires = min(expires, shell.expires_at)
        annotations = {manifests.EXPIRES_AT: manifests.timestamp(expires), manifests.EXPIRY_FROM_START: None}
        try:
            if not dry_run:
                patch = {"metadata": {"annotations": annotations}}
                kube.merge_patch("StatefulSet", shell.name, shell.namespace, patch)
        except ToolkitError as error:
            started.append(Reaped(shell, f"not started: {error}"))
            continue
        started.append(Reaped(replace(shell, expires_at=expires, lifetime_from_start=None), "started"))
    return started


def get_shell(kube: Kube, user: str, name: str, max_lifetime_hours: int | None = None) -> Shell:
    sts = kube.get("StatefulSet", manifests.check_shell_name(name), namespace_of(user))
    is_shell = sts is not None and (sts["metadata"].get("labels") or {}).get(manifests.COMPONENT) == "shell"
    shell = Shell.from_statefulset(sts, max_lifetime_hours) if sts is not None and is_shell else None
    if shell is None:
        raise BadInputError(f"{user} has no shell named {name!r} (toolkit shell list shows them)")
    return shell


def reach(kube: Kube, shell: Shell) -> Endpoint:
    """Where the shell answers now, from what the API server itself writes (the Service's ports
    and load balancer address, the Node its pod runs on) and the site's SSH host; never from the
    shell's annotations, which its owner can write."""
    service = kube.get("Service", shell.name, shell.namespace)
    if service is None:
        raise ToolkitError(f"shell {shell.name} has no Service: delete it and create it again")
    load_balanced = (service.get("spec") or {}).get("type") == "LoadBalancer"
    host = "" if load_balanced else platform(kube).ssh_host or ""
    if not load_balanced and not host:
        pod = kube.get("Pod", f"{shell.name}-0", shell.namespace) or {}
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = kube.get("Node", node_name) if node_name else None
        host = NodeCapacity.from_node(node).address if node else ""
    return service_endpoint(shell.name, service, load_balanced, host, web=False)


# Control characters but newline and tab: a log is written by the shell, and reaches a terminal.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without the control characters a terminal would act on (escape sequences)."""
    return CONTROL_CHARACTERS.sub("", text)


def logs(kube: Kube, user: str, name: str, tail: int = 200) -> str:
    """The container's log, as text safe to print: its owner writes it."""
    get_shell(kube, user, name)
    return printable(
        kube.text(f"/api/v1/namespaces/{namespace_of(user)}/pods/{name}-0/log", {"tailLines": tail})
    )


# --- changing shells -------------------------------------------------------------------------


def delete(kube: Kube, user: str, name: str, purge: bool, now: datetime | None = None) -> list[str]:
    """Delete the shell; its home volume too only when `purge`, else it is kept as a disk with
    the moment it was let go. What was deleted, as kind/name."""
    shell = get_shell(kube, user, name)
    namespace = namespace_of(user)
    if purge:
        _check_home_is_its_own(kube, shell)
    # NAME-web and NAME-peers may be another shell's own Service (a shell named so): only the
    # ones labelled as this shell's go.
    labelled = f"{manifests.SHELL_LABEL}={name}"
    own = {s["metadata"]["name"] for s in kube.list("Service", namespace, labels=labelled)["items"]}
    doomed = [
        ("StatefulSet", name),
        ("Ingress", name),
        *(
            ("Service", service)
            for service in (manifests.web_service_name(name), manifests.peers_service_name(name))
            if service in own
        ),
        ("Service", name),
        ("Secret", manifests.secret_name(name)),
    ]
    if purge:
        doomed.append(("PersistentVolumeClaim", shell.home))
    deleted = [f"{kind}/{obj}" for kind, obj in doomed if kube.delete(kind, obj, namespace)]
    if not purge:
        moment = now or datetime.now(UTC).replace(microsecond=0)
        stamp = {"metadata": {"annotations": {manifests.RELEASED_AT: manifests.timestamp(moment)}}}
        with contextlib.suppress(ApiError):  # the stamp only dates `disk list`'s last use
            kube.merge_patch("PersistentVolumeClaim", shell.home, namespace, stamp)
    return deleted


def _check_home_is_its_own(kube: Kube, shell: Shell) -> None:
    """--purge deletes the home the shell's template names, which its owner writes: never the
    shared area, nor a volume another shell mounts too."""
    if shell.home == manifests.SHARED_CLAIM:
        raise BadInputError(
            f"shell {shell.name} mounts the shared area as its home: delete it without --purge"
        )
    others = [
        sts["metadata"]["name"]
        for sts in kube.list("StatefulSet", shell.namespace)["items"]
        if sts["metadata"]["name"] != shell.name and shell.home in mounted_claims(pod_spec(sts))
    ]
    if others:
        raise BadInputError(
            f"shell {shell.name}'s home {shell.home} is mounted by {', '.join(others)} too: "
            "delete it without --purge"
        )


def scale(
    kube: Kube,
    user: str,
    name: str,
    replicas: int,
    annotations: dict[str, str | None] | None = None,
    labels: dict[str, str] | None = None,
) -> Shell:
    """Set the StatefulSet's replicas (and `annotations`, `labels`) in one patch of the
    StatefulSet itself, never its scale subresource: admission reads the shell's expiry and queue
    beside its replicas."""
    get_shell(kube, user, name)
    patch: dict[str, Any] = {"spec": {"replicas": replicas}}
    if annotations or labels:
        patch["metadata"] = {"annotations": annotations or {}, "labels": labels or {}}
    kube.merge_patch("StatefulSet", name, namespace_of(user), patch)
    return get_shell(kube, user, name)


def pause(
    kube: Kube, user: str, name: str, reaped_at: datetime | None = None, idle_at: datetime | None = None
) -> Shell:
    """Scale to 0: the GPU is freed, the home volume and the shell's keys are kept. The reaper
    records when it paused an expired shell (`reaped_at`): admission then lets the shell run
    again only once its expiry is later than that. The lifecycle records when it paused an idle
    one (`idle_at`), for list and show; any other pause is by hand."""
    idle_stamp = manifests.timestamp(idle_at) if idle_at else None
    stamps: dict[str, str | None] = {manifests.IDLE_PAUSED_AT: idle_stamp}
    if reaped_at:
        stamps[manifests.REAPED_AT] = manifests.timestamp(reaped_at)
    return scale(kube, user, name, 0, stamps)


def resume(kube: Kube, user: str, name: str, on_phase: Phase, timeout: float) -> Shell:
    shell = get_shell(kube, user, name)
    if shell.expires_at and shell.expires_at <= datetime.now(UTC):
        raise BadInputError(
            f"shell {name} expired at {manifests.timestamp(shell.expires_at)}: extend it first"
        )
    # Where the cluster queues shells, a resumed one waits its turn like a new one; a shell made
    # before the queue was turned on joins it now.
    queue = platform(kube).queue or ""
    labels = {gpu_queue.QUEUE_NAME_LABEL: queue} if queue and shell.gpus else None
    scale(kube, user, name, shell.nodes, {manifests.IDLE_PAUSED_AT: None}, labels)
    if shell.expires_at and shell.lifetime_from_start is None:
        # Its expiry may have been written where the running shell can't read it (by the lifecycle,
        # once it ran after waiting in the queue): give the shell its copy as it starts again.
        stamp = base64.b64encode(manifests.timestamp(shell.expires_at).encode()).decode()
        secret = {"data": {manifests.EXPIRES_AT_KEY: stamp}}
        kube.merge_patch("Secret", manifests.secret_name(name), namespace_of(user), secret)
    try:
        wait_ready(kube, namespace_of(user), name, on_phase, timeout, queue=queue, pods=shell.nodes)
    except (ToolkitError, KeyboardInterrupt) as failure:
        if shell.nodes == 1 or _held_by_the_queue(kube, shell):
            raise
        # A multi-node shell runs whole or not at all: the pods that did start give their GPUs back.
        with ignoring_interrupts():
            try:
                scale(kube, user, name, 0)
                note = f"paused again, since its {shell.nodes} pods run together or not at all"
            except ToolkitError as error:
                note = f"it could not be paused again ({error}): toolkit shell pause {name}"
        if isinstance(failure, KeyboardInterrupt):
            raise Interrupted(f"interrupted; {note}") from None
        again = (
            ShellFailed(f"{failure}; {note}")
            if isinstance(failure, ShellFailed)
            else ToolkitError(f"{failure}; {note}")
        )
        again.exit_code = failure.exit_code
        raise again from None
    return get_shell(kube, user, name)


def _held_by_the_queue(kube: Kube, shell: Shell) -> bool:
    """Whether Kueue still holds every pod of the shell: none runs, and it keeps its place."""
    try:
        pods = kube.list("Pod", shell.namespace, labels=manifests.selector_query(shell.name, shell.user))[
            "items"
        ]
    except ToolkitError:
        return False
    return bool(pods) and all(gpu_queue.gated(pod) for pod in pods)


def extend(kube: Kube, user: str, name: str, hours: Fraction, now: datetime | None = None) -> Shell:
    """Push the expiry `hours` later (from now when already past), within the cluster's maximum."""
    settings = platform(kube)
    length = Fraction(hours)
    too_long_or_short = durations.refusal(length, settings.max_hours)
    if too_long_or_short:
        raise BadInputError(too_long_or_short)
    shell = get_shell(kube, user, name, settings.max_lifetime_hours)
    if shell.lifetime_from_start is not None:  # it waited in the queue: does it run by now?
        start_clocks(kube, user, settings)
        shell = get_shell(kube, user, name, settings.max_lifetime_hours)
    if shell.lifetime_from_start is not None:  # its mark is set once, at creation (admission)
        raise BadInputError(f"shell {name} has not run yet: its lifetime starts when it does; extend it then")
    moment = now or datetime.now(UTC).replace(microsecond=0)
    base = max(shell.expires_at or moment, moment)
    expires = base + durations.as_timedelta(length)
    if expires > moment + timedelta(hours=settings.max_hours):
        raise BadInputError(
            f"that would expire at {manifests.timestamp(expires)}, "
            f"more than {settings.max_hours} hours from now "
            "(this cluster's maximum)"
        )
    end_of_life = shell.created + timedelta(hours=settings.max_lifetime_hours)
    if expires > end_of_life:
        raise BadInputError(
            f"that would expire at {manifests.timestamp(expires)}, past the end of the shell's "
            f"{settings.max_lifetime_hours}-hour lifetime ({manifests.timestamp(end_of_life)}, "
            "this cluster's maximum): create a new shell of the name to keep its home"
        )
    stamp = manifests.timestamp(expires)
    namespace = namespace_of(user)
    kube.merge_patch(
        "StatefulSet", name, namespace, {"metadata": {"annotations": {manifests.EXPIRES_AT: stamp}}}
    )
    # The running shell reads its Secret's copy (mounted, updated in place): no restart.
    secret = {"data": {manifests.EXPIRES_AT_KEY: base64.b64encode(stamp.encode()).decode()}}
    kube.merge_patch("Secret", manifests.secret_name(name), namespace, secret)
    return get_shell(kube, user, name)


def _authorized_keys(kube: Kube, user: str, name: str) -> list[str]:
    """The shell's authorized_keys lines, from its Secret: the user's to write, so read as input."""
    get_shell(kube, user, name)
    current = kube.get("Secret", manifests.secret_name(name), namespace_of(user))
    if current is None:
        raise ToolkitError(f"shell {name} has no Secret {manifests.secret_name(name)}: recreate the shell")
    try:
        existing = base64.b64decode((current.get("data") or {})["authorized_keys"], validate=True).decode()
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise ToolkitError(
            f"shell {name}'s Secret {manifests.secret_name(name)} holds no readable authorized_keys: "
            "recreate the shell"
        ) from None
    return [line for line in existing.splitlines() if line.strip()]


def _write_authorized_keys(kube: Kube, user: str, name: str, lines: list[str]) -> None:
    """The running shell takes the new keys for new logins within a minute or two (the image's
    shell-agent.py reads its Secret as the kubelet updates it): no restart, sessions go on."""
    text = "".join(f"{line}\n" for line in lines)
    data = {"authorized_keys": base64.b64encode(text.encode()).decode()}
    kube.merge_patch("Secret", manifests.secret_name(name), namespace_of(user), {"data": data})


def _blob(line: str) -> str | None:
    """The key data of an authorized_keys line (after any options, `restrict ssh-ed25519 AAAA...`),
    or None for a comment or a line that holds no key."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    found = next((i for i, field in enumerate(fields[:-1]) if field in PUBLIC_KEY_TYPES), None)
    return fields[found + 1] if found is not None else None


def add_keys(kube: Kube, user: str, name: str, keys: list[str]) -> int:
    """Let collaborators in. How many keys were new. A shell made before its image ran the agent
    that installs changed keys restarts to load them (its home is kept)."""
    lines = _authorized_keys(kube, user, name)
    known = {_blob(line) for line in lines} - {None}
    new = list({_blob(key): key for key in keys if _blob(key) not in known}.values())
    if new:
        _write_authorized_keys(kube, user, name, [*lines, *new])
        _restart_unless_it_follows_its_secret(kube, user, name)
    return len(new)


def remove_keys(kube: Kube, user: str, name: str, keys: list[str]) -> int:
    """Stop `keys` logging in (sessions already open go on); never the last key. How many were
    removed."""
    lines = _authorized_keys(kube, user, name)
    doomed = {_blob(key) for key in keys} - {None}
    kept = [line for line in lines if _blob(line) not in doomed]
    removed = {_blob(line) for line in lines} & doomed
    if not any(_blob(line) for line in kept):
        raise BadInputError(f"that would leave shell {name} with no key: add another key first")
    if removed:
        _write_authorized_keys(kube, user, name, kept)
        _restart_unless_it_follows_its_secret(kube, user, name)
    return len(removed)


def _restart_unless_it_follows_its_secret(kube: Kube, user: str, name: str) -> None:
    """Shells created since the image's agent follows the Secret carry toolkit.dev/agent; older
    ones load keys at start only, so they restart, as before."""
    sts = kube.get("StatefulSet", name, namespace_of(user)) or {}
    if (sts.get("metadata", {}).get("annotations") or {}).get(manifests.AGENT) == "1":
        return
    revision = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    patch = {"spec": {"template": {"metadata": {"annotations": {manifests.KEYS_REVISION: revision}}}}}
    kube.merge_patch("StatefulSet", name, namespace_of(user), patch)


@dataclass(frozen=True)
class Reaped:
    shell: Shell
    action: str  # paused, deleted, or "not reaped: WHY"


def reap(kube: Kube, user: str | None, now: datetime | None = None, dry_run: bool = False) -> list[Reaped]:
    """Pause or delete (keeping homes), per the cluster's reapPolicy, the shells past their expiry:
    the one annotated, or creation plus the cluster's maximum lifetime, whichever comes first.

    An operator's reaper also records on every expired shell, paused ones included, when it found
    it expired (toolkit.dev/reaped-at): admission then refuses running it again until its expiry
    is later. A user reaping their own shells only pauses them: the record is not theirs to write.
    One shell that cannot be reaped is reported, and the others are still reaped.
    """
    settings = platform(kube)
    moment = now or datetime.now(UTC)
    records = user is None or kube.namespace != namespace_of(user)
    # A shell whose clock could not be started is named with the reaped, as one not reaped is.
    done = [r for r in start_clocks(kube, user, settings, dry_run) if r.action.startswith("not ")]
    for shell in list_shells(kube, user, settings.max_lifetime_hours):
        if not shell.expires_at or shell.expires_at > moment:
            continue
        try:
            action = _reap_one(kube, shell, settings.reap_policy, moment if records else None, dry_run)
        except ToolkitError as error:
            action = f"not reaped: {error}"
        if action:
            done.append(Reaped(shell, action))
    return done


def _reap_one(kube: Kube, shell: Shell, policy: str, record: datetime | None, dry_run: bool) -> str:
    """What was done to one expired shell: "" when it was already paused (and recorded)."""
    if policy == "delete":
        if not dry_run:
            delete(kube, shell.user, shell.name, purge=False)
        return "deleted"
    if shell.replicas > 0:
        if not dry_run:
            pause(kube, shell.user, shell.name, reaped_at=record)
        return "paused"
    assert shell.expires_at is not None
    unrecorded = shell.reaped_at is None or shell.reaped_at < shell.expires_at
    if record and unrecorded and not dry_run:  # paused by its owner: recorded all the same
        stamp = {manifests.REAPED_AT: manifests.timestamp(record)}
        kube.merge_patch("StatefulSet", shell.name, shell.namespace, {"metadata": {"annotations": stamp}})
    return ""


def orphan_failed(orphan: str) -> bool:
    """Whether `reap_orphans` reports this pod as not deleted ("NS/POD not deleted: WHY")."""
    return " not deleted: " in orphan


def reap_orphans(kube: Kube, dry_run: bool = False) -> list[str]:
    """Delete the pods in users' namespaces that no StatefulSet owns any more (`kubectl delete
    --cascade=orphan` leaves them running, holding their GPUs, out of every shell's lifetime).
    Operators only: two list calls across the cluster. What was done, as "namespace/pod" for
    each deleted, and "namespace/pod not deleted: WHY" for one that could not be (the others
    are still deleted)."""
    owners = {
        (sts["metadata"].get("namespace"), sts["metadata"].get("uid"))
        for sts in kube.list("StatefulSet")["items"]
    }
    pods = kube.list("Pod", fields="status.phase!=Succeeded,status.phase!=Failed")["items"]
    orphans = []
    for pod in pods:
        metadata = pod["metadata"]
        namespace = str(metadata.get("namespace", ""))
        if not namespace.startswith(NAMESPACE_PREFIX):
            continue
        owned = any(
            ref.get("kind") == "StatefulSet" and (namespace, ref.get("uid")) in owners
            for ref in metadata.get("ownerReferences") or []
        )
        if not owned:
            try:
                if not dry_run:
                    kube.delete("Pod", metadata["name"], namespace)
            except ToolkitError as error:
                orphans.append(f"{namespace}/{metadata['name']} not deleted: {error}")
                continue
            orphans.append(f"{namespace}/{metadata['name']}")
    return orphans
