"""Users' image references: checked, written out in full, and held to the site's allowed list the
same way here as the shells_platform role's admission pattern holds them."""

from __future__ import annotations

import re

import pytest

from tests.manifests import render
from toolkit.errors import BadInputError
from toolkit.image_refs import allowed_by, full_reference


@pytest.mark.parametrize(
    ("written", "full"),
    [
        ("python:3.12", "docker.io/library/python:3.12"),
        ("nvidia/cuda:12.6.3-base-ubuntu22.04", "docker.io/nvidia/cuda:12.6.3-base-ubuntu22.04"),
        ("nvcr.io/nvidia/pytorch:24.08-py3", "nvcr.io/nvidia/pytorch:24.08-py3"),
        ("localhost/toolkit-shell:latest", "localhost/toolkit-shell:latest"),
        ("registry.example.org:5000/ml/train", "registry.example.org:5000/ml/train"),
        (f"ghcr.io/org/img@sha256:{'a' * 64}", f"ghcr.io/org/img@sha256:{'a' * 64}"),
    ],
)
def test_a_reference_is_written_out_as_the_runtime_reads_it(written: str, full: str) -> None:
    assert full_reference(written) == full


@pytest.mark.parametrize(
    "written",
    [
        "",
        "two words",
        "Upper/Case:tag:more",
        "img:tag with space",
        "img@sha256:short",
        "-img",
        "a" * 300,
        "python:tagé",
        f"img@sha256:{'a' * 32}",
        f"img@sha512:{'a' * 64}",
    ],
)
def test_what_is_no_reference_is_bad_input_in_one_line(written: str) -> None:
    with pytest.raises(BadInputError) as refused:
        full_reference(written)
    assert "is not an image reference" in str(refused.value) and "\n" not in str(refused.value)


ALLOWED = ["nvcr.io", "registry.example.org/ml/", "localhost:5000/team"]
IMAGES = {
    "nvcr.io/nvidia/pytorch:24.08-py3": True,
    "nvcr.io.example.com/x:1": False,  # a registry matches only at a "/"
    "registry.example.org/ml/train:1": True,
    "registry.example.org/ml:1": True,  # the repository itself, tagged
    f"registry.example.org/ml@sha256:{'b' * 64}": True,
    "registry.example.org/mlx/train:1": False,  # a repository prefix matches only at a "/"
    "registry.example.org/other:1": False,
    "localhost:5000/team/a": True,
    "localhost:5001/team/a": False,
    "docker.io/library/python:3.12": False,
}


@pytest.mark.parametrize(("image", "allowed"), sorted(IMAGES.items()))
def test_the_toolkit_and_admission_allow_the_same_images(image: str, allowed: bool) -> None:
    [shells] = [
        d
        for d in render("shells_platform", "shells.yaml.j2", shells_platform_allowed_images=ALLOWED)
        if d["kind"] == "ConfigMap"
    ]
    listed = shells["data"]["allowedImages"].split(",")
    assert allowed_by(image, listed) is allowed
    # RE2, as admission's CEL matches() reads it, takes this pattern as Python's re does.
    assert (re.search(shells["data"]["allowedImagesPattern"], image) is not None) is allowed
