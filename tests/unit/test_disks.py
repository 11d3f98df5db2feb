"""A user's disks against the STAND-IN API server: homes kept after delete, mounted again with
--disk, refused while in use, the shared area in every shell, and bad input leaving nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import disks, kube, shells, users
from toolkit.errors import BadInputError, ToolkitError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
EARLIER = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@pytest.fixture
def admin(fake_cluster: FakeApiServer, admin_kubeconfig: Path) -> kube.Kube:
    """A site with Weka: volumes ReadWriteMany, and each user's shared area."""
    fake_cluster.seed(
        "ConfigMap",
        {"metadata": {"name": "a-site", "namespace": "toolkit-system",
                      "labels": {"toolkit.dev/shells-config": "true"}},
         "data": {"accessMode": "ReadWriteMany", "sharedStorage": "100Gi"}},
    )  # fmt: skip
    return kube.connect(admin_kubeconfig)


@pytest.fixture
def alice(admin: kube.Kube, tmp_path: Path) -> kube.Kube:
    users.add(admin, "alice", 4, tmp_path / "alice.kubeconfig", None, None)
    return kube.connect(tmp_path / "alice.kubeconfig")


def request(name: str = "train", **changes: Any) -> CreateRequest:
    return CreateRequest(name=name, user="alice", authorized_keys=(KEY,), **changes)


def snapshot(server: FakeApiServer) -> set[tuple[str, str, str]]:
    return {key for key in server.objects if key[0] != "events"}


def volumes(server: FakeApiServer, name: str) -> dict[str, str]:
    """The shell's mount path -> the claim mounted there."""
    sts = server.get("StatefulSet", name, "user-alice")
    assert sts is not None
    pod = sts["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = pod["containers"][0]["volumeMounts"]
    return {m["mountPath"]: claims[m["name"]] for m in mounts if m["name"] in claims}


def test_a_home_kept_after_delete_is_listed_and_becomes_a_new_shells_home(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    assert volumes(fake_cluster, "train") == {"/home/alice": "train-home", "/shared": "shared"}
    [home] = [d for d in disks.list_disks(alice, "alice") if d.name == "train-home"]
    assert home.used_by == ("shell train (ready)",) and home.last_used is None

    shells.delete(alice, "alice", "train", purge=False, now=EARLIER)
    listed = {d.name: d for d in disks.list_disks(alice, "alice")}
    assert set(listed) == {"train-home", "shared"}
    assert listed["train-home"].used_by == () and listed["train-home"].last_used == EARLIER
    assert listed["train-home"].as_dict()["last_used"] == EARLIER.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed["shared"].shared and not listed["train-home"].shared

    create(alice, request("eval", disk="train-home"), lambda _: None)
    assert volumes(fake_cluster, "eval") == {"/home/alice": "train-home", "/shared": "shared"}
    assert fake_cluster.get("PersistentVolumeClaim", "eval-home", "user-alice") is None  # no new home
    assert shells.get_shell(alice, "alice", "eval").home == "train-home"
    assert disks.get_disk(alice, "alice", "train-home").used_by == ("shell eval (ready)",)

    # --purge deletes the home the shell mounts, whatever its name; never the shared area.
    deleted = shells.delete(alice, "alice", "eval", purge=True)
    assert "PersistentVolumeClaim/train-home" in deleted
    assert [d.name for d in disks.list_disks(alice, "alice")] == ["shared"]


def test_a_disk_in_use_is_neither_deleted_nor_mounted_by_another_shell(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    with pytest.raises(ToolkitError, match=r"disk train-home is in use by shell train \(ready\)"):
        disks.delete_disk(alice, "alice", "train-home")
    shells.pause(alice, "alice", "train")  # a paused shell still holds its home
    with pytest.raises(ToolkitError, match=r"in use by shell train \(paused\)"):
        disks.delete_disk(alice, "alice", "train-home")
    with pytest.raises(ToolkitError, match=r"disk shared is in use by shell train"):
        disks.delete_disk(alice, "alice", "shared")
    before = snapshot(fake_cluster)
    with pytest.raises(BadInputError, match=r"--disk train-home is in use by shell train \(paused\)"):
        create(alice, request("eval", disk="train-home"), lambda _: None)
    assert snapshot(fake_cluster) == before

    shells.delete(alice, "alice", "train", purge=False)
    disks.delete_disk(alice, "alice", "train-home")
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"disk": "missing"}, "alice has no volume of that name"),
        ({"disk": "Not_A_Name"}, "is not a volume's name"),
        ({"disk": "shared"}, "that is alice's shared area"),
        ({"disk": "old-home", "storage": "10Gi"}, "--storage and --storage-class are for a new one"),
    ],
)
def test_a_disk_that_cant_be_a_home_is_one_line_and_leaves_nothing(
    alice: kube.Kube, admin: kube.Kube, fake_cluster: FakeApiServer, changes: dict[str, str], reason: str
) -> None:
    create(alice, request("old"), lambda _: None)
    shells.delete(alice, "alice", "old", purge=False)
    before = snapshot(fake_cluster)
    with pytest.raises(BadInputError, match=reason) as refused:
        create(alice, request(**changes), lambda _: None)
    assert "\n" not in str(refused.value)
    assert snapshot(fake_cluster) == before


