"""The STAND-IN API server (tests/standins/kube_apiserver.py) behaves as a real one where the toolkit
relies on it. Checked with the official client's typed APIs, which validate responses strictly."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube


@pytest.fixture
def api(fake_cluster: FakeApiServer, admin_kubeconfig: Path) -> Any:
    return config.new_client_from_config(str(admin_kubeconfig))


def statefulset(name: str, gpus: int = 1, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "shell:1",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ]
                },
            },
        },
    }


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def pod_with(server: FakeApiServer, name: str, status_field: str) -> Any:
    """The pod in `default` once its status has `status_field`."""

    def found() -> Any:
        pod = server.get("Pod", name, "default")
        return pod if pod and pod.get("status", {}).get(status_field) else None

    return wait_for(found)


def test_version_passes_the_strict_client_models(api: Any) -> None:
    info = client.VersionApi(api).get_code()
    assert info.major == "1" and info.git_version.startswith("v1.33")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "rbac.authorization.k8s.io", "storage.k8s.io", "node.k8s.io"} <= groups


def test_errors_are_real_status_bodies(api: Any) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("nope", "default")
    assert missing.value.status == 404
    assert (
        '"reason": "NotFound"' in missing.value.body and 'secrets \\"nope\\" not found' in missing.value.body
    )
    core.create_namespaced_config_map("default", {"metadata": {"name": "one"}})
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map("default", {"metadata": {"name": "one"}})
    assert exists.value.status == 409 and "AlreadyExists" in exists.value.body
    with pytest.raises(ApiException) as bad_name:
        core.create_namespaced_config_map("default", {"metadata": {"name": "Not_Valid"}})
    assert bad_name.value.status == 422 and "Invalid" in bad_name.value.body
    with pytest.raises(ApiException) as no_namespace:
        core.create_namespaced_config_map("ghost", {"metadata": {"name": "one"}})
    assert no_namespace.value.status == 404 and 'namespaces \\"ghost\\" not found' in no_namespace.value.body


def test_put_with_a_stale_resource_version_conflicts(api: Any) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stale = created.metadata.resource_version
    core.patch_namespaced_config_map("cm", "default", {"data": {"a": "2"}})
    body = {"metadata": {"name": "cm", "resourceVersion": stale}, "data": {"a": "3"}}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("cm", "default", body)
    assert conflict.value.status == 409 and "the object has been modified" in conflict.value.body


def test_the_four_patch_types(admin_kubeconfig: Path, fake_cluster: FakeApiServer) -> None:
    """Each patch type by its Content-Type, as any client sends it (the typed client's choice of
    type differs between its versions)."""
    admin = kube.connect(admin_kubeconfig)
    metadata = {"name": "cm", "namespace": "default", "labels": {"a": "1"}}
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"x": "1"}})
    path = "/api/v1/namespaces/default/configmaps"

    def patch(name: str, body: Any, content_type: str, **query: str) -> dict[str, Any]:
        return admin.request(
            "PATCH", f"{path}/{name}", body=body, content_type=content_type, query=query or None
        )

    patch("cm", [{"op": "add", "path": "/data/y", "value": "2"}], "application/json-patch+json")
    patch("cm", {"data": {"x": None}}, "application/merge-patch+json")
    patch("cm", {"metadata": {"labels": {"b": "2"}}}, "application/strategic-merge-patch+json")
    applied = patch(
        "cm",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"z": "3"}},
        "application/apply-patch+yaml",
        fieldManager="tests",
        force="true",
    )
    assert applied["data"] == {"y": "2", "z": "3"}
    assert applied["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert [m["manager"] for m in applied["metadata"]["managedFields"]] == ["tests"]
    created = patch(
        "fresh",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"k": "v"}},
        "application/apply-patch+yaml",
        fieldManager="tests",
    )
    assert created["metadata"]["uid"] and fake_cluster.get("ConfigMap", "fresh", "default") is not None


def test_label_and_field_selectors(api: Any) -> None:
    core = client.CoreV1Api(api)
    for name, tier in (("a", "gold"), ("b", "silver"), ("c", "gold")):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"tier": tier}}})
    gold = core.list_namespaced_config_map("default", label_selector="tier=gold")
    assert [i.metadata.name for i in gold.items] == ["a", "c"]
    not_gold = core.list_namespaced_config_map("default", label_selector="tier notin (gold)")
    assert [i.metadata.name for i in not_gold.items] == ["b"]
    by_name = core.list_namespaced_config_map("default", field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_name.items] == ["b"]
    page = core.list_namespaced_config_map("default", limit=2)
    rest = core.list_namespaced_config_map("default", limit=2, _continue=page.metadata._continue)
    assert len(page.items) == 2 and [i.metadata.name for i in rest.items] == ["c"]


def test_statefulset_controller_scale_and_cascade(api: Any, fake_cluster: FakeApiServer) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    apps.create_namespaced_stateful_set("team", statefulset("web", replicas=2))
    wait_for(lambda: apps.read_namespaced_stateful_set("web", "team").status.ready_replicas == 2)
    pods = fake_cluster.list("Pod", "team")
    assert [p["metadata"]["name"] for p in pods] == ["web-0", "web-1"]
    assert all(
        p["status"]["phase"] == "Running" and p["spec"]["nodeName"] in ("gpu-1", "gpu-2") for p in pods
    )
    apps.patch_namespaced_stateful_set_scale("web", "team", {"spec": {"replicas": 0}})
    wait_for(lambda: fake_cluster.list("Pod", "team") == [])
    assert apps.read_namespaced_stateful_set_scale("web", "team").spec.replicas == 0
    core.delete_namespace("team")
    wait_for(lambda: fake_cluster.get("Namespace", "team") is None)
    assert fake_cluster.list("StatefulSet", "team") == []


def test_scheduler_reports_insufficient_gpus(api: Any, fake_cluster: FakeApiServer) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_stateful_set("default", statefulset("huge", gpus=9))
    pod = pod_with(fake_cluster, "huge-0", "conditions")
    condition = pod["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert "2 Insufficient nvidia.com/gpu" in condition["message"]
    events = client.CoreV1Api(api).list_namespaced_event(
        "default", field_selector="involvedObject.name=huge-0"
    )
    assert [e.reason for e in events.items] == ["FailedScheduling"]


def test_image_pull_backoff_switch(api: Any, fake_cluster: FakeApiServer) -> None:
    fake_cluster.behaviour.image_pull_backoff = True
    client.AppsV1Api(api).create_namespaced_stateful_set("default", statefulset("pull"))
    pod = pod_with(fake_cluster, "pull-0", "containerStatuses")
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"


def test_watch_streams_changes_and_initial_events(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    seen: list[tuple[str, str]] = []

    def later() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
        core.delete_namespaced_config_map("after", "default")

    threading.Thread(target=later).start()
    for event in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "before"), ("ADDED", "after"), ("DELETED", "after")]


def test_rbac_limits_a_service_account_to_its_role(
    fake_cluster: FakeApiServer, tmp_path: Path, api: Any
) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_service_account("team", {"metadata": {"name": "bot"}})
    rbac.create_namespaced_role(
        "team",
        {
            "metadata": {"name": "read"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        "team",
        {
            "metadata": {"name": "read"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}],
        },
    )
    core.create_namespaced_secret(
        "team",
        {
            "metadata": {"name": "bot-token", "annotations": {"kubernetes.io/service-account.name": "bot"}},
            "type": "kubernetes.io/service-account-token",
        },
    )
    token = base64.b64decode(
        wait_for(lambda: (core.read_namespaced_secret("bot-token", "team").data or {}).get("token"))
    ).decode()
    bot = client.CoreV1Api(
        config.new_client_from_config(str(fake_cluster.kubeconfig(tmp_path / "bot", token)))
    )
    assert bot.list_namespaced_config_map("team").items == []
    with pytest.raises(ApiException) as denied:
        bot.list_namespaced_secret("team")
    assert denied.value.status == 403
    message = json.loads(denied.value.body)["message"]
    assert 'User "system:serviceaccount:team:bot" cannot list resource "secrets"' in message
    with pytest.raises(ApiException) as elsewhere:
        bot.list_namespaced_config_map("default")
    assert elsewhere.value.status == 403


def test_quota_admission_refuses_pods_over_the_quota(api: Any, fake_cluster: FakeApiServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_resource_quota(
        "team", {"metadata": {"name": "q"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}}
    )
    client.AppsV1Api(api).create_namespaced_stateful_set("team", statefulset("two", gpus=2))
    event = wait_for(lambda: [e for e in fake_cluster.list("Event", "team") if e["reason"] == "FailedCreate"])
    assert "exceeded quota: q, requested: requests.nvidia.com/gpu=2" in event[0]["message"]
    assert fake_cluster.list("Pod", "team") == []


def test_deletecollection_by_label_and_the_status_subresource(api: Any, fake_cluster: FakeApiServer) -> None:
    core = client.CoreV1Api(api)
    for name, tier in (("a", "tmp"), ("b", "tmp"), ("c", "keep")):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"tier": tier}}})
    core.delete_collection_namespaced_config_map("default", label_selector="tier=tmp")
    assert [c["metadata"]["name"] for c in fake_cluster.list("ConfigMap", "default")] == ["c"]
    core.create_namespaced_service(
        "default", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    )
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}}
    # A write to the main resource leaves the status alone; a write to /status changes only the status.
    core.patch_namespaced_service("web", "default", ingress)
    assert core.read_namespaced_service("web", "default").status.load_balancer.ingress is None
    core.patch_namespaced_service_status("web", "default", {**ingress, "spec": {"type": "NodePort"}})
    after = core.read_namespaced_service("web", "default")
    assert (after.spec.type, after.status.load_balancer.ingress[0].ip) == ("ClusterIP", "192.0.2.7")


def test_unschedulable_switch(api: Any, fake_cluster: FakeApiServer) -> None:
    fake_cluster.behaviour.unschedulable = True
    client.AppsV1Api(api).create_namespaced_stateful_set("default", statefulset("stuck"))
    pod = pod_with(fake_cluster, "stuck-0", "conditions")
    assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in pod["status"]["conditions"][0]["message"]


@pytest.mark.parametrize(
    ("terms", "allowed"),
    [
        ([{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100", "h200"]}]}], True),
        ([{"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["h100"]}]}], False),
        (
            [
                {
                    "matchExpressions": [
                        {"key": "gpu", "operator": "Exists"},
                        {"key": "zone", "operator": "Exists"},
                    ]
                }
            ],
            False,
        ),
        (
            [
                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]},
            ],
            True,
        ),
        ([{"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}], True),
        ([{}], False),
        ([{"matchExpressions": [{"key": "count", "operator": "Gt", "values": ["4"]}]}], False),
    ],
    ids=["in", "not-in", "anded", "ored", "does-not-exist", "empty-term", "gt-not-modelled"],
)
def test_the_stand_in_scheduler_reads_required_node_affinity_as_kubernetes_does(
    terms: list[dict[str, Any]], allowed: bool
) -> None:
    pod = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
                }
            }
        }
    }
    assert FakeApiServer._affinity_allows(pod, {"gpu": "h100", "count": "8"}) is allowed
    assert FakeApiServer._affinity_allows({"spec": {}}, {}) is True


def with_affinity(sts: dict[str, Any], affinity: dict[str, Any]) -> dict[str, Any]:
    sts["spec"]["template"]["spec"]["affinity"] = affinity
    return sts


def one_per_node(app: str) -> dict[str, Any]:
    """Required pod anti-affinity on the hostname against the pod's own group: one pod per node."""
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}
        ]
    }


