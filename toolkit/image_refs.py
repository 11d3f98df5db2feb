"""Container image references: checked, written out in full, and held to the site's allowed list.

The grammar is the one containerd and the kubelet parse (the distribution project's reference
package): an optional registry, a repository of lowercase components, a tag and/or a digest. A
name without a registry is Docker Hub's, and a one-component one is in its `library/`, as the
runtime reads them; writing them out in full is what lets the site's list of registries
(shells_platform_allowed_images) be checked on the reference itself, here and by admission.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from toolkit.errors import BadInputError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
)
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
DOCKER_HUB = "docker.io"


def full_reference(image: str) -> str:
    """The reference with its registry (and Docker Hub's `library/`); a BadInputError if it is none."""
    text = image.strip()
    found = REFERENCE.fullmatch(text)
    algorithm, _, digest_hex = (found["digest"] or "").partition(":") if found else ("", "", "")
    if not found or len(text) > 255 or (algorithm and len(digest_hex) != DIGEST_LENGTHS.get(algorithm)):
        raise BadInputError(
            f"--image {image!r} is not an image reference (REGISTRY/REPOSITORY[:TAG][@DIGEST], "
            "e.g. nvcr.io/nvidia/pytorch:24.08-py3)"
        )
    domain, path = found["domain"], found["path"]
    # The first component is a registry only when it looks like a host: a dot, a port, or localhost.
    looks_like_host = domain is not None and (
        "." in domain or ":" in domain or domain == "localhost" or domain != domain.lower()
    )
    if domain is not None and not looks_like_host:
        domain, path = None, f"{domain}/{path}"
    if domain is None:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    tag = f":{found['tag']}" if found["tag"] else ""
    digest = f"@{found['digest']}" if found["digest"] else ""
    return f"{domain}/{path}{tag}{digest}"


def allowed_by(image: str, allowed: Iterable[str]) -> bool:
    """Whether a full reference is under one of the site's entries: a registry (`nvcr.io`), or a
    repository or its prefix (`nvcr.io/nvidia`), matched only at a `/` (and a repository's tag
    or digest), so `nvcr.io` allows nothing from `nvcr.io.example.com`."""
    for entry in allowed:
        entry = entry.rstrip("/")
        if image.startswith(f"{entry}/"):
            return True
        if "/" in entry and (image == entry or image.startswith((f"{entry}:", f"{entry}@"))):
            return True
    return False
