"""Rendering a role's manifest templates as Ansible's template module does, and validating them
against the Kubernetes OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROLES = Path(__file__).resolve().parent.parent / "roles"
KUBERNETES_VERSION = "1.33"


@functools.cache
def _init_plugin_loader() -> None:
    """As ansible-playbook does first, once: the roles' tasks name their modules by FQCN."""
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()


def render(role: str, template: str, **settings: Any) -> list[dict[str, Any]]:
    """The template's documents, as the role writes them for a host whose inventory sets `settings`.

    Ansible itself does the work: a play of the role on one host gives the variables (the
    defaults of the role and of its dependencies, the settings, then the role's vars/main.yml),
    and its Templar renders the template with them, lazily templating each variable it reads and
    with trim_blocks on, as the template module does.
    """
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play import Play
    from ansible.template import Templar, trust_as_template
    from ansible.vars.manager import VariableManager

    _init_plugin_loader()
    loader = DataLoader()
    loader.set_basedir(str(ROLES.parent))
    inventory = InventoryManager(loader=loader, sources=["manifests-host,"])
    host = inventory.get_host("manifests-host")
    for name, value in settings.items():
        host.set_variable(name, value)
    variables = VariableManager(loader=loader, inventory=inventory)
    play = Play.load(
        {"hosts": "all", "gather_facts": False, "roles": [role]}, variable_manager=variables, loader=loader
    )
    templar = Templar(loader=loader, variables=variables.get_vars(play=play, host=host))
    source = trust_as_template((ROLES / role / "templates" / template).read_text())
    text = templar.template(source, escape_backslashes=False, overrides={"trim_blocks": True})
    return [document for document in yaml.safe_load_all(text) if document]


def validate(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