def placement(server: FakeApiServer, namespace: str = "default") -> dict[str, str | None]:
    return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in server.list("Pod", namespace)}


def test_required_pod_anti_affinity_puts_each_pod_of_a_statefulset_on_its_own_node(
    fake_cluster: FakeApiServer,
) -> None:
    fake_cluster.put(
        with_affinity(statefulset("multi", replicas=2), {"podAntiAffinity": one_per_node("multi")})
    )
    wait_for(lambda: all(placement(fake_cluster).values()) and len(placement(fake_cluster)) == 2)
    assert placement(fake_cluster) == {"multi-0": "gpu-1", "multi-1": "gpu-2"}


def test_required_pod_anti_affinity_leaves_the_second_pod_pending_on_a_single_node() -> None:
    with FakeApiServer() as server:
        server.add_gpu_node("gpu-1")
        server.put(
            with_affinity(statefulset("multi", replicas=2), {"podAntiAffinity": one_per_node("multi")})
        )
        pending = pod_with(server, "multi-1", "conditions")
        assert placement(server) == {"multi-0": "gpu-1", "multi-1": None}
        condition = pending["status"]["conditions"][0]
        assert (condition["type"], condition["status"], condition["reason"]) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        )
        assert (
            condition["message"] == "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
        )


def test_preferred_pod_affinity_puts_the_next_pod_in_the_first_pods_topology_domain() -> None:
    """gpu-b is listed before gpu-c, but gpu-c shares the first pod's zone, which the preferred term
    weighs; the required anti-affinity keeps the second pod off gpu-a."""
    zone = "topology.kubernetes.io/zone"
    with FakeApiServer() as server:
        for name, value in (("gpu-a", "z1"), ("gpu-b", "z2"), ("gpu-c", "z1")):
            server.add_gpu_node(name, labels={zone: value})
        affinity = {
            "podAntiAffinity": one_per_node("multi"),
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {
                                "matchExpressions": [{"key": "app", "operator": "In", "values": ["multi"]}]
                            },
                            "topologyKey": zone,
                        },
                    }
                ]
            },
        }
        server.put(with_affinity(statefulset("multi", replicas=2), affinity))
        wait_for(lambda: len(placement(server)) == 2 and all(placement(server).values()))
        assert placement(server) == {"multi-0": "gpu-a", "multi-1": "gpu-c"}


