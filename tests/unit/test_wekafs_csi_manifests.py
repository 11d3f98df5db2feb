"""The WekaFS CSI manifests, rendered as Ansible renders them, against the Kubernetes schemas."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.manifests import render, validate

SENTINEL_PASSWORD = "sentinel-password-7f3c"
WEKA = {
    "wekafs_csi_api_endpoints": ["10.0.0.1:14000", "10.0.0.2:14000"],
    "wekafs_csi_api_username": "csi",
    "wekafs_csi_api_password": SENTINEL_PASSWORD,
}


def rendered(template: str, **overrides: Any) -> list[dict[str, Any]]:
    return render("wekafs_csi", template, **(WEKA | overrides))


def test_api_secret_has_the_fields_csi_wekafs_reads() -> None:
    namespace, secret = rendered("csi-wekafs-api-secret.yaml.j2")
    validate([namespace, secret])
    assert secret["stringData"] == {
        "username": "csi",
        "password": SENTINEL_PASSWORD,
        "organization": "Root",
        "endpoints": "10.0.0.1:14000,10.0.0.2:14000",
        "scheme": "https",
    }


def test_storage_class_is_rwx_capable_dir_volumes_kept_after_release() -> None:
    namespace, config_map, storage_class = rendered("shells-storage.yaml.j2")
    validate([namespace, config_map, storage_class])
    assert storage_class["metadata"]["name"] == "shared-wekafs"
    assert storage_class["provisioner"] == "csi.weka.io"
    assert storage_class["reclaimPolicy"] == "Retain"
    assert storage_class["allowVolumeExpansion"] is True
    parameters = storage_class["parameters"]
    assert parameters["volumeType"] == "dir/v1"
    assert parameters["filesystemName"] == "default"
    assert parameters["capacityEnforcement"] == "HARD"
    secret_refs = {key: value for key, value in parameters.items() if key.endswith("-secret-name")}
    assert len(secret_refs) == 5 and set(secret_refs.values()) == {"csi-wekafs-api-secret"}
    # WekaFS mounts a volume on many nodes at once: shells' volumes are ReadWriteMany.
    assert config_map["data"] == {"storageClassName": "shared-wekafs", "accessMode": "ReadWriteMany"}


def test_without_weka_shells_fall_back_to_local_path_and_no_class_is_made() -> None:
    documents = rendered("shells-storage.yaml.j2", wekafs_enabled=False)
    validate(documents)
    assert [d["kind"] for d in documents] == ["Namespace", "ConfigMap"]
    assert documents[1]["data"] == {"storageClassName": "local-path", "accessMode": "ReadWriteOnce"}


def test_helm_chart_is_pinned_and_points_the_driver_at_k3s_kubelet() -> None:
    (chart,) = rendered("csi-wekafs.yaml.j2", wekafs_csi_image_registry="mirror.local:5000")
    assert chart["apiVersion"] == "helm.cattle.io/v1"
    assert chart["spec"]["chart"] == "csi-wekafsplugin"
    assert chart["spec"]["version"] == "2.7.4"
    assert chart["spec"]["repo"] == "https://weka.github.io/csi-wekafs"
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert values["kubeletPath"] == "/var/lib/kubelet"
    assert values["images"] == {"csidriver": "mirror.local:5000/weka.io/csi-wekafs", "csidriverTag": "2.7.4"}


def test_air_gapped_chart_travels_inside_the_manifest(tmp_path: Path) -> None:
    archive = tmp_path / "csi-wekafsplugin-2.7.4.tgz"
    archive.write_bytes(b"\x1f\x8b\x08\x00chart")
    (chart,) = rendered("csi-wekafs.yaml.j2", wekafs_csi_chart_archive=str(archive))
    assert base64.b64decode(chart["spec"]["chartContent"]) == archive.read_bytes()
    assert "repo" not in chart["spec"]


def test_no_credential_leaves_the_secret_manifest() -> None:
    for template in ("csi-wekafs.yaml.j2", "shells-storage.yaml.j2"):
        assert SENTINEL_PASSWORD not in yaml.safe_dump_all(rendered(template))
