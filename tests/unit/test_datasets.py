"""The site's read-only datasets against the STAND-IN API server: `user add` gives each user a
read-only volume of the site's source and its claim; re-runs follow the site when it turns them
on, changes or drops the source, under a full quota too, and keep what a shell mounts; `user
remove` takes them back; users can't take them as a home, delete them or fake them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import eventually
from toolkit import disks, kube, shells, users
from toolkit.errors import BadInputError, ToolkitError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest
from toolkit.shell_settings import Platform

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
WEKA = {"csi": {"driver": "csi.weka.io", "volumeHandle": "dir/v1/default/data"}}
NAS = {"nfs": {"server": "nas.example.org", "path": "/datasets"}}


def site_gives(server: FakeApiServer, source: dict[str, Any], size: str = "20Ti") -> None:
    """The role's shells ConfigMap for a site with these datasets ({} for none), and Weka's
    shared areas."""
    rendered = render(
        "shells_platform",
        "shells.yaml.j2",
        shells_platform_datasets_volume=source,
        shells_platform_datasets_size=size,
    )
    (config,) = [d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "shells"]
    if server.get("ConfigMap", "shells", "toolkit-system") is None:
        server.seed("ConfigMap", config)
    else:
        server.put(config)


@pytest.fixture
def admin(admin_kubeconfig: Path) -> kube.Kube:
    return kube.connect(admin_kubeconfig)


def add(admin: kube.Kube, tmp_path: Path, name: str = "alice", **limits: Any) -> users.User:
    return users.add(admin, name, 2, tmp_path / f"{name}.kubeconfig", None, None, overwrite=True, **limits)


def alice_on_a_site(
    admin: kube.Kube, server: FakeApiServer, tmp_path: Path, source: dict[str, Any], **limits: Any
) -> kube.Kube:
    """alice, added on a site with these datasets: her connection."""
    site_gives(server, source)
    add(admin, tmp_path, **limits)
    return kube.connect(tmp_path / "alice.kubeconfig")


def volumes_of(server: FakeApiServer, user: str = "alice") -> dict[str, dict[str, Any]]:
    return {
        v["metadata"]["name"]: v
        for v in server.list("PersistentVolume")
        if v["metadata"].get("labels", {}).get("toolkit.dev/user") == user
    }


def claim(server: FakeApiServer, user: str = "alice") -> dict[str, Any] | None:
    return server.get("PersistentVolumeClaim", "datasets", f"user-{user}")


def bound_to(server: FakeApiServer, user: str = "alice") -> str | None:
    """The volume the user's datasets claim is bound to, once it is."""
    found = claim(server, user) or {}
    if (found.get("status") or {}).get("phase") != "Bound":
        return None
    return str(found["spec"]["volumeName"])


def mounts(server: FakeApiServer, shell: str, user: str = "alice") -> dict[str, tuple[str, bool]]:
    """The shell's mount path -> (the claim mounted there, whether read-only)."""
    sts = server.get("StatefulSet", shell, f"user-{user}")
    assert sts is not None
    pod = sts["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    return {
        m["mountPath"]: (claims[m["name"]]["claimName"], bool(claims[m["name"]].get("readOnly")))
        for m in pod["containers"][0]["volumeMounts"]
        if m["name"] in claims
    }


def request(name: str = "train", user: str = "alice", **changes: Any) -> CreateRequest:
    return CreateRequest(name=name, user=user, authorized_keys=(KEY,), **changes)