def test_required_pod_affinity_follows_the_first_pod_of_its_group_and_waits_for_a_missing_one() -> None:
    """The first pod of a group whose term matches itself goes anywhere; the next must share its
    zone. A pod whose term matches no pod, not even itself, stays Pending."""
    zone = "topology.kubernetes.io/zone"
    with FakeApiServer() as server:
        for name, value in (("gpu-a", "z1"), ("gpu-b", "z2"), ("gpu-c", "z1")):
            server.add_gpu_node(name, labels={zone: value})
        same_zone = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "multi"}}, "topologyKey": zone}
            ]
        }
        affinity = {"podAntiAffinity": one_per_node("multi"), "podAffinity": same_zone}
        server.put(with_affinity(statefulset("multi", replicas=2), affinity))
        wait_for(lambda: placement(server).get("multi-1"))
        assert placement(server)["multi-0"] == "gpu-a" and placement(server)["multi-1"] == "gpu-c"
        lonely = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "absent"}}, "topologyKey": zone}
            ]
        }
        server.put(with_affinity(statefulset("lonely"), {"podAffinity": lonely}))
        pending = pod_with(server, "lonely-0", "conditions")
        assert pending["status"]["conditions"][0]["message"] == (
            "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
        )


def test_an_existing_pods_required_anti_affinity_keeps_a_matching_pod_off_its_node(
    fake_cluster: FakeApiServer,
) -> None:
    """Upstream's symmetry: the incoming pod has no affinity of its own."""
    guard = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "guard", "namespace": "default", "labels": {"app": "guard"}},
        "spec": {
            "nodeName": "gpu-1",
            "containers": [{"name": "c", "image": "guard:1"}],
            "affinity": {"podAntiAffinity": one_per_node("shell")},
        },
    }
    fake_cluster.put(guard)
    fake_cluster.put(statefulset("shell"))
    wait_for(lambda: placement(fake_cluster).get("shell-0"))
    assert placement(fake_cluster)["shell-0"] == "gpu-2"


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (None, False),
        ({}, True),
        ({"matchLabels": {"app": "multi"}}, True),
        ({"matchLabels": {"app": "other"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "multi"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["multi"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
        (
            {
                "matchLabels": {"app": "multi"},
                "matchExpressions": [{"key": "app", "operator": "DoesNotExist"}],
            },
            False,
        ),
    ],
    ids=[
        "null-selects-nothing",
        "empty-selects-everything",
        "match-labels",
        "match-labels-differ",
        "in",
        "not-in",
        "not-in-without-the-key",
        "exists",
        "does-not-exist",
        "anded",
    ],
)
def test_the_stand_in_scheduler_reads_a_label_selector_as_kubernetes_does(
    selector: dict[str, Any] | None, matches: bool
) -> None:
    assert FakeApiServer._selector_matches(selector, {"app": "multi"}) is matches


def test_a_headless_service_keeps_cluster_ip_none_and_gets_no_node_ports(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "peers"},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "multi"},
                "ports": [{"name": "ssh", "port": 22}],
                "publishNotReadyAddresses": True,
            },
        },
    )
    spec = core.read_namespaced_service("peers", "default").spec
    assert (spec.cluster_ip, spec.cluster_i_ps, spec.type) == ("None", ["None"], "ClusterIP")
    assert spec.ports[0].node_port is None and spec.publish_not_ready_addresses is True
    core.patch_namespaced_service("peers", "default", {"metadata": {"labels": {"a": "1"}}})
    assert core.read_namespaced_service("peers", "default").spec.cluster_ip == "None"
    with pytest.raises(ApiException) as node_port:
        core.create_namespaced_service(
            "default",
            {
                "metadata": {"name": "open"},
                "spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 22}]},
            },
        )
    assert node_port.value.status == 422
    assert "may not be set to 'None' for NodePort services" in json.loads(node_port.value.body)["message"]


def test_pods_that_start_in_the_same_round_get_addresses_of_their_own(fake_cluster: FakeApiServer) -> None:
    fake_cluster.put(statefulset("pair", replicas=2))

    def addresses() -> list[str] | None:
        found = [p["status"].get("podIP") for p in fake_cluster.list("Pod", "default")]
        return found if len(found) == 2 and all(found) else None

    started = wait_for(addresses)
    assert len(set(started)) == 2 and all(a.startswith("10.42.") for a in started)