def test_a_kept_home_given_to_another_shell_is_not_taken_back_nor_purged_from_under_it(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request("a"), lambda _: None)
    shells.delete(alice, "alice", "a", purge=False)
    create(alice, request("b", disk="a-home"), lambda _: None)
    before = snapshot(fake_cluster)
    # A new shell of the kept home's old name would mount it beside b.
    with pytest.raises(BadInputError, match="the home a-home is in use by shell b"):
        create(alice, request("a"), lambda _: None)
    assert snapshot(fake_cluster) == before
    # A shell whose template (its owner writes it) names another's home, or the shared area, as
    # its own: --purge deletes neither.
    sts = fake_cluster.get("StatefulSet", "b", "user-alice")
    assert sts is not None
    for home in ("a-home", "shared"):
        forged = {"apiVersion": "apps/v1", "kind": "StatefulSet",
                  "metadata": {**{k: sts["metadata"][k] for k in ("labels", "annotations")}, "name": "c",
                               "namespace": "user-alice"},
                  "spec": {**sts["spec"], "template": {**sts["spec"]["template"]}}}  # fmt: skip
        forged["metadata"]["labels"] = {**sts["metadata"]["labels"], "toolkit.dev/shell": "c"}
        forged["spec"]["selector"] = {"matchLabels": {"toolkit.dev/shell": "c", "toolkit.dev/user": "alice"}}
        forged["spec"]["template"]["metadata"] = {"labels": forged["metadata"]["labels"]}
        forged["spec"]["template"]["spec"] = {
            **sts["spec"]["template"]["spec"],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": home}}],
        }
        alice.apply(forged)
        with pytest.raises(BadInputError, match="delete it without --purge"):
            shells.delete(alice, "alice", "c", purge=True)
        shells.delete(alice, "alice", "c", purge=False)
    assert fake_cluster.get("PersistentVolumeClaim", "a-home", "user-alice") is not None
    assert fake_cluster.get("PersistentVolumeClaim", "shared", "user-alice") is not None


def test_a_last_use_to_come_is_not_believed(alice: kube.Kube, fake_cluster: FakeApiServer) -> None:
    create(alice, request(), lambda _: None)
    shells.delete(alice, "alice", "train", purge=False)
    stamp = {"metadata": {"annotations": {"toolkit.dev/released-at": "2999-01-01T00:00:00Z"}}}
    alice.merge_patch("PersistentVolumeClaim", "train-home", "user-alice", stamp)
    disk = disks.get_disk(alice, "alice", "train-home")
    assert disk.last_used == disk.created