def test_every_user_gets_a_read_only_volume_of_the_site_datasets_not_theirs_to_delete(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    site_gives(fake_cluster, WEKA)
    people = {}
    for name in ("alice", "bob"):
        add(admin, tmp_path, name)
        people[name] = kube.connect(tmp_path / f"{name}.kubeconfig")
    for name in ("alice", "bob"):
        (volume,) = volumes_of(fake_cluster, name).values()
        assert volume["spec"]["csi"] == {**WEKA["csi"], "readOnly": True}
        assert volume["spec"]["accessModes"] == ["ReadOnlyMany"]
        assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert eventually(lambda n=name: bound_to(fake_cluster, n) is not None, timeout=10)
        quota = fake_cluster.get("ResourceQuota", "shells", f"user-{name}")
        # 8 homes, the shared area and the datasets.
        assert quota is not None and quota["spec"]["hard"]["persistentvolumeclaims"] == "10"
    create(people["alice"], request(), lambda _: None)
    assert mounts(fake_cluster, "train")["/datasets"] == ("datasets", True)
    [listed] = [d for d in disks.list_disks(people["alice"], "alice") if d.name == "datasets"]
    assert listed.datasets and listed.kept == "yes (the site's datasets)" and listed.size == "20Ti"
    with pytest.raises(BadInputError, match="is the site's datasets"):
        disks.delete_disk(people["bob"], "bob", "datasets")
    with pytest.raises(BadInputError, match="the name is kept for the site's datasets"):
        create(people["bob"], request(user="bob", disk="datasets"), lambda _: None)
    assert fake_cluster.get("StatefulSet", "train", "user-bob") is None
    # Users can't reach the volumes themselves; a claim its user deleted is given back by user add.
    (bobs_volume,) = volumes_of(fake_cluster, "bob")
    with pytest.raises(kube.ApiError) as refused:
        people["bob"].get("PersistentVolume", bobs_volume)
    assert refused.value.code == 403
    people["bob"].delete("PersistentVolumeClaim", "datasets", "user-bob")
    assert add(admin, tmp_path, "bob").warnings == ()
    assert eventually(lambda: bound_to(fake_cluster, "bob") == bobs_volume, timeout=10)
    # Removing the user removes their volume of the datasets, never the datasets themselves.
    assert f"PersistentVolume/{bobs_volume}" in users.remove(admin, "bob", purge=True)
    assert volumes_of(fake_cluster, "bob") == {}


def test_datasets_turned_on_reach_a_user_whose_volumes_are_all_taken(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    """The re-run raises the quota before it makes the claim: the other way round, a user with
    every volume in use would be refused it, over quota."""
    alice = alice_on_a_site(admin, fake_cluster, tmp_path, {}, volumes=1)
    create(alice, request(), lambda _: None)
    assert "/datasets" not in mounts(fake_cluster, "train")

    site_gives(fake_cluster, WEKA)
    add(admin, tmp_path, volumes=1)
    assert eventually(lambda: bound_to(fake_cluster) is not None, timeout=10)
    quota = fake_cluster.get("ResourceQuota", "shells", "user-alice")
    # A home, the shared area and the datasets.
    assert quota is not None and quota["spec"]["hard"]["persistentvolumeclaims"] == "3"
    shells.delete(alice, "alice", "train", purge=True)
    create(alice, request("eval"), lambda _: None)
    assert mounts(fake_cluster, "eval")["/datasets"] == ("datasets", True)


def test_a_changed_source_replaces_the_users_volume_once_no_shell_mounts_it(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    alice = alice_on_a_site(admin, fake_cluster, tmp_path, WEKA)
    (weka,) = volumes_of(fake_cluster)
    create(alice, request(), lambda _: None)

    site_gives(fake_cluster, NAS)
    (warning,) = add(admin, tmp_path).warnings
    assert warning == (
        "alice's datasets are kept as they were for shell train (ready): the site's datasets are "
        "changed; re-run 'toolkit user add' once those are deleted"
    )
    assert set(volumes_of(fake_cluster)) == {weka} and bound_to(fake_cluster) == weka

    shells.delete(alice, "alice", "train", purge=True)
    assert add(admin, tmp_path).warnings == ()
    (nas,) = volumes_of(fake_cluster)
    assert nas != weka and volumes_of(fake_cluster)[nas]["spec"]["nfs"] == {**NAS["nfs"], "readOnly": True}
    assert eventually(lambda: bound_to(fake_cluster) == nas, timeout=10)
    # A re-run with nothing changed changes nothing.
    before = claim(fake_cluster)
    assert add(admin, tmp_path).warnings == ()
    after = claim(fake_cluster)
    assert before and after and after["metadata"]["uid"] == before["metadata"]["uid"]


def test_datasets_the_site_no_longer_gives_are_taken_back_and_new_shells_go_without(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    alice = alice_on_a_site(admin, fake_cluster, tmp_path, NAS)
    assert eventually(lambda: bound_to(fake_cluster) is not None, timeout=10)

    site_gives(fake_cluster, {})
    create(alice, request(), lambda _: None)  # before any re-run: the site's word is enough
    assert "/datasets" not in mounts(fake_cluster, "train")
    assert add(admin, tmp_path).warnings == ()
    assert claim(fake_cluster) is None and volumes_of(fake_cluster) == {}
    quota = fake_cluster.get("ResourceQuota", "shells", "user-alice")
    assert quota is not None and quota["spec"]["hard"]["persistentvolumeclaims"] == "9"  # homes, shared


def test_a_users_own_volume_named_datasets_is_neither_the_sites_nor_replaced(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    alice = alice_on_a_site(admin, fake_cluster, tmp_path, WEKA)
    alice.delete("PersistentVolumeClaim", "datasets", "user-alice")
    labels = {"app.kubernetes.io/managed-by": "toolkit", "app.kubernetes.io/component": "datasets"}
    alice.create({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "datasets", "namespace": "user-alice", "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "shared-wekafs",
                 "resources": {"requests": {"storage": "1Gi"}}},
    })  # fmt: skip

    (warning,) = add(admin, tmp_path).warnings
    assert "alice has a volume of their own named 'datasets'" in warning
    own = claim(fake_cluster)
    assert own is not None and own["spec"]["storageClassName"] == "shared-wekafs"
    [listed] = [d for d in disks.list_disks(alice, "alice") if d.name == "datasets"]
    assert not listed.datasets
    create(alice, request(), lambda _: None)
    assert "/datasets" not in mounts(fake_cluster, "train")


def test_user_remove_without_purge_takes_the_datasets_back(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    alice = alice_on_a_site(admin, fake_cluster, tmp_path, WEKA)
    create(alice, request(), lambda _: None)
    (volume,) = volumes_of(fake_cluster)

    removed = users.remove(admin, "alice", purge=False)
    assert "PersistentVolumeClaim/datasets" in removed and f"PersistentVolume/{volume}" in removed
    assert claim(fake_cluster) is None and volumes_of(fake_cluster) == {}
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is not None


@pytest.mark.parametrize(
    "text",
    [
        '{"hostPath": {"path": "/"}}',
        '{"csi": {}, "nfs": {}}',
        '{"csi": "dir/v1/x"}',
        '{"csi": {"driver": "csi.weka.io"}}',
        '{"csi": {"driver": "csi.weka.io", "volumeHandle": 7}}',
        '{"nfs": {"server": "nas.example.org", "path": ""}}',
        "not json",
        "[1]",
    ],
)
def test_a_datasets_volume_that_names_no_volume_is_refused(text: str) -> None:
    config = {"metadata": {"name": "shells"}, "data": {"datasetsVolume": text}}
    with pytest.raises(ToolkitError, match="datasetsVolume is not one PersistentVolume source as JSON, csi"):
        Platform.from_config_maps([config])


def test_the_datasets_volume_is_named_after_its_source() -> None:
    from toolkit.shell_manifests import datasets_volume_name, is_sites_datasets

    weka, nas = datasets_volume_name("alice", WEKA), datasets_volume_name("alice", NAS)
    assert weka != nas and weka.startswith("toolkit-datasets-alice-")
    assert datasets_volume_name("alice", dict(WEKA)) == weka
    sites = {"metadata": {"name": "datasets"}, "spec": {"volumeName": weka}}
    assert is_sites_datasets(sites, "alice")
    assert not is_sites_datasets(sites, "bob")
    assert not is_sites_datasets({"metadata": {"name": "datasets"}, "spec": {"volumeName": "pvc-1"}}, "alice")
    assert not is_sites_datasets({"metadata": {"name": "data"}, "spec": {"volumeName": weka}}, "alice")
