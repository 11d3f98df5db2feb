"""`toolkit shell` and `toolkit user` logic against the STAND-IN API server: the whole flow, each
failure cause, and that bad input and failures leave nothing behind."""

from __future__ import annotations

import base64
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import capacity, kube, shells, users
from toolkit.errors import BadInputError, Interrupted, ToolkitError, UnreachableError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest
from toolkit.shell_wait import ShellFailed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


@pytest.fixture
def admin(fake_cluster: FakeApiServer, admin_kubeconfig: Path) -> kube.Kube:
    return kube.connect(admin_kubeconfig)


@pytest.fixture
def alice(admin: kube.Kube, tmp_path: Path) -> kube.Kube:
    """Alice's own connection, from the kubeconfig `user add` wrote: no cluster-admin."""
    users.add(admin, "alice", 4, tmp_path / "alice.kubeconfig", None, None)
    return kube.connect(tmp_path / "alice.kubeconfig")


def request(name: str = "train", **changes: Any) -> CreateRequest:
    return CreateRequest(name=name, user=changes.pop("user", "alice"), authorized_keys=(KEY,), **changes)


def snapshot(server: FakeApiServer) -> set[tuple[str, str, str]]:
    return {key for key in server.objects if key[0] != "events"}


def phases() -> tuple[list[str], Any]:
    seen: list[str] = []
    return seen, seen.append


def test_user_add_writes_a_private_kubeconfig_for_their_namespace(admin: kube.Kube, tmp_path: Path) -> None:
    target = tmp_path / "bob.kubeconfig"
    users.add(admin, "bob", 2, target, None, None)
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    bob = kube.connect(target)
    assert bob.namespace == "user-bob"
    quota = bob.get("ResourceQuota", "shells", "user-bob")
    assert quota is not None
    # Two H100s' share of an 8-GPU, 192-CPU, 2 TiB node.
    assert quota["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "2",
        "requests.cpu": "48",
        "requests.memory": "524288Mi",
        "requests.storage": "1Ti",
        "persistentvolumeclaims": "8",
        "services.nodeports": "16",
        "services.loadbalancers": "0",
        # Eight shells, each a pod, a StatefulSet, a Secret, an Ingress and two Services; the token.
        "pods": "8",
        "count/statefulsets.apps": "8",
        "services": "16",
        "count/ingresses.networking.k8s.io": "8",
        "count/secrets": "9",
        "limits.ephemeral-storage": "819200Mi",  # 100Gi of scratch disk each
    }
    with pytest.raises(kube.ApiError) as denied:
        bob.list("Secret", "kube-system")
    assert denied.value.code == 403
    assert [u.name for u in users.list_users(admin)] == ["bob"]


def test_the_whole_flow_as_the_user(alice: kube.Kube, admin: kube.Kube, fake_cluster: FakeApiServer) -> None:
    seen, report = phases()
    created = create(alice, request(gpus=2, web=True), report)
    assert seen[0] == "scheduling" and seen[-1] == "ready"
    assert created.node in ("gpu-1", "gpu-2") and created.ssh_port >= 30000
    sts, secret = (
        fake_cluster.get("StatefulSet", "train", "user-alice"),
        alice.get("Secret", "train-ssh", "user-alice"),
    )
    assert sts is not None and secret is not None
    assert created.host_key == sts["metadata"]["annotations"]["toolkit.dev/ssh-host-key"]
    credential = base64.b64decode(secret["data"]["ttyd-credential"]).decode()
    assert created.web_credential == credential and credential.startswith("alice:")
    [listed] = shells.list_shells(alice, "alice")
    assert (listed.name, listed.gpus, listed.status) == ("train", 2, "ready")
    assert listed.endpoint == f"{created.ssh_host}:{created.ssh_port}"
    assert sum(n.gpus_used for n in capacity.availability(admin).nodes) == 2

    assert shells.pause(alice, "alice", "train").status == "paused"
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is not None
    assert shells.resume(alice, "alice", "train", report, 10).status == "ready"

    before = listed.expires_at
    assert before is not None
    extended = shells.extend(alice, "alice", "train", 10)
    assert extended.expires_at == before + timedelta(hours=10)

    assert shells.add_keys(alice, "alice", "train", [KEY]) == 0
    reaped = shells.reap(alice, "alice", now=datetime.now(UTC) + timedelta(days=2))
    assert [(r.shell.name, r.action) for r in reaped] == [("train", "paused")]
    assert shells.get_shell(alice, "alice", "train").status == "paused"

    deleted = shells.delete(alice, "alice", "train", purge=False)
    # A web terminal's Ingress and Service go with it.
    assert deleted == [
        "StatefulSet/train",
        "Ingress/train",
        "Service/train-web",
        "Service/train",
        "Secret/train-ssh",
    ]
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is not None
    assert shells.list_shells(alice, "alice") == []


