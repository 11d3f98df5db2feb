"""The two installs of one package: users' (the toolkit's wheel, no extra: `user`, `shell`,
`disk`, `cluster status`) and operators' (`pip install 'toolkit[operator]'`: Ansible and SSH for `cluster`,
`node`, `lab`, `doctor` and `inventory`).

An operator command on a user's install stops before it does anything, in one line naming the
extra, with exit 3, rather than failing midway on an import.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from toolkit.errors import BadInputError

# The import names of the operator extra's packages (pyproject.toml's optional-dependencies).
OPERATOR_MODULES = ("ansible", "ansible_runner", "paramiko", "fabric", "jinja2")
# The operator commands run the checkout's playbooks and roles, so operators install the checkout.
OPERATOR_INSTALL = "pip install -e '.[operator]' in the toolkit's checkout (./scripts/install does)"

Parameters = ParamSpec("Parameters")
Result = TypeVar("Result")


def missing_operator_modules() -> list[str]:
    """The operator extra's modules this Python cannot import (found without importing them)."""
    return [name for name in OPERATOR_MODULES if importlib.util.find_spec(name) is None]


def operator_command(command: str) -> Callable[[Callable[Parameters, Result]], Callable[Parameters, Result]]:
    """Mark `toolkit COMMAND` as needing the operator extra: refused at once without it."""

    def decorate(function: Callable[Parameters, Result]) -> Callable[Parameters, Result]:
        @functools.wraps(function)
        def checked(*args: Parameters.args, **kwargs: Parameters.kwargs) -> Result:
            missing = missing_operator_modules()
            if missing:
                raise BadInputError(
                    f"toolkit {command} is an operator command and this install lacks "
                    f"{', '.join(missing)}: install the operator extra, {OPERATOR_INSTALL}"
                )
            return function(*args, **kwargs)

        return checked

    return decorate
