"""The settings shells_platform and wekafs_csi write are what `toolkit shell` reads."""

from __future__ import annotations

import base64

from tests.manifests import render, validate
from toolkit.images import SHELL_IMAGE, TOOLKIT_IMAGE
from toolkit.shell_settings import Platform


def test_role_manifests_validate() -> None:
    validate(render("shells_platform", "shells.yaml.j2"))
    validate(render("shells_platform", "toolkit-lifecycle.yaml.j2"))


def test_the_lifecycle_cronjob_runs_the_toolkits_image_as_its_own_restricted_account() -> None:
    documents = render(
        "shells_platform",
        "toolkit-lifecycle.yaml.j2",
        shells_platform_lifecycle_image="registry.example.org/toolkit:1.0",
        shells_platform_lifecycle_schedule="*/2 * * * *",
    )
    [cronjob] = [d for d in documents if d["kind"] == "CronJob"]
    assert cronjob["spec"]["schedule"] == "*/2 * * * *"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.example.org/toolkit:1.0"
    assert container["args"] == ["shell", "reap", "--all-users", "--idle", "--record-status"]
    assert pod["serviceAccountName"] == "toolkit-lifecycle"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    [namespace] = [d for d in documents if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Changing anything is bound per user namespace (toolkit user add), never cluster-wide.
    cluster_wide = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    [bound] = [
        d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "toolkit-lifecycle"
    ]
    assert [b["roleRef"]["name"] for b in cluster_wide] == ["toolkit-lifecycle"]
    assert {verb for rule in bound["rules"] for verb in rule["verbs"]} == {"list"}


def test_toolkit_reads_the_roles_settings_merged_with_the_storage_class() -> None:
    shells = render(
        "shells_platform",
        "shells.yaml.j2",
        shells_platform_max_hours=72,
        shells_platform_max_lifetime_hours=96,
        shells_platform_ssh_host="shells.example.org",
        shells_platform_reap_policy="delete",
        shells_platform_user_max_volumes=4,
        shells_platform_egress_denied_cidrs=["192.0.2.10/32", "192.0.2.11/32"],
        shells_platform_web_domain="shells.example.org",
        shells_platform_user_max_shells=3,
        shells_platform_idle_minutes=45,
        shells_platform_max_idle_minutes=0,
        wekafs_enabled=False,  # no Weka: no shared area, by default
    )
    storage = render(
        "wekafs_csi",
        "shells-storage.yaml.j2",
        wekafs_enabled=False,
    )
    config_maps = [d for d in shells + storage if d["kind"] == "ConfigMap"]
    assert all(c["metadata"]["labels"]["toolkit.dev/shells-config"] == "true" for c in config_maps)
    settings = Platform.from_config_maps(config_maps)
    assert settings == Platform(
        storage_class="local-path",
        runtime_class="nvidia",
        image="localhost/toolkit-shell:latest",
        default_hours=24,
        max_hours=72,
        max_lifetime_hours=96,
        expose="NodePort",
        ssh_host="shells.example.org",
        require_gpu=True,
        reap_policy="delete",
        user_max_volumes=4,
        egress_denied_cidrs=("192.0.2.10/32", "192.0.2.11/32"),
        user_max_shells=3,
        web_domain="shells.example.org",
        idle_minutes=45,
        max_idle_minutes=0,
        max_nodes=4,
        topology_labels=("nvidia.com/gpu.clique",),
    )


def test_an_empty_runtime_class_means_none() -> None:
    [_, config_map] = render("shells_platform", "shells.yaml.j2", shells_platform_runtime_class="")
    assert Platform.from_config_maps([config_map]).runtime_class is None


def test_the_roles_default_images_are_the_ones_toolkit_images_builds() -> None:
    [_, config_map] = render("shells_platform", "shells.yaml.j2")
    assert config_map["data"]["image"] == SHELL_IMAGE == Platform().image
    [cronjob] = [d for d in render("shells_platform", "toolkit-lifecycle.yaml.j2") if d["kind"] == "CronJob"]
    assert (
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == TOOLKIT_IMAGE
    )


def test_admission_policies_validate() -> None:
    documents = render("shells_platform", "toolkit-admission.yaml.j2")
    kinds = ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    assert [d["kind"] for d in documents] == kinds * 8
    validate(documents)


CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"


def test_the_sites_certificate_becomes_traefiks_default_in_kube_system() -> None:
    secret, store = render(
        "shells_platform",
        "toolkit-web-tls.yaml.j2",
        shells_platform_web_tls_certificate=CERTIFICATE,
        shells_platform_web_tls_key=KEY,
    )
    validate([secret])
    assert (secret["type"], secret["metadata"]["namespace"]) == ("kubernetes.io/tls", "kube-system")
    assert base64.b64decode(secret["data"]["tls.crt"]).decode() == CERTIFICATE
    assert base64.b64decode(secret["data"]["tls.key"]).decode() == KEY
    # Traefik reads only the TLSStore named default; it serves it for TLS entries that name no Secret.
    assert (store["apiVersion"], store["kind"]) == ("traefik.io/v1alpha1", "TLSStore")
    assert store["metadata"]["name"] == "default"
    assert store["spec"] == {"defaultCertificate": {"secretName": secret["metadata"]["name"]}}


def test_the_capabilities_users_containers_may_add_are_a_shells_sshds() -> None:
    from toolkit.shell_manifests import SSHD_CAPABILITIES

    [policy] = [
        d for d in render("shells_platform", "toolkit-admission.yaml.j2")
        if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "toolkit-user-workloads"
    ]  # fmt: skip
    [rule] = [
        v["expression"] for v in policy["spec"]["validations"] if "capabilities.add.all" in v["expression"]
    ]
    allowed = rule.split("a in [", 1)[1].split("]", 1)[0]
    assert [name.strip().strip("'") for name in allowed.split(",")] == SSHD_CAPABILITIES
