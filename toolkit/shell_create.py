"""Creating a shell: read what the plan needs, apply its objects, wait until it is Ready.

Requests are counted: the platform settings, the nodes, the quota, the classes and a duplicate
are read once each, every object is applied once with server-side apply, and one watch waits
for the pod (bench/shell_api.py lists them). A failure removes what this create made.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit import disks, shells, users
from toolkit import gpu_queue as queueing
from toolkit import shell_manifests as manifests
from toolkit.capacity import GPU, NodeCapacity
from toolkit.errors import BadInputError, Interrupted, ToolkitError
from toolkit.interrupts import ignoring_interrupts
from toolkit.kube import Kube
from toolkit.shell_plan import (
    CREATED_BY,
    ClusterFacts,
    CreateRequest,
    Endpoint,
    ShellPlan,
    check_request,
    plan_create,
)
from toolkit.shell_settings import platform
from toolkit.shell_wait import Phase, ShellFailed, wait_ready
from toolkit.tenancy import QUOTA_NAME, namespace_of


@dataclass(frozen=True)
class CreatedShell:
    name: str
    user: str
    namespace: str
    ssh_host: str
    ssh_port: int
    host_key: str
    expires_at: datetime | None  # None while queued: its lifetime starts when it runs
    node: str
    web_url: str | None = None
    web_credential: str | None = None
    web_is_plain_http: bool = False
    jupyter_url: str | None = None
    jupyter_token: str | None = None  # shown once
    gpus: int = 0  # per node
    nodes: tuple[str, ...] = ()  # a multi-node shell's, by its pods' ordinals
    nodes_asked: int = 1
    status: str = "ready"  # or, with --no-wait: "queued" or "starting"
    position: int | None = None  # in the cluster's queue, 1 next
    lifetime: timedelta | None = None  # a queued shell's, from when it runs


def read_facts(kube: Kube, request: CreateRequest) -> ClusterFacts:
    """What the plan needs from the cluster, one request each."""
    namespace = namespace_of(request.user)
    settings = platform(kube)
    storage_class = request.storage_class or settings.storage_class
    runtime_class = settings.runtime_class if request.gpus else None
    runtime_class_exists = runtime_class is not None and kube.get("RuntimeClass", runtime_class) is not None
    disk: dict[str, Any] | None = None
    disk_users: tuple[str, ...] = ()
    if request.disk is not None:
        disk = kube.get("PersistentVolumeClaim", request.disk, namespace)
        disk_users = tuple(disks.mounting(kube, namespace, request.disk)) if disk else ()
    datasets = settings.datasets_volume is not None and request.disk != manifests.DATASETS_CLAIM
    if datasets:
        claim = kube.get("PersistentVolumeClaim", manifests.DATASETS_CLAIM, namespace)
        datasets = claim is not None and manifests.is_sites_datasets(claim, request.user)
    return ClusterFacts(
        settings=settings,
        nodes=tuple(NodeCapacity.from_node(n) for n in kube.list("Node")["items"]),
        quota=kube.get("ResourceQuota", QUOTA_NAME, namespace),
        storage_class=storage_class,
        storage_class_exists=kube.get("StorageClass", storage_class) is not None,
        runtime_class=runtime_class,
        runtime_class_exists=runtime_class_exists,
        shell_exists=kube.get("StatefulSet", request.name, namespace) is not None,
        disk=disk,
        disk_users=disk_users,
        sudo_allowed_to_user=request.sudo and users.sudo_allowed(kube, request.user),
        datasets=datasets,
        peers_service_taken=request.nodes > 1
        and kube.get("Service", manifests.peers_service_name(request.name), namespace) is not None,
        name_is_a_service=request.name.endswith(("-web", "-peers"))
        and _others_service(kube, request.name, namespace),
    )


def _others_service(kube: Kube, name: str, namespace: str) -> bool:
    """Whether the Service NAME exists and is not shell NAME's own."""
    service = kube.get("Service", name, namespace)
    return (
        service is not None and (service["metadata"].get("labels") or {}).get(manifests.SHELL_LABEL) != name
    )


