"""Where the project's playbooks live and where the toolkit keeps its state."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from toolkit.errors import BadInputError, ToolkitError

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


def reserve_private_file(path: Path, what: str, overwrite: bool) -> bool:
    """Make sure `path` can be written before a command changes anything: create it empty (0600)
    or, with `overwrite`, open the existing file for writing. Whether it was created here, so a
    failed command removes only what it made.

    An existing file is never replaced without `overwrite`; a directory, a path under a file, in
    /proc or anywhere read-only is a one-line error.
    """
    if path.is_symlink():
        # Written through, a link would put the token in whatever file it points at.
        raise BadInputError(f"{what} {path} is a symbolic link: name the file itself")
    if path.is_dir():
        raise BadInputError(f"{what} {path} is a directory: name the file to write")
    if path.exists() and not overwrite:
        raise BadInputError(f"{what} {path} exists: pass --force to overwrite it")
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW
    flags |= 0 if overwrite and path.exists() else os.O_CREAT | os.O_EXCL
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        raise BadInputError(f"cannot write {what} {path}: {error.strerror}") from None
    created = bool(flags & os.O_CREAT)
    regular = stat.S_ISREG(os.fstat(descriptor).st_mode)
    os.close(descriptor)
    if not regular:
        raise BadInputError(f"{what} {path} is not a regular file")
    return created


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never briefly readable by others, in a 0700 directory
    when it has to make one. An existing file is narrowed to 0600 too."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
