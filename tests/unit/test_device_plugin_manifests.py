"""The device plugin's manifests, rendered as Ansible renders them, against the Kubernetes schemas."""

from __future__ import annotations

from functools import partial
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.manifests import render as render_role
from tests.manifests import validate

render = partial(render_role, "nvidia_device_plugin")


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"nvidia_device_plugin_time_slicing_replicas": 4},
        {"nvidia_device_plugin_mig_strategy": "mixed", "nvidia_device_plugin_fail_on_init_error": False},
        {"nvidia_device_plugin_use_runtimeclass": False},
    ],
    ids=["defaults", "time-slicing", "mig-mixed", "no-runtimeclass"],
)
def test_device_plugin_manifests_validate(settings: dict[str, Any]) -> None:
    documents = render("nvidia-device-plugin.yaml.j2", **settings)
    assert [d["kind"] for d in documents] == ["ConfigMap", "DaemonSet"]
    validate(documents)


def test_runtimeclass_validates() -> None:
    (runtimeclass,) = render("nvidia-runtimeclass.yaml.j2")
    validate([runtimeclass])
    assert runtimeclass["handler"] == "nvidia"


def test_plugin_config_carries_the_settings() -> None:
    config_map, daemonset = render(
        "nvidia-device-plugin.yaml.j2",
        nvidia_device_plugin_time_slicing_replicas=4,
        nvidia_device_plugin_mig_strategy="single",
        nvidia_device_plugin_fail_on_init_error=False,
    )
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["flags"] == {
        "migStrategy": "single",
        "failOnInitError": False,
        "plugin": {"deviceListStrategy": "volume-mounts"},
    }
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["runtimeClassName"] == "nvidia"


def test_no_sharing_block_without_time_slicing() -> None:
    config_map, _ = render("nvidia-device-plugin.yaml.j2", nvidia_device_plugin_time_slicing_replicas=1)
    assert "sharing" not in yaml.safe_load(config_map["data"]["config.yaml"])


def test_image_can_come_from_a_local_registry() -> None:
    _, daemonset = render("nvidia-device-plugin.yaml.j2", nvidia_device_plugin_registry="mirror.local:5000")
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "mirror.local:5000/nvidia/k8s-device-plugin:v0.17.1"


def test_a_broken_manifest_is_caught_by_the_schema() -> None:
    _, daemonset = render("nvidia-device-plugin.yaml.j2")
    daemonset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        validate([daemonset])


@pytest.mark.parametrize(("only_through_plugin", "strategy"), [(True, "volume-mounts"), (False, "envvar")])
def test_gpus_reach_pods_only_through_the_plugins_volume_mounts_unless_the_site_says_otherwise(
    only_through_plugin: bool, strategy: str
) -> None:
    config_map, daemonset = render(
        "nvidia-device-plugin.yaml.j2", nvidia_gpus_only_through_device_plugin=only_through_plugin
    )
    assert yaml.safe_load(config_map["data"]["config.yaml"])["flags"]["plugin"] == {
        "deviceListStrategy": strategy
    }
    capabilities = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert capabilities == (
        {"drop": ["ALL"], "add": ["SYS_ADMIN"]} if only_through_plugin else {"drop": ["ALL"]}
    )
    validate([config_map, daemonset])


@pytest.mark.parametrize("use_runtimeclass", [True, False])
def test_dcgm_exporter_validates_and_is_what_the_toolkit_reads(use_runtimeclass: bool) -> None:
    from toolkit import gpu_metrics

    documents = render(
        "dcgm-exporter.yaml.j2",
        nvidia_device_plugin_use_runtimeclass=use_runtimeclass,
        nvidia_device_plugin_dcgm_exporter_registry="registry.example.internal:5000",
    )
    validate(documents)
    namespace, daemonset, role, binding = documents
    assert (
        namespace["metadata"]["name"] == daemonset["metadata"]["namespace"] == gpu_metrics.EXPORTER_NAMESPACE
    )
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    pod = daemonset["spec"]["template"]
    key, value = gpu_metrics.EXPORTER_SELECTOR.split("=")
    assert pod["metadata"]["labels"][key] == value
    [container] = pod["spec"]["containers"]
    assert (
        container["image"] == "registry.example.internal:5000/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
    )
    assert container["ports"] == [{"name": "metrics", "containerPort": gpu_metrics.EXPORTER_PORT}]
    assert ("runtimeClassName" in pod["spec"]) is use_runtimeclass
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"} in container["env"]
    # The shells' lifecycle may read the exporters, and nothing more here.
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "toolkit-lifecycle", "namespace": "toolkit-lifecycle"}
    ]
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("pods",), ("list",)),
        (("pods/proxy",), ("get",)),
    }


@pytest.mark.parametrize("settings", [{}, {"nvidia_device_plugin_use_runtimeclass": False}])
def test_gpu_feature_discovery_validates(settings: dict[str, Any]) -> None:
    documents = render("gpu-feature-discovery.yaml.j2", gpu_feature_discovery_enabled=True, **settings)
    assert [d["kind"] for d in documents] == ["ServiceAccount", "Role", "RoleBinding", "DaemonSet"]
    validate(documents)


def test_gpu_feature_discovery_labels_through_nodefeatures_from_the_plugins_image_and_config() -> None:
    config_map, plugin = render("nvidia-device-plugin.yaml.j2", nvidia_device_plugin_time_slicing_replicas=4)
    account, role, binding, daemonset = render(
        "gpu-feature-discovery.yaml.j2", gpu_feature_discovery_enabled=True
    )
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == plugin["spec"]["template"]["spec"]["containers"][0]["image"]
    environment = {e["name"]: e.get("value") for e in container["env"]}
    from_pod = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e
    }
    # What GFD needs to name and place its NodeFeature (v0.17.1's NewOutputer).
    assert from_pod == {"NODE_NAME": "spec.nodeName", "NAMESPACE": "metadata.namespace"}
    assert environment["GFD_USE_NODE_FEATURE_API"] == "true"
    assert environment["GFD_NO_TIMESTAMP"] == "true"
    # It reads the plugin's own configuration, so time-sliced GPUs are labelled as shared.
    config_dir = environment["GFD_CONFIG_FILE"].rsplit("/", 1)[0]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert mounted["config"] == config_dir
    assert environment["GFD_CONFIG_FILE"].rsplit("/", 1)[1] in config_map["data"]
    # Its NodeFeatures go in its own namespace (kube-system), which nfd-master reads, and nowhere else.
    assert {d["metadata"]["namespace"] for d in (account, role, binding, daemonset)} == {"kube-system"}
    assert role["rules"] == [
        {
            "apiGroups": ["nfd.k8s-sigs.io"],
            "resources": ["nodefeatures"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gpu-feature-discovery", "namespace": "kube-system"}
    ]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