def create(kube: Kube, request: CreateRequest, on_phase: Phase, now: datetime | None = None) -> CreatedShell:
    """Plan, apply the shell's objects, wait until it is Ready; undo everything on failure.

    Each object is recorded before its request is sent, so a failure or a Ctrl-C at any moment
    removes whatever this create may have made: the home volume only when this create made it.
    A second Ctrl-C does not stop that cleanup.
    """
    check_request(request)
    started = now or datetime.now(UTC).replace(microsecond=0)
    facts = read_facts(kube, request)
    plan = plan_create(request, facts, started)
    spec = plan.spec
    made: list[dict[str, Any]] = []

    def apply(manifest: dict[str, Any]) -> dict[str, Any]:
        made.append(manifest)
        return kube.apply(manifest)

    secret, claim = plan.secret, plan.claim
    try:
        # Created, not applied: the Secret claims the name, so a second create of it racing this
        # one (or meeting a failed one's leftovers) stops here instead of taking this one over.
        made.append(secret)
        if not kube.create(secret)[1]:
            made.pop()
            raise BadInputError(
                f"{spec.user} already has a shell named {spec.name!r}, or what is left of one: "
                f"toolkit shell delete {spec.name} --purge"
            )
        # Created, not applied: a home kept from an earlier shell of this name is used as it is,
        # and never removed when this create fails.
        shared_home = spec.home_claim != ""  # a disk, or a home kept from an earlier shell
        if claim is not None:
            made.append(claim)
            if not kube.create(claim)[1]:
                made.pop()
                shared_home = True
                _refuse_home_in_use(plan, _holders(kube, plan))
                on_phase("reusing the home volume kept from an earlier shell")
        if plan.shared_claim is not None:
            # The user's, not this shell's: every shell of theirs mounts it, so a failed create
            # leaves it (empty, or already holding what another shell wrote).
            kube.create_if_missing(plan.shared_claim)
        endpoint = plan.endpoint(apply(plan.service))
        if plan.peers_service is not None:
            apply(plan.peers_service)
        for web_object in plan.web_objects:
            apply(web_object)
        apply(plan.statefulset(endpoint))
        if shared_home:
            _hold_home(kube, plan)
        pod = wait_ready(
            kube,
            spec.namespace,
            spec.name,
            on_phase,
            request.timeout,
            queue=spec.queue,
            fail_if_queued=bool(spec.queue) and not request.queue,
            until_placed=not request.wait,
            pods=spec.nodes,
        )
        if spec.expose == "LoadBalancer" and not endpoint.host:
            endpoint = _record_load_balancer_address(kube, plan, endpoint)
    except (ToolkitError, KeyboardInterrupt) as failure:
        interrupted = isinstance(failure, KeyboardInterrupt)
        if request.keep_on_failure and not interrupted:
            if isinstance(failure, ShellFailed):
                raise ShellFailed(
                    f"{failure} (kept for inspection: toolkit shell delete {spec.name} --purge)"
                ) from None
            raise
        with ignoring_interrupts():
            on_phase("cleaning up")
            removed, left = _undo(kube, plan, made)
        if left:
            error = Interrupted if interrupted else ToolkitError
            raise error(
                f"{failure or 'interrupted'}; cleaning up failed, left behind: {', '.join(left)}"
            ) from None
        if interrupted:
            raise Interrupted(f"interrupted; removed {', '.join(removed) or 'nothing'}") from None
        if not spec.queue and isinstance(failure, ShellFailed) and f"Insufficient {GPU}" in str(failure):
            together = (
                f"; its {spec.nodes} pods run together or not at all, so none was kept"
                if spec.multi_node
                else ""
            )
            raise ShellFailed(
                f"{failure}{together}; queueing is off on this cluster (no Kueue queue in its shells "
                "settings): try again once GPUs free up ('toolkit shell avail' shows them)"
            ) from None
        raise
    expires_at: datetime | None = spec.expires_at
    status, position = "ready", None
    if not request.wait:
        if queueing.gated(pod):
            owner: dict[str, Any] = next(iter(pod["metadata"].get("ownerReferences") or []), {})
            place = queueing.place(kube, spec.namespace, spec.queue, str(owner.get("uid", "")))
            status, position = "queued", place.position if place else None
        else:
            status = "starting"
        expires_at = None if spec.lifetime_seconds else expires_at
    elif spec.lifetime_seconds:
        expires_at = start_clock(kube, plan, started + timedelta(hours=facts.settings.max_lifetime_hours))
    return CreatedShell(
        name=spec.name,
        user=spec.user,
        namespace=spec.namespace,
        ssh_host=endpoint.host,
        ssh_port=endpoint.ssh_port,
        host_key=spec.host_key.public,
        expires_at=expires_at,
        gpus=spec.gpus,
        nodes=_group_nodes(kube, spec) if spec.multi_node and status == "ready" else (),
        nodes_asked=spec.nodes,
        status=status,
        position=position,
        lifetime=timedelta(seconds=spec.lifetime_seconds) if spec.lifetime_seconds else None,
        node=pod["spec"].get("nodeName", ""),
        web_url=plan.web_url(endpoint),
        web_credential=f"{spec.user}:{spec.ttyd_password}" if spec.web else None,
        web_is_plain_http=plan.web_is_plain_http,
        jupyter_url=plan.jupyter_url(endpoint),
        jupyter_token=spec.jupyter_token or None,
    )


