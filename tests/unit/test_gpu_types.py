"""--gpu-type as people say it, against the products GPU feature discovery labels nodes with."""

from __future__ import annotations

import pytest

from toolkit.errors import BadInputError
from toolkit.gpu_types import check_gpu_type, matching_products

# Products as GPU feature discovery v0.17.1 writes them (the NVML name, spaces as dashes; -SHARED
# where the device plugin time-slices the GPU).
PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-H100-NVL",
    "NVIDIA-H100-80GB-HBM3-SHARED",
    "NVIDIA-H200",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-H1000",
}


@pytest.mark.parametrize(
    ("gpu_type", "expected"),
    [
        ("h100", ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-80GB-HBM3-SHARED", "NVIDIA-H100-NVL")),
        ("H100-NVL", ("NVIDIA-H100-NVL",)),
        ("nvidia-h100-80gb-hbm3", ("NVIDIA-H100-80GB-HBM3",)),
        ("h100-80gb", ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-80GB-HBM3-SHARED")),
        ("h200", ("NVIDIA-H200",)),
        ("80gb", ("NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-80GB-HBM3-SHARED")),
        ("h10", ()),
        ("a100-80gb", ()),
        ("nvl-h100", ()),
    ],
)
def test_a_gpu_type_names_the_products_with_its_words_in_a_row(
    gpu_type: str, expected: tuple[str, ...]
) -> None:
    assert matching_products(gpu_type, PRODUCTS) == expected


def test_a_full_product_name_is_that_product_alone() -> None:
    assert matching_products("NVIDIA-H100-80GB-HBM3", PRODUCTS) == ("NVIDIA-H100-80GB-HBM3",)


@pytest.mark.parametrize("gpu_type", ["h100;id", "", "-h100", "h100 nvl", "x" * 64, "h100/nvl", "h100\n"])
def test_a_gpu_type_that_is_no_label_value_is_refused(gpu_type: str) -> None:
    with pytest.raises(BadInputError, match="is not a GPU product"):
        check_gpu_type(gpu_type)


@pytest.mark.parametrize("gpu_type", ["h100", "NVIDIA-H100-80GB-HBM3", "a100_80gb", "x" * 63, "gh200.1"])
def test_a_gpu_type_shaped_as_a_label_value_is_accepted(gpu_type: str) -> None:
    check_gpu_type(gpu_type)
