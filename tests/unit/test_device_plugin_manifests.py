"""The device plugin's manifests, rendered as Ansible renders them, against the Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import kubernetes_validate
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "nvidia_device_plugin"
KUBERNETES_VERSION = "1.33"


def render(template: str, **overrides: Any) -> list[dict[str, Any]]:
    settings = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()) | overrides
    # Ansible's template module renders with trim_blocks on.
    environment = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    text = environment.from_string((ROLE / "templates" / template).read_text()).render(**settings)
    return [document for document in yaml.safe_load_all(text) if document]


def validate(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


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
    assert config["flags"] == {"migStrategy": "single", "failOnInitError": False}
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