def _group_nodes(kube: Kube, spec: manifests.ShellSpec) -> tuple[str, ...]:
    """The nodes a multi-node shell's pods run on, pod 0's first."""
    found = kube.list("Pod", spec.namespace, labels=manifests.selector_query(spec.name, spec.user))["items"]
    pods = {pod["metadata"]["name"]: pod for pod in found}
    return tuple(
        str((pods.get(pod) or {}).get("spec", {}).get("nodeName") or "?")
        for pod in manifests.pod_names(spec.name, spec.nodes)
    )


def _hold_home(kube: Kube, plan: ShellPlan) -> None:
    """A home that existed before this create (a disk, or one kept from an earlier shell of the
    name) is one shell's at a time. Two creates that each found it free before either wrote its
    StatefulSet, or one that found it kept while another shell took it: now that this one's
    StatefulSet exists, the older StatefulSet keeps the home and this one gives it up (the same
    answer in both)."""
    spec = plan.spec
    holders = _holders(kube, plan)
    if not holders:  # this create's own StatefulSet went meanwhile
        raise ToolkitError(f"shell {spec.name}'s StatefulSet was deleted while it was being created")
    first = min(
        holders, key=lambda sts: (sts["metadata"].get("creationTimestamp", ""), sts["metadata"]["name"])
    )
    if first["metadata"]["name"] != spec.name:
        _refuse_home_in_use(plan, [first])


def _holders(kube: Kube, plan: ShellPlan) -> list[dict[str, Any]]:
    """The StatefulSets of the namespace that mount the shell's home."""
    spec = plan.spec
    return [
        sts
        for sts in kube.list("StatefulSet", spec.namespace)["items"]
        if spec.home in shells.mounted_claims(shells.pod_spec(sts))
    ]


def _refuse_home_in_use(plan: ShellPlan, holders: list[dict[str, Any]]) -> None:
    others = [sts["metadata"]["name"] for sts in holders if sts["metadata"]["name"] != plan.spec.name]
    if others:
        raise BadInputError(
            f"the home {plan.spec.home} is in use by shell {', '.join(others)}: delete that shell "
            "first (its home is kept), then create this one"
        )


def start_clock(kube: Kube, plan: ShellPlan, end_of_life: datetime) -> datetime:
    """A queued shell runs: its lifetime counts from now, up to the end of its maximum lifetime.
    The expiry goes where list, the reaper and the running shell read it."""
    spec = plan.spec
    expires = min(
        datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=spec.lifetime_seconds), end_of_life
    )
    stamp = manifests.timestamp(expires)
    annotations = {manifests.EXPIRES_AT: stamp, manifests.EXPIRY_FROM_START: None}
    kube.merge_patch("StatefulSet", spec.name, spec.namespace, {"metadata": {"annotations": annotations}})
    secret = {"data": {manifests.EXPIRES_AT_KEY: base64.b64encode(stamp.encode()).decode()}}
    kube.merge_patch("Secret", manifests.secret_name(spec.name), spec.namespace, secret)
    return expires


def _record_load_balancer_address(kube: Kube, plan: ShellPlan, pending: Endpoint) -> Endpoint:
    """A load balancer assigns its address after the Service is applied: record it once it has."""
    service = kube.get("Service", plan.spec.name, plan.spec.namespace) or {}
    endpoint = plan.endpoint(service) if service else pending
    if endpoint.host:
        kube.merge_patch(
            "StatefulSet",
            plan.spec.name,
            plan.spec.namespace,
            {"metadata": {"annotations": endpoint.annotations()}},
        )
    return endpoint


def _undo(kube: Kube, plan: ShellPlan, made: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Delete what this create may have made, newest first: (removed, left behind) as kind/name.
    Only what carries this create's mark is deleted."""
    removed, left = [], []
    for manifest in reversed(made):
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            if not _made_by(kube, plan, kind, name):
                continue
            if kube.delete(kind, name, plan.spec.namespace):
                removed.append(f"{kind}/{name}")
        except ToolkitError:
            left.append(f"{kind}/{name}")
    return removed, left


def _made_by(kube: Kube, plan: ShellPlan, kind: str, name: str) -> bool:
    found = kube.get(kind, name, plan.spec.namespace)
    annotations = ((found or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(CREATED_BY) == plan.creation_id
