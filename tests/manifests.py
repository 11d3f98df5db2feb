"""Rendering a role's manifest templates as Ansible's template module does, and validating them
against the Kubernetes OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

PROJECT = Path(__file__).resolve().parent.parent
ROLES = PROJECT / "roles"
KUBERNETES_VERSION = "1.33"


def render(role: str, template: str, **settings: Any) -> list[dict[str, Any]]:
    """The template's documents, as the role writes them for a host whose inventory sets `settings`.

    Ansible renders them in a process of its own: its plugin loader installs a process-wide
    import hook, which the tests that import the collection's modules directly must not meet.
    """
    request = json.dumps({"role": role, "template": template, "settings": settings})
    completed = subprocess.run(
        [sys.executable, "-m", "tests.manifests", request],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return [document for document in yaml.safe_load_all(completed.stdout) if document]


def render_text(role: str, template: str, settings: dict[str, Any]) -> str:
    """Ansible itself does the work: a play of the role on one host gives the variables (the
    defaults of the role and of its dependencies, the settings, then the role's vars/main.yml),
    and its Templar renders the template with them, lazily templating each variable it reads and
    with trim_blocks on, as the template module does. Lookups search the role's directory."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play import Play
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar, trust_as_template
    from ansible.vars.manager import VariableManager

    init_plugin_loader()  # as ansible-playbook does first: the roles' tasks name modules by FQCN
    loader = DataLoader()
    loader.set_basedir(str(PROJECT))
    inventory = InventoryManager(loader=loader, sources=["manifests-host,"])
    host = inventory.get_host("manifests-host")
    for name, value in settings.items():
        host.set_variable(name, value)
    variables = VariableManager(loader=loader, inventory=inventory)
    play = Play.load(
        {"hosts": "all", "gather_facts": False, "roles": [role]}, variable_manager=variables, loader=loader
    )
    # As a role's task does, lookups search the role's own directory (its files/) first.
    found = {**variables.get_vars(play=play, host=host), "ansible_search_path": [str(ROLES / role)]}
    templar = Templar(loader=loader, variables=found)
    source = trust_as_template((ROLES / role / "templates" / template).read_text())
    return str(templar.template(source, escape_backslashes=False, overrides={"trim_blocks": True}))


def validate(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


if __name__ == "__main__":
    sys.stdout.write(render_text(**json.loads(sys.argv[1])))