def test_of_two_creates_racing_for_one_disk_the_older_shell_keeps_it(
    alice: kube.Kube, fake_cluster: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(alice, request("old"), lambda _: None)
    shells.delete(alice, "alice", "old", purge=False)
    create(alice, request("first", disk="old-home"), lambda _: None)
    # The second create read the disk as free before the first wrote its StatefulSet.
    monkeypatch.setattr(disks, "mounting", lambda *_: [])
    before = snapshot(fake_cluster)
    with pytest.raises(BadInputError, match="the home old-home is in use by shell first"):
        create(alice, request("second", disk="old-home"), lambda _: None)
    assert snapshot(fake_cluster) == before
    assert disks.get_disk(alice, "alice", "old-home").used_by == ("shell first (ready)",)


def test_the_shared_area_is_the_users_made_once_and_mounted_in_every_shell(
    admin: kube.Kube, alice: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    shared = fake_cluster.get("PersistentVolumeClaim", "shared", "user-alice")
    assert shared is not None  # user add made it
    assert shared["spec"]["accessModes"] == ["ReadWriteMany"]
    assert shared["spec"]["resources"]["requests"]["storage"] == "100Gi"
    create(alice, request("one"), lambda _: None)
    create(alice, request("two"), lambda _: None)
    assert volumes(fake_cluster, "one")["/shared"] == volumes(fake_cluster, "two")["/shared"] == "shared"
    # Deleted by its owner, it comes back with their next shell, and a failed create keeps it.
    for name in ("one", "two"):
        shells.delete(alice, "alice", name, purge=True)
    disks.delete_disk(alice, "alice", "shared")
    with pytest.raises(BadInputError):
        create(alice, request("big", gpus=64), lambda _: None)
    assert (
        fake_cluster.get("PersistentVolumeClaim", "shared", "user-alice") is None
    )  # refused before anything
    create(alice, request("three"), lambda _: None)
    assert fake_cluster.get("PersistentVolumeClaim", "shared", "user-alice") is not None
    # Where the site gives none, shells mount none and users get none.
    fake_cluster.seed(
        "ConfigMap",
        {"metadata": {"name": "shells", "namespace": "toolkit-system",
                      "labels": {"toolkit.dev/shells-config": "true"}},
         "data": {"sharedStorage": "", "accessMode": "ReadWriteOnce"}},
    )  # fmt: skip
    create(alice, request("four"), lambda _: None)
    assert volumes(fake_cluster, "four") == {"/home/alice": "four-home"}
    home = fake_cluster.get("PersistentVolumeClaim", "four-home", "user-alice")
    assert home is not None and home["spec"]["accessModes"] == ["ReadWriteOnce"]
    users.add(admin, "bob", 1, tmp_path / "bob.kubeconfig", None, None)
    assert fake_cluster.get("PersistentVolumeClaim", "shared", "user-bob") is None


def test_operators_list_every_users_disks_and_users_only_their_own(
    admin: kube.Kube, alice: kube.Kube, tmp_path: Path
) -> None:
    users.add(admin, "bob", 1, tmp_path / "bob.kubeconfig", None, None)
    bob = kube.connect(tmp_path / "bob.kubeconfig")
    create(alice, request(), lambda _: None)
    assert [(d.user, d.name) for d in disks.list_disks(admin, None)] == [
        ("alice", "shared"), ("alice", "train-home"), ("bob", "shared"),
    ]  # fmt: skip
    assert [d.name for d in disks.list_disks(bob, "bob")] == ["shared"]
    with pytest.raises(BadInputError, match="bob has no disk named 'train-home'"):
        disks.delete_disk(bob, "bob", "train-home")
    with pytest.raises(kube.ApiError) as denied:
        disks.list_disks(bob, "alice")
    assert denied.value.code == 403


def test_what_mounts_a_disk_is_read_from_workloads_and_odd_specs_mount_nothing() -> None:
    def sts(name: str, spec: Any) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "user-alice"}, "spec": {"template": {"spec": spec}}}

    mounted = disks.users_of(
        [
            sts("a", {"volumes": [{"name": "x", "persistentVolumeClaim": {"claimName": "data"}}]}),
            sts("b", "not a spec"),
            sts("c", {"volumes": ["odd", {"persistentVolumeClaim": {"claimName": 7}}]}),
        ],
        [
            {"metadata": {"name": "loose", "namespace": "user-alice"},
             "spec": {"volumes": [{"name": "x", "persistentVolumeClaim": {"claimName": "data"}}]}},
            {"metadata": {"name": "a-0", "namespace": "user-alice",
                          "ownerReferences": [{"kind": "StatefulSet"}]},
             "spec": {"volumes": [{"name": "x", "persistentVolumeClaim": {"claimName": "data"}}]}},
        ],
    )  # fmt: skip
    assert mounted == {("user-alice", "data"): ["shell a", "pod loose"]}
