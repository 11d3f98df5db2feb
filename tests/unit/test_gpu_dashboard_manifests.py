"""The gpu_dashboard role's manifests, rendered as Ansible renders them: core objects against the
Kubernetes schemas, the custom resources (PodMonitor, HelmChart) field by field, and the dashboard's
queries against what dcgm-exporter really exports."""

from __future__ import annotations

import json
import re
import tarfile
from functools import partial
from typing import Any

import pytest
import yaml

from tests.manifests import ROLES, validate
from tests.manifests import render as render_role
from toolkit import gpu_metrics, tenancy

render = partial(render_role, "gpu_dashboard")
ROLE = ROLES / "gpu_dashboard"
DASHBOARD_FILE = ROLE / "files" / "toolkit-gpu-use.json"
MODES = ("scrape-config", "kube-prometheus-stack")

# The fields dcgm-exporter 4.5.3-4.8.2 (the nvidia_device_plugin role's image) exports unless told
# otherwise, as its etc/default-counters.csv lists them (github.com/NVIDIA/dcgm-exporter, tag
# 4.5.3-4.8.2, read with `fetch`); DCGM_FI_DRIVER_VERSION is a label there, not a metric.
DEFAULT_COUNTERS = frozenset(
    {
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_ENC_UTIL",
        "DCGM_FI_DEV_DEC_UTIL",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_RESERVED",
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "DCGM_FI_PROF_PCIE_RX_BYTES",
    }
)
# The labels of a GPU's sample, as the same release's render_metrics.go writes them: the GPU's,
# a MIG instance's, the node's, the label fields, and the pod holding the GPU (Kubernetes mapping).
EXPORTER_LABELS = frozenset(
    {
        "gpu",
        "UUID",
        "pci_bus_id",
        "device",
        "modelName",
        "GPU_I_PROFILE",
        "GPU_I_ID",
        "Hostname",
        "DCGM_FI_DRIVER_VERSION",
        "namespace",
        "pod",
        "container",
    }
)
USERS_ONLY = 'namespace=~"$user"'
HELD = 'pod!=""'


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text()))


