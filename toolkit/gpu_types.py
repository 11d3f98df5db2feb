"""`--gpu-type`: a GPU product as people say it (h100, H100-NVL, h200), matched against the
products the cluster's nodes carry in GPU feature discovery's label nvidia.com/gpu.product (such as
NVIDIA-H100-80GB-HBM3, or NVIDIA-H100-80GB-HBM3-SHARED for time-sliced GPUs)."""

from __future__ import annotations

import re

from toolkit.errors import BadInputError

PRODUCT_LABEL = "nvidia.com/gpu.product"
# A label value's own limit and alphabet, so the product can go in a node selector as given.
_GPU_TYPE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def check_gpu_type(gpu_type: str) -> None:
    if not _GPU_TYPE.fullmatch(gpu_type):
        raise BadInputError(
            f"--gpu-type {gpu_type!r} is not a GPU product: letters, digits, '-', '_' and '.', "
            "at most 63 (such as h100, H100-NVL or NVIDIA-H100-80GB-HBM3)"
        )


def _words(product: str) -> list[str]:
    return product.lower().split("-")


def matching_products(gpu_type: str, products: set[str]) -> tuple[str, ...]:
    """The products `gpu_type` names: the one it spells out (in any case), else every product whose
    dash-separated words contain its words in a row, so h100 is NVIDIA-H100-80GB-HBM3 and
    NVIDIA-H100-NVL but not NVIDIA-H1000, and h100-nvl is only the latter."""
    exact = tuple(sorted(p for p in products if p.lower() == gpu_type.lower()))
    if exact:
        return exact
    wanted = _words(gpu_type)
    return tuple(
        sorted(
            product
            for product in products
            if any(
                _words(product)[start : start + len(wanted)] == wanted
                for start in range(len(_words(product)) - len(wanted) + 1)
            )
        )
    )
