"""Where the project's playbooks live and where the toolkit keeps its state."""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.errors import ToolkitError

PROJECT_DIR_ENV = "TOOLKIT_PROJECT_DIR"


def project_dir() -> Path:
    """The checkout holding `playbooks/`, `roles/` and `ansible.cfg`.

    The toolkit is installed from its checkout (`pip install -e .`), so the playbooks sit next to
    the package. `TOOLKIT_PROJECT_DIR` points elsewhere, for a copy of the playbooks kept apart.
    """
    override = os.environ.get(PROJECT_DIR_ENV)
    candidate = Path(override) if override else Path(__file__).resolve().parent.parent
    if not (candidate / "playbooks" / "site.yml").is_file():
        raise ToolkitError(
            f"no playbooks/site.yml under {candidate}: set {PROJECT_DIR_ENV} to the toolkit's checkout"
        )
    return candidate


def state_dir(project: Path) -> Path:
    """Gitignored working state of this checkout: lab keys, run artifacts."""
    return project / ".cache"
