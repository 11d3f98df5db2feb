"""Rendering a role's manifest templates as Ansible's template module does, and validating them
against the Kubernetes OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import kubernetes_validate
import yaml

ROLES = Path(__file__).resolve().parent.parent / "roles"
KUBERNETES_VERSION = "1.33"


def render(role: str, template: str, **settings: Any) -> list[dict[str, Any]]:
    """The template's documents, with the role's defaults overridden by `settings`.

    The templates use plain Jinja only, and Ansible renders with trim_blocks on, so this is the
    same text the role writes.
    """
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    environment = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    text = environment.from_string((ROLES / role / "templates" / template).read_text()).render(
        defaults | settings
    )
    return [document for document in yaml.safe_load_all(text) if document]


def validate(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
