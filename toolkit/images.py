"""Building the GPU shell image (images/shell) with whichever builder the machine has."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import BadInputError, MissingToolError, ToolkitError

BUILDERS = ("podman", "buildah", "docker")
# The name `toolkit images build` gives the shell image, and the one shells run unless the site's
# shells_platform_image names another (its default is this name too; a unit test ties them).
SHELL_IMAGE = "localhost/toolkit-shell:latest"

Report = Callable[[str], None]


def find_builder(preferred: str | None = None) -> str:
    candidates = (preferred,) if preferred else BUILDERS
    for name in candidates:
        if name and shutil.which(name):
            return name
    wanted = preferred or " or ".join(BUILDERS)
    raise MissingToolError(f"no image builder found ({wanted}): run `apt-get install -y podman`")


def pinned_ttyd_sha256(dockerfile: Path) -> str:
    match = re.search(r"^ARG TTYD_SHA256=([0-9a-f]{64})$", dockerfile.read_text(), re.MULTILINE)
    if not match:
        raise ToolkitError(f"{dockerfile} pins no TTYD_SHA256")
    return match.group(1)


def _run(command: list[str], log: Path) -> None:
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise ToolkitError(f"`{command[0]} {command[1]}` failed (exit {result.returncode}); see {log}")


def build(
    project: Path,
    report: Report,
    *,
    base: str | None,
    tag: str,
    ttyd: Path | None,
    builder: str,
    log: Path,
) -> None:
    """Build images/shell as `tag`. A local ttyd must match the sha256 the Dockerfile pins."""
    recipe = project / "images" / "shell"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="toolkit-shell-build-") as scratch:
        context = Path(scratch) / "shell"
        shutil.copytree(recipe, context, ignore=shutil.ignore_patterns("ttyd.x86_64"))
        if ttyd is not None:
            if not ttyd.is_file():
                raise BadInputError(f"--ttyd {ttyd}: no such file")
            digest = hashlib.sha256(ttyd.read_bytes()).hexdigest()
            expected = pinned_ttyd_sha256(recipe / "Dockerfile")
            if digest != expected:
                raise BadInputError(f"--ttyd {ttyd} has sha256 {digest}, not the pinned {expected}")
            shutil.copy(ttyd, context / "vendor" / "ttyd.x86_64")
        command = [builder, "build", "--tag", tag, "--file", str(context / "Dockerfile")]
        if base:
            command += ["--build-arg", f"BASE_IMAGE={base}"]
        report(f"building {tag} with {builder}{f' from {base}' if base else ''}")
        _run([*command, str(context)], log)


def push(builder: str, tag: str, registry: str, log: Path) -> str:
    """Push `tag` as REGISTRY/<name>:<tag>; returns the pushed reference."""
    name_and_tag = tag.rsplit("/", 1)[-1]
    target = f"{registry.rstrip('/')}/{name_and_tag}"
    _run([builder, "tag", tag, target], log)
    _run([builder, "push", target], log)
    return target


def export(builder: str, tag: str, file: Path, log: Path) -> None:
    """Write an image tarball that k3s imports from /var/lib/rancher/k3s/agent/images/."""
    if builder == "buildah":
        _run([builder, "push", tag, f"docker-archive:{file}:{tag}"], log)
    else:
        _run([builder, "save", "--output", str(file), tag], log)
