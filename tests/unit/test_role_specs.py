"""Each role's defaults are written twice: the values in defaults/main.yml (what Ansible uses) and
the documented defaults in meta/argument_specs.yml (what validation and ansible-doc show). These
tests fail when the two disagree. Templated defaults are compared as the literal strings they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_NAMES = sorted(path.name for path in ROLES.iterdir() if path.is_dir())


def role_defaults(role: str) -> dict[str, Any]:
    path = ROLES / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def entry_points(role: str) -> dict[str, dict[str, Any]]:
    """Each entry point's options, by entry point name."""
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    return {name: spec.get("options") or {} for name, spec in specs.items()}


def test_every_role_has_argument_specs() -> None:
    assert "k3s" in ROLE_NAMES
    assert [role for role in ROLE_NAMES if not (ROLES / role / "meta" / "argument_specs.yml").is_file()] == []


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_default_is_an_option_of_the_main_entry_point(role: str) -> None:
    assert sorted(set(role_defaults(role)) - set(entry_points(role)["main"])) == []


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_entry_point_states_the_role_defaults_and_no_others(role: str) -> None:
    defaults = role_defaults(role)
    disagreements = [
        f"{entry}.{name}: defaults/main.yml has {defaults.get(name, 'no default')!r}, "
        f"meta/argument_specs.yml has {option.get('default', 'no default')!r}"
        for entry, options in entry_points(role).items()
        for name, option in options.items()
        if (name in defaults or "default" in option) and defaults.get(name, ...) != option.get("default", ...)
    ]
    assert disagreements == []
