#!/usr/bin/env python3
"""Publish the GPUs held on each node as ConfigMap toolkit-system/capacity, for `toolkit shell avail`.

Users may not list other tenants' pods (their specs and environments are theirs), so they can't
count what each node's pods hold. This runs in the cluster, as the ServiceAccount
toolkit-capacity that may list pods and nodes, and writes only the counts:
data.nodes = {"NODE": {"gpus": allocatable, "held": requested by unfinished pods}} and
data.publishedAt. Standard library only, and Python 3.10's (the CUDA base's Ubuntu 22.04): it runs in the
shell image, which every cluster has.

The counting rule is toolkit/capacity.py's (gpu_requests, gpus_held); a test holds the two equal.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

GPU = "nvidia.com/gpu"
NAMESPACE, NAME = "toolkit-system", "capacity"
ACCOUNT_DIR = Path(os.environ.get("SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))


def gpu_requests(pod: dict[str, Any]) -> int:
    spec = pod.get("spec") or {}

    def gpus(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        requested = (resources.get("requests") or {}).get(GPU) or (resources.get("limits") or {}).get(GPU)
        return int(requested or 0)

    sidecars, init_peak = 0, 0
    for container in spec.get("initContainers") or []:
        if container.get("restartPolicy") == "Always":  # a sidecar: it runs beside what follows
            sidecars += gpus(container)
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + gpus(container))
    return max(sum(gpus(c) for c in spec.get("containers") or []) + sidecars, init_peak)


def counts(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    held: dict[str, int] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            held[node] = held.get(node, 0) + gpu_requests(pod)
    return {
        node["metadata"]["name"]: {
            "gpus": int(((node.get("status") or {}).get("allocatable") or {}).get(GPU, "0")),
            "held": held.get(node["metadata"]["name"], 0),
        }
        for node in nodes
    }


def call(
    method: str, path: str, body: dict[str, Any] | None = None, content: str = "application/json"
) -> Any:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Authorization": f"Bearer {(ACCOUNT_DIR / 'token').read_text().strip()}",
            "Content-Type": content,
            "Accept": "application/json",
        },
    )
    tls = ssl.create_default_context(cafile=str(ACCOUNT_DIR / "ca.crt"))
    with urllib.request.urlopen(request, context=tls, timeout=30) as response:
        return json.loads(response.read())


def publish() -> dict[str, dict[str, int]]:
    found = counts(call("GET", "/api/v1/nodes")["items"], call("GET", "/api/v1/pods")["items"])
    data = {
        "nodes": json.dumps(found, sort_keys=True),
        "publishedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    try:
        call("PATCH", f"{path}/{NAME}", {"data": data}, "application/merge-patch+json")
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "toolkit"},
            },
            "data": data,
        }
        call("POST", path, manifest)
    return found


if __name__ == "__main__":
    try:
        published = publish()
    except (OSError, urllib.error.URLError, KeyError, ValueError) as error:
        sys.exit(f"error: publishing capacity failed: {error}")
    held = sum(node["held"] for node in published.values())
    print(f"published capacity of {len(published)} node(s): {held} GPUs held")
