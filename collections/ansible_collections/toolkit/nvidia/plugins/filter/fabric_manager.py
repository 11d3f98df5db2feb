"""Filters: the Fabric Manager version rule of module_utils/nvidia_host, for the roles' templates.

- `driver | toolkit.nvidia.fabric_manager_mismatch(fabric_manager)`: true when they differ.
- `package_version | toolkit.nvidia.upstream_version`: the version without its packaging revision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.toolkit.nvidia.plugins.module_utils.nvidia_host import (
    fabric_manager_mismatch,
    upstream_version,
)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"fabric_manager_mismatch": fabric_manager_mismatch, "upstream_version": upstream_version}
