"""GPUs a pod holds, counted as the scheduler counts its effective request."""

from __future__ import annotations

from typing import Any

import pytest

from toolkit.capacity import gpu_requests


def container(gpus: int, sidecar: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
    return found | ({"restartPolicy": "Always"} if sidecar else {})


@pytest.mark.parametrize(
    ("init", "containers", "held"),
    [
        ([], [container(2), container(1)], 3),
        ([container(3)], [container(1)], 3),  # an init container's GPUs are held while it runs
        ([container(8)], [], 8),  # a pod that asks for GPUs only in its init phase still holds them
        ([container(1, sidecar=True)], [container(2)], 3),  # a sidecar runs beside the containers
        ([container(1, sidecar=True), container(4)], [container(2)], 5),  # and beside later inits
        ([container(4), container(1, sidecar=True)], [container(2)], 4),  # not beside earlier ones
    ],
)
def test_a_pod_holds_its_effective_gpu_request(
    init: list[dict[str, Any]], containers: list[dict[str, Any]], held: int
) -> None:
    assert gpu_requests({"spec": {"initContainers": init, "containers": containers}}) == held
