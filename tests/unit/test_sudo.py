"""sudo by policy against the STAND-IN API server, configured with shells_platform's rendered
settings and admission policies: the site allows it to everyone or the operator to some users,
`shell create --sudo` is refused elsewhere, and admission refuses privilege escalation to any
client that is not allowed it, the user's own kubectl included."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import gpu_cluster
from toolkit import kube, shells, users
from toolkit.errors import BadInputError
from toolkit.kube import ApiError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


def configured(**settings: Any) -> FakeApiServer:
    server = gpu_cluster("gpu-1")
    for document in render("shells_platform", "shells.yaml.j2", **settings) + render(
        "shells_platform", "toolkit-admission.yaml.j2"
    ):
        server.seed(document["kind"], document)
    return server


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    server = configured()
    yield server
    server.stop()


def user(cluster: FakeApiServer, tmp_path: Path, name: str, **options: Any) -> kube.Kube:
    admin = kube.connect(cluster.kubeconfig(tmp_path / "admin.kubeconfig"))
    users.add(admin, name, 2, tmp_path / f"{name}.kubeconfig", None, None, **options)
    return kube.connect(tmp_path / f"{name}.kubeconfig")


def request(who: str, name: str = "train", **changes: Any) -> CreateRequest:
    return CreateRequest(name=name, user=who, authorized_keys=(KEY,), **changes)


def container(cluster: FakeApiServer, who: str, name: str) -> dict[str, Any]:
    sts = cluster.get("StatefulSet", name, f"user-{who}")
    assert sts is not None
    return sts["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_the_operator_allows_sudo_per_user_and_the_shell_gets_it(
    cluster: FakeApiServer, tmp_path: Path
) -> None:
    alice = user(cluster, tmp_path, "alice", sudo=True)
    bob = user(cluster, tmp_path, "bob")
    create(alice, request("alice", sudo=True), lambda _: None)
    shell = container(cluster, "alice", "train")
    assert {"name": "SHELL_SUDO", "value": "true"} in shell["env"]
    assert shell["securityContext"]["allowPrivilegeEscalation"] is True
    assert shells.get_shell(alice, "alice", "train").sudo
    create(alice, request("alice", "plain"), lambda _: None)  # without --sudo, none
    assert container(cluster, "alice", "plain")["securityContext"]["allowPrivilegeEscalation"] is False

    before = {key for key in cluster.objects if key[1] == "user-bob" and key[0] != "events"}
    with pytest.raises(
        BadInputError, match=r"bob is not one of them \(toolkit user add bob --sudo\)"
    ) as refused:
        create(bob, request("bob", sudo=True), lambda _: None)
    assert "\n" not in str(refused.value)
    assert {key for key in cluster.objects if key[1] == "user-bob" and key[0] != "events"} == before


def test_admission_refuses_privilege_escalation_to_a_user_not_allowed_sudo_whatever_the_client(
    cluster: FakeApiServer, tmp_path: Path
) -> None:
    alice = user(cluster, tmp_path, "alice", sudo=True)
    bob = user(cluster, tmp_path, "bob")
    create(alice, request("alice", sudo=True), lambda _: None)
    create(bob, request("bob"), lambda _: None)
    sts = cluster.get("StatefulSet", "train", "user-bob")
    assert sts is not None
    escalating = copy.deepcopy(sts)
    escalating["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = (
        True
    )
    with pytest.raises(ApiError) as refused:
        bob.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "train", "namespace": "user-bob", "labels": sts["metadata"]["labels"]},
                "spec": escalating["spec"],
            }
        )
    assert refused.value.code == 403 and "sudo is not allowed to this user" in str(refused.value)
    # A container that leaves allowPrivilegeEscalation unset escalates by default: refused too.
    del escalating["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    with pytest.raises(ApiError) as unset:
        bob.merge_patch("StatefulSet", "train", "user-bob", {"spec": escalating["spec"]})
    assert unset.value.code == 403
    # Re-running user add (to change a quota, say) keeps the operator's word; --no-sudo takes it back.
    admin = kube.connect(cluster.kubeconfig(tmp_path / "admin.kubeconfig"))
    users.add(admin, "alice", 3, tmp_path / "alice.kubeconfig", None, None, overwrite=True)
    namespace = cluster.get("Namespace", "user-alice")
    assert namespace is not None and namespace["metadata"]["labels"]["toolkit.dev/sudo"] == "true"
    users.add(admin, "alice", 3, tmp_path / "alice.kubeconfig", None, None, overwrite=True, sudo=False)
    namespace = cluster.get("Namespace", "user-alice")
    assert namespace is not None and namespace["metadata"]["labels"]["toolkit.dev/sudo"] == "false"
    with pytest.raises(BadInputError, match="--sudo"):
        create(alice, request("alice", "again", sudo=True), lambda _: None)
    # Its shell made with sudo can still be paused, by its owner and by the reaper, and extended.
    assert shells.pause(alice, "alice", "train").status == "paused"
    shells.extend(alice, "alice", "train", 1)


def test_a_site_that_allows_sudo_gives_it_to_every_user(tmp_path: Path) -> None:
    server = configured(shells_platform_allow_sudo=True)
    try:
        bob = user(server, tmp_path, "bob")
        create(bob, request("bob", sudo=True), lambda _: None)
        assert container(server, "bob", "train")["securityContext"]["allowPrivilegeEscalation"] is True
    finally:
        server.stop()
