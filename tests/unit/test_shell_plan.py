"""Planning a shell needs no server: the request and the cluster's facts in, objects or every
reason for a refusal out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest

from toolkit.capacity import NodeCapacity
from toolkit.errors import BadInputError, ToolkitError
from toolkit.shell_plan import ClusterFacts, CreateRequest, Endpoint, check_request, plan_create
from toolkit.shell_settings import Platform

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
NODE = NodeCapacity(
    name="gpu-1", address="10.0.0.11", ready=True, schedulable=True,
    labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, gpus=8, cpu=Fraction(192),
    memory=Fraction(2 * 2**40),
)  # fmt: skip
FACTS = ClusterFacts(
    settings=Platform(web_domain="shells.example.org"), nodes=(NODE,),
    quota={"spec": {"hard": {"requests.nvidia.com/gpu": "4"}},
           "status": {"used": {"requests.nvidia.com/gpu": "1"}}},
    storage_class="shared-wekafs", storage_class_exists=True, runtime_class="nvidia",
    runtime_class_exists=True, shell_exists=False,
)  # fmt: skip


def request(**changes: Any) -> CreateRequest:
    fields: dict[str, Any] = {
        "name": "train",
        "user": "alice",
        "authorized_keys": ("ssh-ed25519 AAAA alice",),
    }
    return CreateRequest(**(fields | changes))


def test_a_plan_holds_every_object_in_apply_order_for_the_users_namespace() -> None:
    plan = plan_create(request(gpus=2, web=True), FACTS, NOW)
    kinds = [o["kind"] for o in plan.objects(Endpoint("10.0.0.11", 30022, 30681))]
    assert kinds == ["Secret", "PersistentVolumeClaim", "Service", "Service", "Ingress", "StatefulSet"]
    assert {o["metadata"]["namespace"] for o in plan.objects(Endpoint("", 22, None))} == {"user-alice"}
    assert plan.node == NODE and plan.spec.expires_at == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    assert (plan.spec.cpu, plan.spec.memory) == (Fraction(48), Fraction(512 * 2**30))


def test_every_reason_for_a_refusal_is_given_at_once() -> None:
    facts = replace(FACTS, storage_class_exists=False, shell_exists=True)
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=4, hours=500), facts, NOW)
    reasons = str(refused.value).split("; ")
    assert reasons == [
        "--hours/--for must be between 5 minutes and 168 hours (this cluster's maximum), not 500h",
        "--gpus 4 is more than alice's quota allows: 4 GPUs, 1 in use by other shells",
        "StorageClass 'shared-wekafs' does not exist on this cluster",
        "alice already has a shell named 'train': pick another name or delete it",
    ]
    assert "\n" not in str(refused.value)


def test_a_user_not_set_up_and_a_selector_no_node_matches_are_refused() -> None:
    facts = replace(FACTS, quota=None)
    with pytest.raises(BadInputError) as refused:
        plan_create(request(node_selector={"nvidia.com/gpu.product": "A100"}), facts, NOW)
    assert str(refused.value) == (
        "no ready node matches nvidia.com/gpu.product=A100; "
        "user 'alice' is not set up on this cluster: an operator runs 'toolkit user add alice'"
    )


def test_a_gpu_type_as_people_say_it_selects_the_product_the_nodes_carry() -> None:
    plan = plan_create(request(gpu_type="h100"), FACTS, NOW)
    pod = plan.statefulset(Endpoint("", 22, None))["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert "affinity" not in pod


def test_a_gpu_type_naming_several_products_allows_each_through_node_affinity() -> None:
    nvl = replace(NODE, name="gpu-2", labels={"nvidia.com/gpu.product": "NVIDIA-H100-NVL"}, gpus=4)
    h200 = replace(NODE, name="gpu-3", labels={"nvidia.com/gpu.product": "NVIDIA-H200"})
    plan = plan_create(request(gpu_type="H100"), replace(FACTS, nodes=(NODE, nvl, h200)), NOW)
    pod = plan.statefulset(Endpoint("", 22, None))["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term == {
        "matchExpressions": [
            {
                "key": "nvidia.com/gpu.product",
                "operator": "In",
                "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-NVL"],
            }
        ]
    }
    assert plan.node == NODE  # sized from the largest node of those products, not the H200


def test_a_gpu_type_is_refused_when_no_node_has_it_or_no_node_says() -> None:
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpu_type="a100"), FACTS, NOW)
    assert str(refused.value) == "--gpu-type a100 is none of this cluster's GPUs: NVIDIA-H100-80GB-HBM3"
    unlabelled = replace(FACTS, nodes=(replace(NODE, labels={}),))
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpu_type="h100"), unlabelled, NOW)
    assert str(refused.value).startswith(
        "--gpu-type h100: no node says which GPUs it has (label nvidia.com/gpu.product"
    )


def test_more_gpus_than_the_products_nodes_have_names_the_gpu_type() -> None:
    small = replace(NODE, name="gpu-2", labels={"nvidia.com/gpu.product": "NVIDIA-H100-NVL"}, gpus=2)
    big = replace(NODE, name="gpu-3", labels={"nvidia.com/gpu.product": "NVIDIA-H200"})
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=3, gpu_type="h100-nvl"), replace(FACTS, nodes=(small, big)), NOW)
    assert str(refused.value) == (
        "--gpus 3 is more than any node matching --gpu-type h100-nvl (NVIDIA-H100-NVL) has "
        "(the largest, gpu-2, has 2)"
    )


def test_more_than_the_node_is_refused_once_not_again_as_cpu_and_memory() -> None:
    with pytest.raises(BadInputError) as refused:
        plan_create(
            request(gpus=9), replace(FACTS, quota={"spec": {"hard": {"requests.nvidia.com/gpu": "16"}}}), NOW
        )
    assert str(refused.value) == "--gpus 9 is more than any node has (the largest, gpu-1, has 8)"
    with pytest.raises(
        BadInputError, match=r"--cpu 1000 / --memory 1Ti is more than gpu-1 has \(192 CPUs, 2Ti\)"
    ):
        plan_create(request(cpu="1000", memory="1Ti"), FACTS, NOW)


def test_malformed_input_is_refused_before_the_cluster_is_asked() -> None:
    with pytest.raises(BadInputError) as refused:
        check_request(request(expose="ClusterIP", gpus=-1, shm="lots"))
    assert str(refused.value) == (
        "--expose must be nodeport or loadbalancer, not 'ClusterIP'; --gpus must be 0 or more, not -1; "
        "--shm 'lots' is not a Kubernetes quantity (examples: 24, 500m, 256Gi)"
    )
    with pytest.raises(BadInputError, match="shell name 'Train' is invalid"):
        check_request(request(name="Train"))


def test_a_cpu_only_shell_on_a_cluster_that_allows_it_has_no_runtime_class_or_gpu() -> None:
    facts = replace(
        FACTS, settings=Platform(require_gpu=False), runtime_class=None, runtime_class_exists=False
    )
    plan = plan_create(request(gpus=0), facts, NOW)
    pod = plan.statefulset(Endpoint("10.0.0.11", 30022, None))["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    with pytest.raises(BadInputError, match="--gpus 0: this cluster's shells need a GPU"):
        plan_create(request(gpus=0), FACTS, NOW)


def test_a_node_port_shell_is_reached_at_the_sites_host_and_recorded_on_its_statefulset() -> None:
    plan = plan_create(
        request(web=True),
        replace(FACTS, settings=Platform(ssh_host="shells.example.org", web_expose="nodeport")),
        NOW,
    )
    service = {"spec": {"ports": [{"name": "ssh", "port": 22, "nodePort": 31022},
                                  {"name": "web", "port": 7681, "nodePort": 31681}]}}  # fmt: skip
    endpoint = plan.endpoint(service)
    assert endpoint == Endpoint("shells.example.org", 31022, 31681)
    annotations = plan.statefulset(endpoint)["metadata"]["annotations"]
    assert annotations["toolkit.dev/ssh-endpoint"] == "shells.example.org:31022"
    assert annotations["toolkit.dev/web-endpoint"] == "shells.example.org:31681"


def test_a_load_balancer_without_an_address_yet_records_no_endpoint() -> None:
    plan = plan_create(request(expose="LoadBalancer"), FACTS, NOW)
    service: dict[str, Any] = {"spec": {"ports": [{"name": "ssh", "port": 22, "nodePort": 31022}]}}
    pending = plan.endpoint(service)
    assert pending == Endpoint("", 22, None) and pending.annotations() == {}
    assert plan.statefulset(pending)["metadata"]["annotations"]["toolkit.dev/ssh-endpoint"] == ""
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    assert plan.endpoint(service).annotations() == {"toolkit.dev/ssh-endpoint": "192.0.2.10:22"}
    with pytest.raises(ToolkitError, match="service train has no ssh port"):
        plan.endpoint({"spec": {"ports": []}})


def test_shm_beyond_the_shells_memory_and_absurd_sizes_are_refused_in_one_line() -> None:
    with pytest.raises(BadInputError, match=r"^--shm 900Ti is more than the shell's memory \(256Gi\)$"):
        plan_create(request(shm="900Ti"), FACTS, NOW)
    with pytest.raises(BadInputError, match=r"^--cpu 1000000000 / --memory 1024Ti is more than gpu-1 has"):
        plan_create(request(cpu="1000000000", memory="1Pi"), FACTS, NOW)


def test_a_shell_beyond_the_users_shell_count_is_refused_before_anything_is_sent() -> None:
    full = {
        "spec": {"hard": {"requests.nvidia.com/gpu": "4", "count/statefulsets.apps": "2"}},
        "status": {"used": {"requests.nvidia.com/gpu": "0", "count/statefulsets.apps": "2"}},
    }
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=1), replace(FACTS, quota=full), NOW)
    assert str(refused.value) == (
        "alice already has 2 shell(s), the most their quota allows: "
        "delete one first (toolkit shell list shows them)"
    )
    full["status"]["used"]["count/statefulsets.apps"] = "1"
    assert plan_create(request(gpus=1), replace(FACTS, quota=full), NOW).spec.gpus == 1


@pytest.mark.parametrize(
    ("asked", "default", "most", "expected"),
    [
        (None, 60, 240, 60),  # the cluster's default, written on the shell
        (90, 60, 240, 90),
        (0, 60, 0, 0),  # no limit: a shell may turn idle pause off
        (999, 60, 0, 999),
        (None, 0, 240, 0),  # the cluster pauses no idle shell
    ],
)
def test_a_shells_idle_minutes_are_written_on_it_and_its_secret(
    asked: int | None, default: int, most: int, expected: int
) -> None:
    facts = replace(FACTS, settings=Platform(idle_minutes=default, max_idle_minutes=most))
    plan = plan_create(request(idle_minutes=asked), facts, NOW)
    assert plan.spec.idle_minutes == expected
    statefulset = plan.statefulset(Endpoint("10.0.0.11", 30022, None))
    assert statefulset["metadata"]["annotations"]["toolkit.dev/idle-minutes"] == str(expected)
    assert plan.secret["stringData"]["idle-minutes"] == str(expected)
    env = {e["name"]: e["value"] for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHELL_IDLE_MINUTES"] == str(expected)


@pytest.mark.parametrize(
    ("asked", "default", "most", "reason"),
    [
        (0, 60, 240, "--idle-minutes 0: this cluster pauses every idle shell; ask for 5 to 240 minutes"),
        (241, 60, 240, "--idle-minutes must be 5 to 240 on this cluster, not 241"),
        (4, 60, 240, "--idle-minutes must be 5 to 240 on this cluster, not 4"),
        (4, 60, 0, "--idle-minutes must be at least 5 (or 0: never), not 4"),
        (30, 0, 240, "--idle-minutes: this cluster never pauses idle shells (idleMinutes is 0)"),
        (-1, 60, 240, "--idle-minutes must be 0 or more, not -1"),
    ],
)
def test_idle_minutes_outside_the_clusters_limits_are_bad_input(
    asked: int, default: int, most: int, reason: str
) -> None:
    facts = replace(FACTS, settings=Platform(idle_minutes=default, max_idle_minutes=most))
    with pytest.raises(BadInputError) as refused:
        plan_create(request(idle_minutes=asked), facts, NOW)
    assert str(refused.value) == reason


def test_the_sites_image_runs_as_is_and_any_other_from_the_toolbox_written_out_in_full() -> None:
    site_image = FACTS.settings.image
    assert plan_create(request(), FACTS, NOW).spec.toolbox_image == ""
    assert plan_create(request(image=site_image), FACTS, NOW).spec.toolbox_image == ""
    own = plan_create(request(image="pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"), FACTS, NOW).spec
    assert own.image == "docker.io/pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
    assert own.toolbox_image == site_image


def test_an_image_from_a_registry_the_site_does_not_allow_is_refused_naming_the_allowed() -> None:
    facts = replace(
        FACTS, settings=replace(FACTS.settings, allowed_images=("nvcr.io", "registry.example.org/ml"))
    )
    assert plan_create(request(image="nvcr.io/nvidia/pytorch:24.08-py3"), facts, NOW).spec.toolbox_image
    assert plan_create(request(image=FACTS.settings.image), facts, NOW).spec.toolbox_image == ""
    with pytest.raises(BadInputError) as refused:
        plan_create(request(image="python:3.12"), facts, NOW)
    assert str(refused.value) == (
        "--image python:3.12: this cluster runs users' images only from nvcr.io, registry.example.org/ml "
        "(shells_platform_allowed_images)"
    )


def test_an_image_that_is_no_reference_is_refused_before_the_cluster_is_asked() -> None:
    with pytest.raises(BadInputError, match="--image 'my image' is not an image reference"):
        check_request(request(image="my image"))


GROUP_FACTS = replace(
    FACTS,
    settings=Platform(
        web_domain="shells.example.org", access_mode="ReadWriteMany", max_nodes=4,
        topology_labels=("nvidia.com/gpu.clique", "example.org/leaf"), nccl_socket_ifname="eth0",
    ),
    nodes=(NODE, replace(NODE, name="gpu-2", address="10.0.0.12"), replace(NODE, name="gpu-3", gpus=4)),
    quota={"spec": {"hard": {"requests.nvidia.com/gpu": "16"}}, "status": {"used": {}}},
)  # fmt: skip


def test_a_multi_node_shell_is_one_statefulset_of_a_pod_per_node_named_by_a_headless_service() -> None:
    plan = plan_create(request(gpus=8, nodes=2, web=True), GROUP_FACTS, NOW)
    objects = plan.objects(Endpoint("10.0.0.11", 30022, None))
    assert [o["kind"] for o in objects] == [
        "Secret", "PersistentVolumeClaim", "Service", "Service", "Service", "Ingress", "StatefulSet",
    ]  # fmt: skip
    ssh, peers, web = (o for o in objects if o["kind"] == "Service")
    assert ssh["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "train-0"
    assert web["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "train-0"
    assert peers["metadata"]["name"] == "train-peers"
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"] == {"toolkit.dev/shell": "train", "toolkit.dev/user": "alice"}
    sts = objects[-1]
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["serviceName"] == "train-peers"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["metadata"]["annotations"]["toolkit.dev/nodes"] == "2"
    assert sts["metadata"]["annotations"]["toolkit.dev/gpus"] == "8"
    pod = sts["spec"]["template"]["spec"]
    [apart] = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert apart == {"labelSelector": {"matchLabels": peers["spec"]["selector"]},
                     "topologyKey": "kubernetes.io/hostname"}  # fmt: skip
    together = pod["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [(t["weight"], t["podAffinityTerm"]["topologyKey"]) for t in together] == [
        (100, "nvidia.com/gpu.clique"), (50, "example.org/leaf"),
    ]  # fmt: skip
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "NNODES", "NPROC_PER_NODE", "WORLD_SIZE")} == {
        "MASTER_ADDR": "train-0.train-peers", "MASTER_PORT": "29500", "NNODES": "2", "NPROC_PER_NODE": "8",
        "WORLD_SIZE": "16",
    }  # fmt: skip
    assert env["NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert (env["NCCL_SOCKET_IFNAME"], env["NCCL_IB_DISABLE"]) == ("eth0", "1")
    assert (env["SHELL_NODES"], env["SHELL_PEERS"]) == ("2", "train-peers")
    secret = plan.secret["stringData"]
    assert secret["peer_ed25519_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert secret["peer_ed25519_key.pub"].startswith("ssh-ed25519 ")
    assert secret["peer_ed25519_key.pub"] not in secret["authorized_keys"]


def test_a_one_node_shell_has_no_peers_service_key_or_group_settings() -> None:
    plan = plan_create(request(gpus=8), GROUP_FACTS, NOW)
    sts = plan.statefulset(Endpoint("", 22, None))
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == "train"
    assert "affinity" not in sts["spec"]["template"]["spec"] and plan.peers_service is None
    assert "peer_ed25519_key" not in plan.secret["stringData"]
    assert "statefulset.kubernetes.io/pod-name" not in plan.service["spec"]["selector"]
    assert not {"MASTER_ADDR", "NODE_RANK"} & {
        e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_a_multi_node_shell_is_sized_to_fit_the_smallest_share_of_its_nodes() -> None:
    small = replace(NODE, name="gpu-2", cpu=Fraction(96), memory=Fraction(2**40))
    plan = plan_create(request(gpus=8, nodes=2), replace(GROUP_FACTS, nodes=(NODE, small)), NOW)
    assert (plan.spec.cpu, plan.spec.memory) == (Fraction(96), Fraction(2**40))
    # A larger node with a smaller share: 8 of 16 GPUs come with 32 of its 64 CPUs.
    wide = replace(NODE, name="gpu-16", gpus=16, cpu=Fraction(64))
    plan = plan_create(request(gpus=8, nodes=2), replace(GROUP_FACTS, nodes=(NODE, wide)), NOW)
    assert (plan.spec.cpu, plan.spec.memory) == (Fraction(32), Fraction(2**40))
    with pytest.raises(
        BadInputError, match=r"^--cpu 100 / --memory 1Ti is more than gpu-16 has \(64 CPUs, 2Ti\)$"
    ):
        plan_create(request(gpus=8, nodes=2, cpu="100"), replace(GROUP_FACTS, nodes=(NODE, wide)), NOW)


def test_rdma_where_the_site_gives_it_is_one_device_per_pod_and_nccl_uses_it() -> None:
    facts = replace(GROUP_FACTS, settings=replace(GROUP_FACTS.settings, rdma_resource="rdma/hca_shared"))
    pod = plan_create(request(gpus=8, nodes=2), facts, NOW).statefulset(Endpoint("", 22, None))["spec"][
        "template"
    ]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["rdma/hca_shared"] == "1"
    assert {"name": "NCCL_IB_DISABLE", "value": "0"} in container["env"]


def test_a_multi_node_shell_the_cluster_cannot_hold_is_refused_with_every_reason() -> None:
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=8, nodes=3), GROUP_FACTS, NOW)
    assert str(refused.value) == (
        "--nodes 3 --gpus 8: the shell needs 3 nodes with 8 GPUs each, and 2 ready node(s) have that "
        "(gpu-1, gpu-2); --nodes 3 --gpus 8 (24 GPUs) is more than alice's quota allows: 16 GPUs, "
        "0 in use by other shells"
    )
    settings = replace(GROUP_FACTS.settings, max_nodes=1, access_mode="ReadWriteOnce")
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=8, nodes=2), replace(GROUP_FACTS, settings=settings), NOW)
    assert str(refused.value).split("; ") == [
        "--nodes 2: this cluster allows no multi-node shells (shells_platform_max_nodes is 1)",
        "--nodes 2: a multi-node shell's pods share its home across nodes, and this cluster's volumes "
        "are ReadWriteOnce (one node at a time): ask for --nodes 1",
    ]
    with pytest.raises(BadInputError, match=r"^--nodes must be 1 or more, not 0$"):
        check_request(request(nodes=0))
    # A user added before the site allowed multi-node shells, a --no-wait without a queue, and a
    # name whose peers' Service is another shell's.
    old_quota = {"spec": {"hard": {"requests.nvidia.com/gpu": "16", "pods": "8", "services": "16"}},
                 "status": {"used": {"pods": "7", "services": "14"}}}  # fmt: skip
    facts = replace(GROUP_FACTS, quota=old_quota, peers_service_taken=True)
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=8, nodes=2, wait=False, web=True), facts, NOW)
    assert str(refused.value).split("; ") == [
        "--no-wait: a multi-node shell's 2 pods start together or not at all, which only a create that "
        "waits can see to",
        "the Service train-peers, which would name the pods of train, is another shell's: pick another name",
        "--nodes 2: the shell needs 2 pods, and alice's quota has room for 1 more: an operator re-runs "
        "'toolkit user add alice' to count multi-node shells",
        "--nodes 2: the shell needs 3 services, and alice's quota has room for 2 more: an operator re-runs "
        "'toolkit user add alice' to count multi-node shells",
    ]
    # Even where Kueue queues it: Kueue admits a group by its quota, not by the nodes' free GPUs.
    queued = replace(GROUP_FACTS, settings=replace(GROUP_FACTS.settings, queue="shells"))
    with pytest.raises(BadInputError, match=r"^--no-wait: a multi-node shell's 2 pods"):
        plan_create(request(gpus=8, nodes=2, wait=False), queued, NOW)
    # Figures as the API server writes them back (1000 reads 1k) are counted as such.
    big_quota = {"spec": {"hard": {"requests.nvidia.com/gpu": "16", "pods": "1k", "services": "1k"}},
                 "status": {"used": {"pods": "999"}}}  # fmt: skip
    with pytest.raises(BadInputError, match="the shell needs 2 pods, and alice's quota has room for 1 more"):
        plan_create(request(gpus=8, nodes=2), replace(GROUP_FACTS, quota=big_quota), NOW)


def test_a_shell_named_like_another_shells_extra_service_is_refused() -> None:
    with pytest.raises(BadInputError) as refused:
        plan_create(request(name="big-peers"), replace(GROUP_FACTS, name_is_a_service=True), NOW)
    assert str(refused.value) == (
        "the Service 'big-peers' is another shell's (its web terminal's, or the one naming a multi-node "
        "shell's pods): pick another name"
    )


def test_no_spreading_is_suggested_where_the_cluster_has_no_multi_node_shells() -> None:
    for settings in (
        replace(GROUP_FACTS.settings, access_mode="ReadWriteOnce"),
        replace(GROUP_FACTS.settings, max_nodes=1),
    ):
        with pytest.raises(BadInputError) as refused:
            plan_create(request(gpus=16), replace(GROUP_FACTS, settings=settings), NOW)
        assert str(refused.value) == "--gpus 16 is more than any node has (the largest, gpu-1, has 8)"


@pytest.mark.parametrize(
    ("gpus", "hint"),
    [
        (16, ": spread them over nodes with --nodes 2 --gpus 8"),
        (12, ": spread them over nodes with --nodes 2 --gpus 6"),
        (24, ""),  # three nodes of 8 would do, and only two have 8
        (9, ": spread them over nodes with --nodes 3 --gpus 3"),
        (17, ""),
    ],
)
def test_more_gpus_than_a_node_has_suggests_spreading_them_over_nodes_that_could_hold_them(
    gpus: int, hint: str
) -> None:
    with pytest.raises(BadInputError) as refused:
        plan_create(request(gpus=gpus), replace(GROUP_FACTS, quota=None), NOW)
    assert str(refused.value).split("; ")[0] == (
        f"--gpus {gpus} is more than any node has (the largest, gpu-1, has 8){hint}"
    )
