"""The site's read-only datasets in each user's namespace, as `user add` gives them.

Per user: a PersistentVolume of the site's source (shells_platform_datasets_volume), forced
read-only and reserved for the user's claim `datasets`, and that claim. A PV's source can't
change, so the volume is named after its source: when the site changes or drops the source,
`user add` replaces or removes the user's volume and claim, unless a shell mounts them, which
keeps them (and says so) until it is gone. Nothing here touches the site's data: the volumes are
Retain, and deleting one leaves what it points at.
"""

from __future__ import annotations

import time

from toolkit import disks
from toolkit.errors import ToolkitError
from toolkit.kube import ApiError, Kube
from toolkit.shell_manifests import (
    COMPONENT,
    DATASETS_CLAIM,
    Manifest,
    datasets_volumes,
    is_sites_datasets,
)
from toolkit.shell_settings import Platform
from toolkit.tenancy import MANAGED_BY, USER_LABEL, namespace_of

# How long a claim may take to go once deleted (its protection finalizer, with nothing mounting
# it), and a raised quota to reach admission (the quota controller copies spec.hard to status).
SETTLE_SECONDS = 30.0


def volumes_of(kube: Kube, user: str) -> list[Manifest]:
    """The user's datasets volumes (PersistentVolumes, which only operators write)."""
    selector = f"{MANAGED_BY}=toolkit,{COMPONENT}=datasets,{USER_LABEL}={user}"
    return list(kube.list("PersistentVolume", labels=selector)["items"])


def give(kube: Kube, user: str, settings: Platform) -> list[str]:
    """Make the user's datasets volume and claim match the site's setting; the warnings, if any,
    say what was kept and why."""
    namespace = namespace_of(user)
    wanted = (
        datasets_volumes(user, namespace, settings.datasets_volume, settings.datasets_size)
        if settings.datasets_volume is not None
        else None
    )
    wanted_name = wanted[0]["metadata"]["name"] if wanted else None
    volumes = volumes_of(kube, user)
    claim = kube.get("PersistentVolumeClaim", DATASETS_CLAIM, namespace)
    if claim is not None and not is_sites_datasets(claim, user):
        if wanted is None:
            return []
        return [
            f"{user} has a volume of their own named {DATASETS_CLAIM!r}: the site's datasets are "
            f"not given to them until it is gone ('toolkit disk delete {DATASETS_CLAIM}')"
        ]
    if claim is not None and claim["spec"].get("volumeName") != wanted_name:
        holders = disks.mounting(kube, namespace, DATASETS_CLAIM)
        if holders:
            what = "changed" if wanted else "no longer given"
            return [
                f"{user}'s datasets are kept as they were for {', '.join(holders)}: the site's "
                f"datasets are {what}; re-run 'toolkit user add' once those are deleted"
            ]
        kube.delete("PersistentVolumeClaim", DATASETS_CLAIM, namespace)
        _wait_gone(kube, namespace)
        claim = None
    for volume in volumes:
        if volume["metadata"]["name"] != wanted_name:
            kube.delete("PersistentVolume", volume["metadata"]["name"])
    if wanted is None:
        return []
    volume, new_claim = wanted
    if not any(v["metadata"]["name"] == wanted_name for v in volumes):
        kube.create(volume)
    elif claim is None:
        # Its claim was deleted: the volume, kept (Retain), is reserved for the next claim of the
        # name again, as it was made.
        kube.merge_patch("PersistentVolume", volume["metadata"]["name"], None,
                         {"spec": {"claimRef": {"uid": None, "resourceVersion": None}}})  # fmt: skip
    if claim is None:
        create_within_quota(kube, new_claim)
    return []


def take_back(kube: Kube, user: str, claim_too: bool) -> list[str]:
    """Delete the user's datasets volumes, and their claim with `claim_too` (the user's shells are
    gone by then); what was deleted. A volume still bound goes once its claim is gone."""
    removed = []
    namespace = namespace_of(user)
    if claim_too:
        claim = kube.get("PersistentVolumeClaim", DATASETS_CLAIM, namespace)
        if claim is not None and is_sites_datasets(claim, user):
            kube.delete("PersistentVolumeClaim", DATASETS_CLAIM, namespace)
            removed.append(f"PersistentVolumeClaim/{DATASETS_CLAIM}")
    for volume in volumes_of(kube, user):
        if kube.delete("PersistentVolume", volume["metadata"]["name"]):
            removed.append(f"PersistentVolume/{volume['metadata']['name']}")
    return removed


def create_within_quota(kube: Kube, manifest: Manifest) -> None:
    """Create the object unless one of its name exists, waiting out a quota just raised: admission
    judges against the quota's status, which its controller updates a moment later."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            kube.create_if_missing(manifest)
            return
        except ApiError as error:
            if error.code != 403 or "exceeded quota" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _wait_gone(kube: Kube, namespace: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while kube.get("PersistentVolumeClaim", DATASETS_CLAIM, namespace) is not None:
        if time.monotonic() > deadline:
            raise ToolkitError(
                f"{namespace}/{DATASETS_CLAIM} is still being deleted after {SETTLE_SECONDS:.0f}s: "
                "run 'toolkit user add' again in a moment"
            )
        time.sleep(0.5)