def test_a_shell_recreated_after_delete_gets_its_kept_home_back(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    home = fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice")
    shells.delete(alice, "alice", "train", purge=False)
    seen, report = phases()
    create(alice, request(), report)
    assert "reusing the home volume kept from an earlier shell" in seen
    again = fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice")
    assert home is not None and again is not None and again["metadata"]["uid"] == home["metadata"]["uid"]
    shells.delete(alice, "alice", "train", purge=True)
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is None


def test_keys_and_the_expiry_reach_the_shells_secret_and_the_pod_is_not_restarted(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    pod_uid = fake_cluster.get("Pod", "train-0", "user-alice")["metadata"]["uid"]  # type: ignore[index]

    def secret_text(key: str) -> str:
        secret = alice.get("Secret", "train-ssh", "user-alice")
        assert secret is not None
        return base64.b64decode(secret["data"][key]).decode()

    other = KEY.replace("AAAAIHeQ", "AAAAIHeR").replace("alice@laptop", "bob@laptop")
    assert shells.add_keys(alice, "alice", "train", [other]) == 1
    assert shells.add_keys(alice, "alice", "train", [other]) == 0
    assert secret_text("authorized_keys").splitlines() == [KEY, other]
    assert shells.remove_keys(alice, "alice", "train", [KEY]) == 1
    assert secret_text("authorized_keys").splitlines() == [other]
    with pytest.raises(BadInputError, match="that would leave shell train with no key"):
        shells.remove_keys(alice, "alice", "train", [other])
    extended = shells.extend(alice, "alice", "train", Fraction(3, 2))
    assert extended.expires_at is not None
    assert secret_text("expires-at") == extended.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The running shell reads its Secret: its pod is the one it was.
    assert fake_cluster.get("Pod", "train-0", "user-alice")["metadata"]["uid"] == pod_uid  # type: ignore[index]


def test_reap_deletes_when_the_cluster_says_so_and_keeps_the_home(
    admin: kube.Kube, alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    fake_cluster.seed("ConfigMap", {"metadata": {"name": "shells", "namespace": "toolkit-system",
                                                 "labels": {"toolkit.dev/shells-config": "true"}},
                                    "data": {"reapPolicy": "delete"}})  # fmt: skip
    create(alice, request(hours=1), lambda _: None)
    assert shells.reap(admin, None, now=datetime.now(UTC)) == []
    reaped = shells.reap(admin, None, now=datetime.now(UTC) + timedelta(hours=2))
    assert [(r.shell.user, r.shell.name, r.action) for r in reaped] == [("alice", "train", "deleted")]
    assert fake_cluster.get("StatefulSet", "train", "user-alice") is None
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is not None


def test_scheduler_shortage_fails_in_one_line_and_removes_everything(
    admin: kube.Kube, alice: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    users.add(admin, "bob", 16, tmp_path / "bob.kubeconfig", None, None)
    bob = kube.connect(tmp_path / "bob.kubeconfig")
    create(bob, request("one", user="bob", gpus=8), lambda _: None)
    create(bob, request("two", user="bob", gpus=7), lambda _: None)
    before = snapshot(fake_cluster)
    with pytest.raises(ShellFailed) as failure:
        create(alice, request(gpus=2), lambda _: None)
    assert str(failure.value).startswith("shell train cannot start: Insufficient nvidia.com/gpu (0/2 nodes")
    assert "queueing is off on this cluster" in str(failure.value)
    assert "\n" not in str(failure.value)
    assert snapshot(fake_cluster) == before


def test_image_pull_backoff_is_reported_and_kept_on_request(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    fake_cluster.behaviour.image_pull_backoff = True
    with pytest.raises(
        ShellFailed, match=r"ImagePullBackOff: Back-off pulling image \"registry.invalid/shell:1\""
    ):
        create(alice, request(image="registry.invalid/shell:1"), lambda _: None)
    assert fake_cluster.list("StatefulSet", "user-alice") == []
    with pytest.raises(ShellFailed, match="kept for inspection"):
        create(alice, request(image="registry.invalid/shell:1", keep_on_failure=True), lambda _: None)
    assert [s["metadata"]["name"] for s in fake_cluster.list("StatefulSet", "user-alice")] == ["train"]


def test_a_home_volume_stuck_pending_times_out_with_its_cause(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    fake_cluster.behaviour.provisioner_stuck = True
    before = snapshot(fake_cluster)
    with pytest.raises(ShellFailed) as failure:
        create(alice, request(timeout=2), lambda _: None)
    message = str(failure.value)
    assert "timed out after 2s: PVC train-home is stuck Pending" in message
    assert "external provisioner 'csi.weka.io'" in message
    assert snapshot(fake_cluster) == before


def test_a_slow_start_shows_each_phase(alice: kube.Kube, fake_cluster: FakeApiServer) -> None:
    fake_cluster.behaviour.pod_start_delay = 0.5
    seen, report = phases()
    create(alice, request(), report)
    assert seen == ["scheduling", "pulling image", "ready"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Train"}, "shell name 'Train' is invalid"),
        ({"name": "x" * 41}, "is invalid: use 1-40"),
        ({"name": "9lives"}, "shell name '9lives' is invalid"),
        ({"gpus": 0}, "--gpus 0: this cluster's shells need a GPU"),
        ({"gpus": 9}, "--gpus 9 is more than any node has (the largest, gpu-1, has 8)"),
        ({"gpus": 5}, "--gpus 5 is more than alice's quota allows: 4 GPUs, 0 in use"),
        (
            {"hours": 0},
            "--hours/--for must be between 5 minutes and 168 hours (this cluster's maximum), not 0m",
        ),
        (
            {"hours": 169},
            "--hours/--for must be between 5 minutes and 168 hours (this cluster's maximum), not 169h",
        ),
        ({"storage_class": "fast-nvme"}, "StorageClass 'fast-nvme' does not exist"),
        (
            {"node_selector": {"nvidia.com/gpu.product": "A100"}},
            "no ready node matches nvidia.com/gpu.product=A100",
        ),
        ({"cpu": "lots"}, "--cpu 'lots' is not a Kubernetes quantity"),
        ({"user": "carol"}, "user 'carol' is not set up on this cluster"),
    ],
)
def test_bad_input_is_refused_and_creates_nothing(
    admin: kube.Kube, alice: kube.Kube, fake_cluster: FakeApiServer, changes: dict[str, Any], message: str
) -> None:
    connection = admin if "user" in changes else alice  # only an operator may ask for another user
    before = snapshot(fake_cluster)
    with pytest.raises(BadInputError) as refused:
        create(connection, request(**changes), lambda _: None)
    assert message in str(refused.value)
    assert snapshot(fake_cluster) == before


def test_duplicate_name_and_missing_runtime_class_are_refused(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    with pytest.raises(BadInputError, match="alice already has a shell named 'train'"):
        create(alice, request(), lambda _: None)
    del fake_cluster.objects[("runtimeclasses.node.k8s.io", "", "nvidia")]
    with pytest.raises(BadInputError, match="RuntimeClass 'nvidia' does not exist"):
        create(alice, request("other"), lambda _: None)


def test_user_remove_keeps_homes_unless_purged(
    admin: kube.Kube, alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    removed = users.remove(admin, "alice", purge=False)
    assert "StatefulSet/train" in removed and "ServiceAccount/shell-user" in removed
    assert fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice") is not None
    assert [(u.name, u.active) for u in users.list_users(admin)] == [("alice", False)]
    users.remove(admin, "alice", purge=True)
    deadline = time.monotonic() + 5
    while fake_cluster.get("Namespace", "user-alice") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_cluster.get("Namespace", "user-alice") is None
    assert fake_cluster.list("PersistentVolumeClaim", "user-alice") == []


def test_unreachable_api_server_is_one_line(tmp_path: Path, fake_cluster: FakeApiServer) -> None:
    config = fake_cluster.kubeconfig(tmp_path / "gone")
    fake_cluster.stop()
    with pytest.raises(
        UnreachableError, match=r"^cannot reach the Kubernetes API at https://127.0.0.1:\d+: "
    ):
        shells.list_shells(kube.connect(config), "alice")


def test_missing_kubeconfig_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no kubeconfig at"):
        kube.connect(tmp_path / "nothing")


def test_user_recorded_with_github_gets_its_keys_in_shells(
    admin: kube.Kube, fake_cluster: FakeApiServer, github_server: Any, tmp_path: Path
) -> None:
    github_server.published["alice-gh"] = KEY + "\n"
    github_server.published["empty-gh"] = ""
    with pytest.raises(BadInputError, match="GitHub user 'empty-gh' has no SSH keys"):
        users.add(admin, "carol", 1, tmp_path / "carol", None, None, "empty-gh", github_server.url)
    assert fake_cluster.get("Namespace", "user-carol") is None
    users.add(admin, "dave", 1, tmp_path / "dave", None, None, "alice-gh", github_server.url)
    dave = kube.connect(tmp_path / "dave")
    assert users.recorded_github(dave, "dave") == "alice-gh"
    assert [(u.name, u.github) for u in users.list_users(admin)] == [("dave", "alice-gh")]


def test_load_balancer_shells_wait_for_the_address_and_use_port_22(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    users.add(admin, "alice", 4, tmp_path / "alice.kubeconfig", None, None, load_balancers=1)
    alice = kube.connect(tmp_path / "alice.kubeconfig")
    created = create(alice, request(expose="LoadBalancer", web=True), lambda _: None)
    node_address = fake_cluster.get("Node", "gpu-1")["status"]["addresses"][0]["address"]  # type: ignore[index]
    assert (created.ssh_host, created.ssh_port) == (node_address, 22)
    assert created.web_url == "https://train--alice.shells.example.org/"  # through the ingress
    assert shells.get_shell(alice, "alice", "train").endpoint == f"{node_address}:22"


def test_create_makes_at_most_twelve_requests_and_list_one(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    fake_cluster.reset_request_log()
    create(alice, request(), lambda _: None)
    methods = [method for method, _ in fake_cluster.requests]
    assert len(methods) <= 12, fake_cluster.requests
    watches = [path for _, path in fake_cluster.requests if "watch=true" in path]
    assert len(watches) == 1  # one watch until Ready, never a poll loop
    for index in range(3):
        create(alice, request(f"extra{index}", gpus=1), lambda _: None)
    fake_cluster.reset_request_log()
    assert len(shells.list_shells(alice, "alice")) == 4
    assert len(fake_cluster.requests) == 1


def test_a_pod_the_api_refuses_fails_fast_with_the_reason(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    # Another quota in the user's namespace, which the toolkit does not read: admission refuses the pod.
    fake_cluster.seed("ResourceQuota", {"metadata": {"name": "site-policy", "namespace": "user-alice"},
                                        "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}})  # fmt: skip
    before = snapshot(fake_cluster)
    started = time.monotonic()
    with pytest.raises(ShellFailed) as failure:
        create(alice, request(), lambda _: None)
    assert time.monotonic() - started < 20
    assert "exceeded quota: site-policy" in str(failure.value)
    assert snapshot(fake_cluster) == before


def test_user_add_that_fails_midway_leaves_no_user(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_token(*_: Any, **__: Any) -> dict[str, str]:
        raise ToolkitError("the API server did not issue a token for user-erin/shell-user in 30s")

    monkeypatch.setattr(users, "_wait_for_token", no_token)
    with pytest.raises(ToolkitError, match="did not issue a token"):
        users.add(admin, "erin", 1, tmp_path / "erin", None, None)
    deadline = time.monotonic() + 5
    while fake_cluster.get("Namespace", "user-erin") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_cluster.get("Namespace", "user-erin") is None
    assert fake_cluster.get("ClusterRoleBinding", "toolkit-shell-user-erin") is None
    assert not (tmp_path / "erin").exists()


def interrupt_main_after(*delays: float) -> list[threading.Timer]:
    """Real SIGINTs to this process's main thread, as Ctrl-C sends, after each delay."""
    main = threading.main_thread().ident
    assert main is not None
    timers = [threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT)) for delay in delays]
    for timer in timers:
        timer.start()
    return timers


def settled(server: FakeApiServer, expected: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """The objects once background deletion (a StatefulSet's pod) has caught up, or after 5 s."""
    deadline = time.monotonic() + 5
    while snapshot(server) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return snapshot(server)


# With 40 ms per request and a slow pod, a create takes well over a second. Its reads end near
# 0.28 s and its five writes follow, one every 40 ms: these moments fall in the reads, inside
# and between each write (the home volume's creation among them) and in the wait.
INTERRUPT_AT = [0.02, 0.15, *(round(0.26 + 0.015 * step, 3) for step in range(18)), 0.7, 1.0]


@pytest.mark.parametrize("delay", INTERRUPT_AT)
def test_ctrl_c_at_any_moment_of_a_create_leaves_nothing_behind(
    alice: kube.Kube, fake_cluster: FakeApiServer, delay: float
) -> None:
    before = snapshot(fake_cluster)
    fake_cluster.behaviour.latency = 0.04
    fake_cluster.behaviour.pod_start_delay = 3
    [timer] = interrupt_main_after(delay)
    with pytest.raises((Interrupted, KeyboardInterrupt)) as stopped:
        create(alice, request(), lambda _: None)
    timer.join()
    fake_cluster.behaviour.latency = 0
    assert settled(fake_cluster, before) == before
    if isinstance(stopped.value, Interrupted):
        assert str(stopped.value).startswith("interrupted; removed ") and stopped.value.exit_code == 130


def test_a_second_ctrl_c_does_not_stop_the_cleanup(alice: kube.Kube, fake_cluster: FakeApiServer) -> None:
    before = snapshot(fake_cluster)
    fake_cluster.behaviour.latency = 0.04
    fake_cluster.behaviour.pod_start_delay = 3
    timers = interrupt_main_after(0.6, 0.65, 0.7)
    with pytest.raises(Interrupted, match="interrupted; removed StatefulSet/train, Service/train"):
        create(alice, request(), lambda _: None)
    for timer in timers:
        timer.join()
    fake_cluster.behaviour.latency = 0
    assert settled(fake_cluster, before) == before


def test_ctrl_c_keeps_a_home_volume_kept_from_an_earlier_shell(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    create(alice, request(), lambda _: None)
    shells.delete(alice, "alice", "train", purge=False)
    home = fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice")
    assert home is not None
    before = settled(fake_cluster, snapshot(fake_cluster))
    fake_cluster.behaviour.latency = 0.04
    fake_cluster.behaviour.pod_start_delay = 3
    [timer] = interrupt_main_after(0.6)
    with pytest.raises(Interrupted) as stopped:
        create(alice, request(), lambda _: None)
    timer.join()
    fake_cluster.behaviour.latency = 0
    assert "PersistentVolumeClaim" not in str(stopped.value)
    assert settled(fake_cluster, before) == before
    kept = fake_cluster.get("PersistentVolumeClaim", "train-home", "user-alice")
    assert kept is not None and kept["metadata"]["uid"] == home["metadata"]["uid"]


def test_reap_trusts_no_label_or_annotation_a_user_can_write(
    admin: kube.Kube, alice: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    users.add(admin, "bob", 2, tmp_path / "bob.kubeconfig", None, None)
    bob = kube.connect(tmp_path / "bob.kubeconfig")
    create(bob, request(user="bob"), lambda _: None)
    create(alice, request("decoy"), lambda _: None)
    create(alice, request("garbled"), lambda _: None)
    # Alice relabels her shell as bob's and marks it long expired; she garbles another's fields.
    alice.merge_patch(
        "StatefulSet",
        "decoy",
        "user-alice",
        {
            "metadata": {
                "labels": {"toolkit.dev/user": "bob"},
                "annotations": {"toolkit.dev/expires-at": "2000-01-01T00:00:00Z"},
            }
        },
    )
    alice.merge_patch("StatefulSet", "garbled", "user-alice", {"metadata": {
        "annotations": {"toolkit.dev/expires-at": "soon", "toolkit.dev/gpus": "lots"}}})  # fmt: skip
    listed = {(s.user, s.name): s for s in shells.list_shells(admin, None)}
    assert set(listed) == {("alice", "decoy"), ("alice", "garbled"), ("bob", "train")}
    assert listed[("alice", "garbled")].gpus == 0
    reaped = shells.reap(admin, None)
    assert sorted((r.shell.namespace, r.shell.name) for r in reaped) == [
        ("user-alice", "decoy"),
        ("user-alice", "garbled"),
    ]
    assert shells.get_shell(admin, "bob", "train").status == "ready"


def test_a_create_that_meets_another_shells_secret_takes_nothing_over(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    # What a second create racing the first (or a failed create's leftovers) finds: the name's Secret.
    fake_cluster.seed("Secret", {"metadata": {"name": "train-ssh", "namespace": "user-alice"},
                                 "stringData": {"authorized_keys": "theirs\n"}})  # fmt: skip
    before = snapshot(fake_cluster)
    with pytest.raises(
        BadInputError, match="alice already has a shell named 'train', or what is left of one"
    ):
        create(alice, request(), lambda _: None)
    assert snapshot(fake_cluster) == before
    secret = alice.get("Secret", "train-ssh", "user-alice")
    assert secret is not None and "toolkit.dev/created-by" not in (
        secret["metadata"].get("annotations") or {}
    )


def statefulset_annotated(annotations: dict[str, str]) -> dict[str, Any]:
    metadata = {"name": "train", "namespace": "user-alice", "creationTimestamp": "2026-12-01T00:00:00Z"}
    return {"metadata": {**metadata, "annotations": annotations}, "spec": {"replicas": 1}}


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("10.0.0.1:30022", "10.0.0.1:30022"),
        ("shells.example.org:22", "shells.example.org:22"),
        ("[fd00::1]:30022", "[fd00::1]:30022"),
        ("10.0.0.1:030022", ""),
        ("10.0.0.1:0", ""),
        ("10.0.0.1:65536", ""),
        ("10.0.0.1", ""),
        ("-oProxyCommand=x:22", ""),
        ("exa mple.org:22", ""),
        ("[shells.example.org]:22", ""),
        ("[fe80::1%eth0]:22", ""),
        ('[fe80::1%a\nMatch exec "x"]:22', ""),
        ("10.0.0.1:22\nMatch exec x", ""),
        ("10.0.0.1:\uff12\uff12", ""),
    ],
)
def test_an_endpoint_is_read_only_as_a_host_and_a_port(written: str, read: str) -> None:
    shell = shells.Shell.from_statefulset(statefulset_annotated({"toolkit.dev/ssh-endpoint": written}))
    assert shell is not None and shell.endpoint == read
    assert bool(shell.problems) == (read == "")


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (KEY, " ".join(KEY.split()[:2])),
        (KEY.split()[0], ""),
        (f"{KEY}\n{KEY}", ""),
        (f" {KEY}", ""),
        ("ssh-ed25519 AAAAnotbase64!!", ""),
        ("ssh-rsa " + KEY.split()[1], ""),
    ],
)
def test_a_host_key_is_read_only_as_exactly_one_public_key(written: str, read: str) -> None:
    shell = shells.Shell.from_statefulset(statefulset_annotated({"toolkit.dev/ssh-host-key": written}))
    assert shell is not None and shell.host_key == read
    assert bool(shell.problems) == (read == "")


@pytest.mark.parametrize(
    ("written", "read"),
    [("2", 2), ("16", 16), ("0", 1), ("-2", 1), ("100", 1), ("2.0", 1), ("\uff12", 1), (" 2", 1)],
)
def test_a_node_count_is_read_only_as_a_number_from_1_to_99(written: str, read: int) -> None:
    shell = shells.Shell.from_statefulset(statefulset_annotated({"toolkit.dev/nodes": written}))
    assert shell is not None and shell.nodes == read
    assert bool(shell.problems) == (read == 1)
    # Its pods are as many as its StatefulSet runs (admission bounds those), or would run resumed.
    assert shell.pods == ["train-0"]
    paused = statefulset_annotated({"toolkit.dev/nodes": written})
    paused["spec"]["replicas"] = 0
    assert shells.Shell.from_statefulset(paused).pods == [f"train-{ordinal}" for ordinal in range(read)]


def test_no_expiry_is_later_than_creation_plus_the_lifetime() -> None:
    far = statefulset_annotated({"toolkit.dev/expires-at": "2099-01-01T00:00:00Z"})
    capped = shells.Shell.from_statefulset(far, max_lifetime_hours=48)
    assert capped is not None and capped.expires_at == datetime(2026, 12, 3, tzinfo=UTC)
    assert capped.problems == ("its expiry is past the 48h lifetime: it counts as 2026-12-03T00:00:00Z",)
    unannotated = shells.Shell.from_statefulset(statefulset_annotated({}), max_lifetime_hours=48)
    assert unannotated is not None and unannotated.expires_at == datetime(2026, 12, 3, tzinfo=UTC)
    assert unannotated.problems == ()


def test_extend_stops_at_the_end_of_the_shells_lifetime(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    fake_cluster.seed("ConfigMap", {
        "metadata": {"name": "shells", "namespace": "toolkit-system",
                     "labels": {"toolkit.dev/shells-config": "true"}},
        "data": {"defaultHours": "4", "maxHours": "12", "maxLifetimeHours": "16"},
    })  # fmt: skip
    create(alice, request(), lambda _: None)
    born = shells.get_shell(alice, "alice", "train").created
    extended = shells.extend(alice, "alice", "train", 5, now=born + timedelta(hours=10))  # to 15h: within 16
    with pytest.raises(BadInputError, match="past the end of the shell's 16-hour lifetime"):
        shells.extend(alice, "alice", "train", 5, now=born + timedelta(hours=12))
    assert shells.get_shell(alice, "alice", "train").expires_at == extended.expires_at


def test_a_load_balancer_beyond_the_users_quota_is_refused_and_nothing_is_left(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    before = snapshot(fake_cluster)
    with pytest.raises(ToolkitError, match=r"exceeded quota: shells, requested: .*services.loadbalancers=1"):
        create(alice, request(expose="LoadBalancer"), lambda _: None)
    assert snapshot(fake_cluster) == before


def test_a_log_loses_the_escape_sequences_a_terminal_would_act_on() -> None:
    written = "ok\tline\n\x1b]52;c;cHduZWQ=\x07\x1b[2Jdone\r\n\x9b31m"
    assert shells.printable(written) == "ok\tline\n]52;c;cHduZWQ=[2Jdone\n31m"


@pytest.mark.parametrize(
    ("existing", "new", "reason"),
    [
        ("ann", "ann-lee", "user name 'ann-lee' and the user 'ann' differ only past a '-'"),
        ("ann-lee", "ann", "user name 'ann' and the user 'ann-lee' differ only past a '-'"),
        (None, "ann--lee", "user name 'ann--lee' has '--'"),
    ],
)
def test_a_new_user_whose_web_routes_could_be_taken_for_anothers_is_refused(
    admin: kube.Kube, fake_cluster: FakeApiServer, tmp_path: Path, existing: str | None, new: str, reason: str
) -> None:
    if existing:
        users.add(admin, existing, 1, tmp_path / "existing.kubeconfig", None, None)
    before = snapshot(fake_cluster)
    with pytest.raises(BadInputError, match=re.escape(reason)):
        users.add(admin, new, 1, tmp_path / "new.kubeconfig", None, None)
    assert snapshot(fake_cluster) == before and not (tmp_path / "new.kubeconfig").exists()
    users.add(admin, "annabel", 1, tmp_path / "annabel.kubeconfig", None, None)  # no '-' between: fine


def test_keys_are_matched_past_their_options_and_comments_are_no_keys(alice: kube.Kube) -> None:
    create(alice, request(), lambda _: None)
    other = KEY.replace("AAAAIHeQ", "AAAAIHeR").replace("alice@laptop", "bob@laptop")
    # The Secret is the user's to write: a line with options, and a commented-out key.
    lines = [f"restrict,pty {KEY}", f"# {other}"]
    text = base64.b64encode("".join(f"{line}\n" for line in lines).encode()).decode()
    alice.merge_patch("Secret", "train-ssh", "user-alice", {"data": {"authorized_keys": text}})
    with pytest.raises(BadInputError, match="that would leave shell train with no key"):
        shells.remove_keys(alice, "alice", "train", [KEY])  # the comment is no key
    assert shells.add_keys(alice, "alice", "train", [other]) == 1  # a commented-out key is not known
    assert shells.remove_keys(alice, "alice", "train", [KEY]) == 1  # found past its options
    secret = alice.get("Secret", "train-ssh", "user-alice")
    assert secret is not None
    assert base64.b64decode(secret["data"]["authorized_keys"]).decode().splitlines() == [f"# {other}", other]


def test_a_shell_made_before_its_image_followed_its_secret_restarts_to_load_keys(alice: kube.Kube) -> None:
    create(alice, request(), lambda _: None)
    alice.merge_patch(
        "StatefulSet", "train", "user-alice", {"metadata": {"annotations": {"toolkit.dev/agent": None}}}
    )
    other = KEY.replace("AAAAIHeQ", "AAAAIHeR").replace("alice@laptop", "bob@laptop")
    assert shells.add_keys(alice, "alice", "train", [other]) == 1
    sts = alice.get("StatefulSet", "train", "user-alice")
    assert (
        sts is not None and "toolkit.dev/keys-revision" in sts["spec"]["template"]["metadata"]["annotations"]
    )


def test_a_failed_web_shell_takes_its_ingress_and_web_service_with_it(
    alice: kube.Kube, fake_cluster: FakeApiServer
) -> None:
    before = snapshot(fake_cluster)
    fake_cluster.behaviour.image_pull_backoff = True
    with pytest.raises(ShellFailed, match="ImagePullBackOff"):
        create(alice, request(web=True, image="registry.invalid/shell:1"), lambda _: None)
    assert fake_cluster.list("Ingress", "user-alice") == []
    assert snapshot(fake_cluster) == before
