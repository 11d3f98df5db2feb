"""Node Feature Discovery's manifest, rendered as Ansible renders it: its namespace against the
Kubernetes schemas, its HelmChart's values against what the chart (v0.18.3) reads."""

from __future__ import annotations

from functools import partial

import yaml

from tests.manifests import render as render_role
from tests.manifests import validate

render = partial(render_role, "node_feature_discovery", gpu_feature_discovery_enabled=True)


def test_the_namespace_validates_and_may_mount_the_host() -> None:
    namespace, chart = render("node-feature-discovery.yaml.j2", helm_chart_archive_content="Y2hhcnQ=")
    validate([namespace])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert chart["kind"] == "HelmChart" and chart["metadata"]["namespace"] == "kube-system"
    assert chart["spec"]["targetNamespace"] == namespace["metadata"]["name"]
    assert chart["spec"]["createNamespace"] is False
    assert (chart["spec"]["chart"], chart["spec"]["version"]) == ("node-feature-discovery", "0.18.3")
    assert chart["spec"]["chartContent"] == "Y2hhcnQ="


def test_only_nfds_and_gpu_feature_discoverys_nodefeatures_label_nodes() -> None:
    _, chart = render("node-feature-discovery.yaml.j2", helm_chart_archive_content="")
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    (expression,) = values["master"]["config"]["restrictions"]["nodeFeatureNamespaceSelector"][
        "matchExpressions"
    ]
    assert expression == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["node-feature-discovery", "kube-system"],
    }


def test_the_image_comes_from_the_sites_registry_at_the_release() -> None:
    _, chart = render(
        "node-feature-discovery.yaml.j2",
        helm_chart_archive_content="",
        node_feature_discovery_image_registry="mirror.local:5000",
    )
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert values["image"] == {
        "repository": "mirror.local:5000/nfd/node-feature-discovery",
        "tag": "v0.18.3",
        "pullPolicy": "IfNotPresent",
    }
    # Every node is described, and nfd-master and nfd-gc run where every node is a tainted GPU node.
    assert values["worker"]["tolerations"] == [{"operator": "Exists"}]
    for component in ("master", "gc"):
        assert values[component]["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"}]
    assert values["topologyUpdater"]["enable"] is False and values["gc"]["enable"] is True
