"""A user's disks: the volumes (PVCs) of their namespace, which outlive the shells that use them.

A shell's home is a disk: `shell create` makes NAME-home, or mounts one the user names
(`--disk`); `shell delete` keeps it unless --purge, and stamps when it let it go. The user's
shared area (`shared`, at /shared in every shell) is a disk too. What mounts a disk is read
from the namespace's StatefulSets and pods, never from a disk's own labels: its owner writes
those. Its last use is only shown, from a stamp its owner could write too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from toolkit import shell_manifests as manifests
from toolkit.errors import BadInputError, ToolkitError
from toolkit.kube import Kube
from toolkit.shells import Shell, mounted_claims, parse_time, pod_spec, printable
from toolkit.tenancy import NAMESPACE_PREFIX, USER_NAME, namespace_of


@dataclass(frozen=True)
class Disk:
    name: str
    user: str
    namespace: str
    size: str
    storage_class: str
    access_modes: tuple[str, ...]
    phase: str  # Bound, Pending, Lost
    created: datetime
    released_at: datetime | None  # when a shell last let it go (`shell delete` without --purge)
    # What mounts it now: "shell NAME (STATUS)" for a shell (paused ones hold it too), "pod NAME"
    # for a pod no shell owns.
    used_by: tuple[str, ...]
    shared: bool  # the user's shared area
    datasets: bool = False  # the site's read-only datasets, which `user add` gives each user

    @property
    def last_used(self) -> datetime | None:
        """None while in use; else when a shell let it go, or when it was made."""
        return None if self.used_by else self.released_at or self.created

    @property
    def kept(self) -> str:
        """Until when it is kept: a disk goes only with `disk delete`, or with `shell delete
        --purge` of the shell whose home it is."""
        if self.shared:
            return "yes (shared area)"
        if self.datasets:
            return "yes (the site's datasets)"
        shells = [what.split()[1] for what in self.used_by if what.startswith("shell ")]
        return f"unless {shells[0]} is deleted with --purge" if shells else "yes"

    def as_dict(self) -> dict[str, Any]:
        last_used = self.last_used
        return {
            "name": self.name,
            "user": self.user,
            "size": self.size,
            "storage_class": self.storage_class,
            "access_modes": list(self.access_modes),
            "phase": self.phase,
            "created": manifests.timestamp(self.created),
            "used_by": list(self.used_by),
            "last_used": manifests.timestamp(last_used) if last_used else None,
            "shared": self.shared,
            "datasets": self.datasets,
            "kept": self.kept,
        }


def users_of(
    statefulsets: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> dict[tuple[str, str], list[str]]:
    """(namespace, claim) -> what mounts it: every StatefulSet whatever its replicas, and the pods
    no StatefulSet listed here owns (those are counted through it; an owner reference is matched
    by uid, so a pod can't hide behind one it made up)."""
    found: dict[tuple[str, str], list[str]] = {}
    counted = {str(sts["metadata"].get("uid", "")) for sts in statefulsets}
    for sts in statefulsets:
        shell = Shell.from_statefulset(sts) if _is_shell(sts) else None
        what = f"shell {sts['metadata']['name']}" + (f" ({shell.status})" if shell else "")
        for claim in mounted_claims(pod_spec(sts)):
            found.setdefault((sts["metadata"].get("namespace", ""), claim), []).append(what)
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences") or []
        if any(isinstance(owner, dict) and str(owner.get("uid", "")) in counted for owner in owners):
            continue
        for claim in mounted_claims(pod.get("spec")):
            found.setdefault((pod["metadata"].get("namespace", ""), claim), []).append(
                f"pod {pod['metadata']['name']}"
            )
    return found


def mounting(kube: Kube, namespace: str, claim: str) -> list[str]:
    """What in the namespace mounts the claim (two list calls)."""
    statefulsets = kube.list("StatefulSet", namespace)["items"]
    return users_of(statefulsets, kube.list("Pod", namespace)["items"]).get((namespace, claim), [])


def _is_shell(sts: dict[str, Any]) -> bool:
    return (sts["metadata"].get("labels") or {}).get(manifests.COMPONENT) == "shell"


def list_disks(kube: Kube, user: str | None) -> list[Disk]:
    """The user's disks, or every user's when `user` is None: three list calls (volumes,
    StatefulSets, pods)."""
    namespace = namespace_of(user) if user else None
    claims = kube.list("PersistentVolumeClaim", namespace)["items"]
    mounts = users_of(kube.list("StatefulSet", namespace)["items"], kube.list("Pod", namespace)["items"])
    found = [disk for claim in claims if (disk := _disk(claim, mounts)) is not None]
    return sorted(found, key=lambda d: (d.user, d.name))


def _disk(claim: dict[str, Any], mounts: dict[tuple[str, str], list[str]]) -> Disk | None:
    metadata = claim["metadata"]
    namespace = str(metadata.get("namespace", ""))
    user = namespace.removeprefix(NAMESPACE_PREFIX)
    if not namespace.startswith(NAMESPACE_PREFIX) or not USER_NAME.fullmatch(user):
        return None
    spec, status = claim.get("spec") or {}, claim.get("status") or {}
    size = (status.get("capacity") or {}).get("storage") or (
        (spec.get("resources") or {}).get("requests") or {}
    ).get("storage", "")
    labels = metadata.get("labels") or {}
    return Disk(
        name=metadata["name"],
        user=user,
        namespace=namespace,
        size=printable(str(size)),
        storage_class=printable(str(spec.get("storageClassName") or "")),
        access_modes=tuple(printable(str(mode)) for mode in spec.get("accessModes") or []),
        phase=printable(str(status.get("phase", "Pending"))),
        created=parse_time(metadata.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC),
        released_at=_released_at(metadata),
        used_by=tuple(mounts.get((namespace, metadata["name"]), [])),
        shared=metadata["name"] == manifests.SHARED_CLAIM and labels.get(manifests.COMPONENT) == "shared",
        datasets=manifests.is_sites_datasets(claim, user),
    )


def _released_at(metadata: dict[str, Any]) -> datetime | None:
    """When a shell let the disk go; its owner can write that too, so never a time to come."""
    moment = parse_time((metadata.get("annotations") or {}).get(manifests.RELEASED_AT))
    return moment if moment is not None and moment <= datetime.now(UTC) else None


def get_disk(kube: Kube, user: str, name: str) -> Disk:
    if not manifests.DISK_NAME.fullmatch(name):
        raise BadInputError(f"{name!r} is not a disk's name (lowercase letters, digits, '-', '.')")
    found = next((disk for disk in list_disks(kube, user) if disk.name == name), None)
    if found is None:
        raise BadInputError(f"{user} has no disk named {name!r} (toolkit disk list shows them)")
    return found


def delete_disk(kube: Kube, user: str, name: str) -> None:
    """Delete a disk no shell or pod mounts; its files are gone."""
    disk = get_disk(kube, user, name)
    if disk.datasets:
        raise BadInputError(
            f"disk {name} is the site's datasets, read-only in every shell: it is not yours to delete"
        )
    if disk.used_by:
        raise ToolkitError(
            f"disk {name} is in use by {', '.join(disk.used_by)}: delete that first "
            "(toolkit shell delete NAME keeps the disk)"
        )
    kube.delete("PersistentVolumeClaim", name, namespace_of(user))