def queries() -> list[tuple[str, str]]:
    """Every (panel title, PromQL expression) of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def selectors(expr: str) -> list[tuple[str, str]]:
    """Each `metric{matchers}` of an expression."""
    return re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr)


def groupings(expr: str) -> list[tuple[str, ...]]:
    """The labels of each `by (...)` of an expression, in order."""
    return [
        tuple(label.strip() for label in found.split(",")) for found in re.findall(r"\bby \(([^)]*)\)", expr)
    ]


def defaults() -> dict[str, Any]:
    return dict(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))


# The dashboard itself.


def test_the_dashboard_is_json_with_unique_panels_and_a_prometheus_to_choose() -> None:
    found = dashboard()
    assert found["uid"] == "toolkit-gpu-use"
    ids = [panel["id"] for panel in found["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in found["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for panel in found["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]


def test_every_query_reads_only_what_dcgm_exporter_exports() -> None:
    for title, expr in queries():
        found = selectors(expr)
        assert found, f"{title}: {expr}"
        for metric, matchers in found:
            assert metric in DEFAULT_COUNTERS, (
                f"{title}: {metric} is not one of dcgm-exporter's default fields"
            )
            for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
                assert label in EXPORTER_LABELS, f"{title}: dcgm-exporter puts no {label} label on {metric}"
        assert all(token in DEFAULT_COUNTERS for token in re.findall(r"\bDCGM_[A-Z_]+", expr)), title
        for labels in groupings(expr):
            assert set(labels) <= EXPORTER_LABELS, f"{title}: grouped by {labels}"


def test_the_toolkits_own_figures_are_the_dashboards() -> None:
    metrics = {metric for _, expr in queries() for metric, _ in selectors(expr)}
    assert metrics == {gpu_metrics.UTILISATION, gpu_metrics.MEMORY_USED, gpu_metrics.MEMORY_FREE}


@pytest.mark.parametrize(
    ("marker", "grouping"),
    [("per user", ("namespace",)), ("per shell", ("namespace", "pod")), ("per node", ("Hostname",))],
)
def test_each_view_groups_by_what_it_is_per(marker: str, grouping: tuple[str, ...]) -> None:
    found = [(title, expr) for title, expr in queries() if marker in title]
    assert len(found) >= 2
    for title, expr in found:
        assert groupings(expr)[0] == grouping, f"{title}: {expr}"


def test_users_and_shells_are_the_pods_holding_gpus_in_user_namespaces() -> None:
    for title, expr in queries():
        if "per user" in title or "per shell" in title or "idle" in title.lower():
            for _, matchers in selectors(expr):
                assert USERS_ONLY in matchers and HELD in matchers, f"{title}: {expr}"
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    # "All" users means every user's namespace, as the toolkit names them.
    assert variables["user"]["allValue"] == f"{tenancy.NAMESPACE_PREFIX}.+"
    assert f'namespace=~"{tenancy.NAMESPACE_PREFIX}.+"' in variables["user"]["definition"]


def test_idle_held_gpus_are_those_that_never_worked_over_the_idle_window() -> None:
    titles = {panel["title"]: panel for panel in dashboard()["panels"]}
    [expr] = [target["expr"] for target in titles["GPUs held but idle"]["targets"]]
    assert "max_over_time(DCGM_FI_DEV_GPU_UTIL{" in expr and "[$idle_window]" in expr
    assert ")) == 0) and on (namespace, pod, Hostname, gpu) DCGM_FI_DEV_GPU_UTIL{" in expr
    # Held now: a shell deleted or moved within the window is not counted; only its series is.
    assert not expr.endswith("]))")
    assert groupings(expr)[0][:2] == ("namespace", "pod")
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    # The window the shells' lifecycle pauses an idle shell after, by default.
    assert variables["idle_window"]["current"]["value"] == "1h"


def test_the_dashboard_shows_use_per_user_per_shell_per_node_and_idle_gpus() -> None:
    titles = {panel["title"] for panel in dashboard()["panels"]}
    assert {
        "GPU utilisation per user",
        "Framebuffer memory used per user",
        "GPU utilisation per shell",
        "Framebuffer memory used per shell",
        "GPU utilisation per node",
        "Framebuffer memory used per node",
        "GPUs held but idle",
    } <= titles


# The dashboard's ConfigMap and the scrape config.


@pytest.mark.parametrize("mode", MODES)
def test_the_dashboard_config_map_is_what_grafanas_sidecar_loads(mode: str) -> None:
    documents = render("toolkit-gpu-dashboard.yaml.j2", gpu_dashboard_mode=mode)
    validate(documents)
    config_map = documents[0]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["toolkit-gpu-use.json"]) == dashboard()
    assert len(documents) == (2 if mode == "scrape-config" else 1)


def test_a_site_without_the_operator_gets_a_plain_scrape_config() -> None:
    _, snippet = render(
        "toolkit-gpu-dashboard.yaml.j2", gpu_dashboard_mode="scrape-config", gpu_dashboard_namespace="obs"
    )
    assert snippet["metadata"] == {
        "name": "toolkit-gpu-scrape-config",
        "namespace": "obs",
        "labels": {"app.kubernetes.io/managed-by": "toolkit"},
    }
    [job] = yaml.safe_load(snippet["data"]["scrape-config.yaml"])["scrape_configs"]
    assert job["job_name"] == "dcgm-exporter" and job["scrape_interval"] == "30s"
    # The exporter's namespace and pod labels are the GPU holder's: they win.
    assert job["honor_labels"] is True
    [discovery] = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    assert discovery["namespaces"] == {"names": [gpu_metrics.EXPORTER_NAMESPACE]}
    assert discovery["selectors"] == [{"role": "pod", "label": gpu_metrics.EXPORTER_SELECTOR}]
    assert job["relabel_configs"] == [
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "metrics", "action": "keep"}
    ]


# The PodMonitor: a custom resource, checked field by field.


def exporter_pod_template() -> dict[str, Any]:
    documents = render_role("nvidia_device_plugin", "dcgm-exporter.yaml.j2")
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    return dict(daemonset["spec"]["template"])


@pytest.mark.parametrize("mode", MODES)
def test_the_pod_monitor_selects_the_exporters_the_device_plugin_role_deploys(mode: str) -> None:
    (monitor,) = render("toolkit-gpu-podmonitor.yaml.j2", gpu_dashboard_mode=mode)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"namespaceSelector", "selector", "podMetricsEndpoints"}
    assert monitor["metadata"]["namespace"] == gpu_metrics.EXPORTER_NAMESPACE
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [gpu_metrics.EXPORTER_NAMESPACE]}
    pod = exporter_pod_template()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    [port] = pod["spec"]["containers"][0]["ports"]
    assert endpoint["port"] == port["name"] and port["containerPort"] == gpu_metrics.EXPORTER_PORT
    assert endpoint["interval"] == "30s"
    # The GPU holder's namespace, pod and container (the exporter's labels) win over the exporter's
    # own pod's, which are dropped so that a GPU no pod holds is not put down to the exporter.
    assert endpoint["honorLabels"] is True
    assert endpoint["relabelings"] == [{"action": "labeldrop", "regex": "(namespace|pod|container)"}]


@pytest.mark.parametrize(
    ("mode", "site_labels", "labels"),
    [
        ("scrape-config", {}, {}),
        ("scrape-config", {"release": "prometheus"}, {"release": "prometheus"}),
        ("kube-prometheus-stack", {}, {"release": "kube-prometheus-stack"}),
        (
            "kube-prometheus-stack",
            {"team": "gpu", "release": "x"},
            {"team": "gpu", "release": "kube-prometheus-stack"},
        ),
    ],
)
def test_the_pod_monitor_carries_the_labels_its_prometheus_selects(
    mode: str, site_labels: dict[str, str], labels: dict[str, str]
) -> None:
    (monitor,) = render(
        "toolkit-gpu-podmonitor.yaml.j2",
        gpu_dashboard_mode=mode,
        gpu_dashboard_pod_monitor_labels=site_labels,
    )
    assert monitor["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "toolkit", **labels}


def test_no_network_policy_keeps_prometheus_from_the_exporters() -> None:
    """The role adds no NetworkPolicy rule for Prometheus because none selects the exporters: if the
    device plugin role ever puts one in toolkit-monitoring, this role must admit Prometheus to 9400."""
    kinds = {document["kind"] for document in render_role("nvidia_device_plugin", "dcgm-exporter.yaml.j2")}
    assert "NetworkPolicy" not in kinds


# kube-prometheus-stack through k3s's helm controller.

# HelmChart's spec fields (helm.cattle.io/v1, k3s-io/helm-controller's pkg/apis types.go).
HELMCHART_SPEC = frozenset(
    {
        "targetNamespace",
        "createNamespace",
        "chart",
        "version",
        "repo",
        "repoCA",
        "repoCAConfigMap",
        "set",
        "values",
        "valuesContent",
        "valuesSecrets",
        "helmVersion",
        "bootstrap",
        "takeOwnership",
        "serverSide",
        "forceConflicts",
        "chartContent",
        "jobImage",
        "backOffLimit",
        "timeout",
        "failurePolicy",
        "authSecret",
        "authPassCredentials",
        "insecureSkipTLSVerify",
        "plainHTTP",
        "dockerRegistrySecret",
        "podSecurityContext",
        "securityContext",
        "driver",
    }
)


def stack(**settings: Any) -> tuple[dict[str, Any], ...]:
    return tuple(
        render("kube-prometheus-stack.yaml.j2", gpu_dashboard_mode="kube-prometheus-stack", **settings)
    )


def test_the_stack_installs_the_chart_k3s_serves() -> None:
    namespace, helmchart = stack()
    validate([namespace])
    assert namespace["metadata"]["name"] == "monitoring"
    # node-exporter needs the host: its namespace is not held to the cluster's baseline.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert helmchart["apiVersion"] == "helm.cattle.io/v1" and helmchart["kind"] == "HelmChart"
    assert helmchart["metadata"]["name"] == "kube-prometheus-stack"
    assert helmchart["metadata"]["namespace"] == "kube-system"
    assert set(helmchart["spec"]) <= HELMCHART_SPEC
    # Too big for chartContent (its ConfigMap would pass 1 MiB): k3s serves the checked archive.
    assert "chartContent" not in helmchart["spec"]
    assert (
        helmchart["spec"]["chart"]
        == "https://%{KUBERNETES_API}%/static/charts/kube-prometheus-stack-88.5.3.tgz"
    )
    assert helmchart["spec"]["targetNamespace"] == "monitoring"
    values = yaml.safe_load(helmchart["spec"]["valuesContent"])
    assert "global" not in values
    assert all(
        values[part] == {"enabled": False}
        for part in ("kubeEtcd", "kubeScheduler", "kubeControllerManager", "kubeProxy")
    )
    assert values["prometheus"]["prometheusSpec"] == {"retention": "15d"}
    # Grafana reads its own namespace's ConfigMaps only: the chart's defaults (every namespace,
    # Secrets too) would show it every tenant's Secrets and take dashboards from them.
    assert values["grafana"] == {
        "rbac": {"namespaced": True},
        "sidecar": {
            "dashboards": {
                "enabled": True,
                "label": "grafana_dashboard",
                "labelValue": "1",
                "searchNamespace": "monitoring",
                "resource": "configmap",
            }
        },
    }


def test_the_stacks_images_can_come_from_a_mirror_and_its_data_from_a_volume() -> None:
    _, helmchart = stack(
        gpu_dashboard_image_registry="mirror.local:5000",
        gpu_dashboard_prometheus_storage_size="50Gi",
        gpu_dashboard_prometheus_retention="30d",
    )
    values = yaml.safe_load(helmchart["spec"]["valuesContent"])
    assert values["global"] == {"imageRegistry": "mirror.local:5000"}
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d"
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "50Gi"}},
    }


def test_grafanas_admin_password_is_the_sites_in_a_secret_of_its_own() -> None:
    password = 'a "quoted" pass: word'
    namespace, secret, helmchart = stack(gpu_dashboard_grafana_admin_password=password)
    validate([namespace, secret])
    assert secret["metadata"]["namespace"] == "monitoring"
    assert secret["stringData"] == {"admin-user": "admin", "admin-password": password}
    values = yaml.safe_load(helmchart["spec"]["valuesContent"])
    assert values["grafana"]["admin"] == {
        "existingSecret": secret["metadata"]["name"],
        "userKey": "admin-user",
        "passwordKey": "admin-password",
    }
    assert password not in helmchart["spec"]["valuesContent"]


def test_the_default_chart_version_ships_with_a_pinned_sha256() -> None:
    found = defaults()
    assert found["gpu_dashboard_mode"] == "off"
    pin = found["gpu_dashboard_chart_checksums"][found["gpu_dashboard_chart_version"]]
    assert re.fullmatch(r"[0-9a-f]{64}", pin)


def test_the_molecule_stand_in_is_a_chart_yaml_only() -> None:
    archive = ROLE / "molecule" / "default" / "files" / "kube-prometheus-stack-88.5.3.tgz"
    with tarfile.open(archive) as opened:
        names = [member.name for member in opened.getmembers() if member.isfile()]
        chart = yaml.safe_load(opened.extractfile("kube-prometheus-stack/Chart.yaml").read())  # type: ignore[union-attr]
    assert names == ["kube-prometheus-stack/Chart.yaml"]
    assert chart["name"] == "kube-prometheus-stack" and chart["version"] == "88.5.3"
    assert "STAND-IN" in chart["description"]
