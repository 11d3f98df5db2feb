"""Validating Kueue objects against Kueue's own CRD schemas (tests/fixtures/kueue, v0.19.2), as
the API server does for a custom resource: the `v1beta2` openAPIV3Schema, where an object's
fields must be those the schema names (the API server's strict field validation, which the
toolkit's server-side apply asks for) unless it preserves unknown fields."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "kueue"


def schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((FIXTURES / f"kueue.x-k8s.io_{plural}.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta2")
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


def validate(document: dict[str, Any]) -> None:
    plural = {
        "LocalQueue": "localqueues",
        "ClusterQueue": "clusterqueues",
        "ResourceFlavor": "resourceflavors",
    }
    assert document["apiVersion"] == "kueue.x-k8s.io/v1beta2", document["apiVersion"]
    checked = {key: value for key, value in document.items() if key != "metadata"}
    jsonschema.validate(checked, schema(plural[document["kind"]]))
