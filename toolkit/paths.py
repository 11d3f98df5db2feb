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
    """Gitignored working state of this checkout: lab keys, run artifacts, cached facts, build logs."""
    return project / ".cache"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never briefly readable by others, in a 0700 directory
    when it has to make one. An existing file is narrowed to 0600 too."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
