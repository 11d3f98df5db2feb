"""Building the toolkit's images with whichever builder the machine has: the GPU shell
(images/shell) and the lifecycle image (images/toolkit), the toolkit's own CLI for the jobs the
cluster runs itself."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInputError, MissingToolError, ToolkitError
from toolkit.image_names import DEFAULT_TAGS, SHELL_IMAGE, TOOLKIT_IMAGE, Image

__all__ = ["DEFAULT_TAGS", "SHELL_IMAGE", "TOOLKIT_IMAGE", "Image"]

BUILDERS = ("podman", "buildah", "docker")

# images/toolkit's Python is Debian 12's CPython 3.11 on x86_64: pip fetches binary wheels for it.
TOOLKIT_PYTHON = "3.11"
# The shell image's JupyterLab goes on the base's own Python: 3.10 on NVIDIA's CUDA image (Ubuntu
# 22.04), 3.11 on Debian 12; its requirements pin both, and both are fetched.
SHELL_PYTHONS = ("3.10", "3.11")


def wheel_platform(python: str) -> tuple[str, ...]:
    """pip's options for binary wheels of one CPython on glibc x86_64 (manylinux 2.28 and older:
    Ubuntu 22.04's and Debian 12's glibc are newer)."""
    abi = "cp" + python.replace(".", "")
    platforms = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
    return (
        "--only-binary=:all:",
        *(option for platform in platforms for option in ("--platform", platform)),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    )


# What setuptools reads to build the toolkit's wheel, copied out of the checkout so the build
# leaves no build/ behind there (nor ships a stale module from one).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "toolkit")

Report = Callable[[str], None]


@dataclass(frozen=True)
class Pin:
    """One requirement of images/toolkit/requirements.txt: an exact version and its wheels' sha256s."""

    name: str
    version: str
    hashes: frozenset[str]


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


def pinned_wheels(requirements: Path) -> list[Pin]:
    """The pins of a requirements file written for `pip install --require-hashes`."""
    pins = []
    for line in _requirement_lines(requirements):
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        pinned = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", requirement)
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", requirement))
        if not pinned or not hashes:
            raise ToolkitError(f"{requirements}: {requirement!r} is not an exact version with its sha256")
        pins.append(Pin(pinned[1], pinned[2], hashes))
    return pins


def _requirement_lines(requirements: Path) -> list[str]:
    """The requirements one per line: comment lines dropped first (pip joins no line to one), then
    each continued line joined to the next."""
    kept = [line for line in requirements.read_text().splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(kept).replace("\\\n", " ").splitlines()


def _project_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _release(wheel: Path) -> tuple[str, str]:
    """A wheel file's project and version, from its name (`name-version-...-platform.whl`)."""
    name, _, rest = wheel.name.partition("-")
    return _project_name(name), rest.partition("-")[0]


def gather_wheels(requirements: Path, source: Path, target: Path) -> None:
    """Copy into `target` the wheel of each pin from `source`, the one with a pinned sha256."""
    if not source.is_dir():
        raise BadInputError(f"--wheels {source}: no such directory")
    wheels = sorted(source.glob("*.whl"))
    for pin in pinned_wheels(requirements):
        candidates = (wheel for wheel in wheels if _release(wheel) == (_project_name(pin.name), pin.version))
        # A pin may name several wheels (one per Python): each of them is copied.
        found = [
            wheel for wheel in candidates if hashlib.sha256(wheel.read_bytes()).hexdigest() in pin.hashes
        ]
        if not found:
            raise BadInputError(
                f"--wheels {source} has no wheel of {pin.name}=={pin.version} with the sha256 "
                f"{requirements} pins (it needs every pinned wheel, for each Python the file names)"
            )
        for wheel in found:
            shutil.copy(wheel, target / wheel.name)


def download_wheels(requirements: Path, target: Path, log: Path, python: str = TOOLKIT_PYTHON) -> None:
    """Download the pinned wheels for one CPython into `target`; pip checks each one against its
    sha256. pip evaluates markers for the Python it runs on, whatever --python-version says, so
    the pins are first chosen for `python` (for_python)."""
    with tempfile.TemporaryDirectory(prefix="toolkit-requirements-") as scratch:
        chosen = Path(scratch) / "requirements.txt"
        chosen.write_text(for_python(requirements, python))
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--require-hashes",
                "--no-deps",
                *wheel_platform(python),
                "--dest",
                str(target),
                "--requirement",
                str(chosen),
            ],
            log,
            f"downloading the pinned wheels for Python {python}",
        )


_PYTHON_MARKER = re.compile(r"""python_version\s*(<|<=|==|>=|>|!=)\s*["'](\d+)\.(\d+)["']""")
_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "!=": lambda a, b: a != b,
}


def for_python(requirements: Path, python: str) -> str:
    """The requirements for one CPython: each pin whose marker (only `python_version OP "X.Y"`)
    holds for it, without the marker."""
    version = tuple(int(part) for part in python.split("."))
    chosen = []
    for line in _requirement_lines(requirements):
        requirement, _, marker = line.split("#", 1)[0].partition(";")
        if not requirement.strip():
            continue
        hashes = " ".join(re.findall(r"--hash=\S+", marker)) if marker else ""
        condition = marker.split("--hash", 1)[0].strip() if marker else ""
        if condition:
            found = _PYTHON_MARKER.fullmatch(condition)
            if not found:
                raise ToolkitError(f'{requirements}: marker {condition!r} is not python_version OP "X.Y"')
            wanted = (int(found[2]), int(found[3]))
            if not _COMPARE[found[1]](version, wanted):
                continue
        chosen.append(f"{requirement.strip()} {hashes}".strip())
    return "\n".join(chosen) + "\n"


def build_own_wheel(project: Path, target: Path, log: Path) -> None:
    """The toolkit's wheel, built with the running interpreter from a copy of its sources."""
    with tempfile.TemporaryDirectory(prefix="toolkit-wheel-") as scratch:
        source = Path(scratch)
        for name in WHEEL_SOURCES:
            if (project / name).is_dir():
                shutil.copytree(project / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(project / name, source / name)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--wheel-dir",
                str(target),
                str(source),
            ],
            log,
            "building the toolkit's wheel",
        )


def _run(command: list[str], log: Path, what: str | None = None) -> None:
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        doing = what or f"`{command[0]} {command[1]}`"
        raise ToolkitError(f"{doing} failed (exit {result.returncode}); see {log}")


def build(
    project: Path,
    report: Report,
    *,
    image: Image = Image.shell,
    base: str | None,
    tag: str,
    ttyd: Path | None,
    wheels: Path | None = None,
    builder: str,
    log: Path,
) -> None:
    """Build images/<image> as `tag`. For the shell, a local ttyd must match the sha256 the
    Dockerfile pins; `wheels` holds the pinned wheels (the toolkit's, or the shell's JupyterLab),
    else they are downloaded."""
    if image is Image.toolkit and ttyd is not None:
        raise BadInputError("--ttyd is for the shell image: the toolkit image has no ttyd")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    if image is Image.toolkit:
        _build_toolkit(project, report, base=base, tag=tag, wheels=wheels, builder=builder, log=log)
        return
    recipe = project / "images" / "shell"
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
        requirements, target = recipe / "jupyter-requirements.txt", context / "vendor" / "wheels"
        target.mkdir()
        if wheels is None:
            for python in SHELL_PYTHONS:
                report(f"downloading JupyterLab's pinned wheels for Python {python}")
                download_wheels(requirements, target, log, python)
        else:
            report(f"taking JupyterLab's pinned wheels from {wheels}")
            gather_wheels(requirements, wheels, target)
        _build_context(context, report, base=base, tag=tag, builder=builder, log=log)


def _build_toolkit(
    project: Path, report: Report, *, base: str | None, tag: str, wheels: Path | None, builder: str, log: Path
) -> None:
    with tempfile.TemporaryDirectory(prefix="toolkit-image-build-") as scratch:
        recipe, context = project / "images" / "toolkit", Path(scratch) / "toolkit"
        shutil.copytree(recipe, context)
        requirements, target = recipe / "requirements.txt", context / "wheels"
        target.mkdir()
        if wheels is None:
            report("downloading the pinned wheels")
            download_wheels(requirements, target, log)
        else:
            report(f"taking the pinned wheels from {wheels}")
            gather_wheels(requirements, wheels, target)
        report("building the toolkit's wheel")
        build_own_wheel(project, target, log)
        _build_context(context, report, base=base, tag=tag, builder=builder, log=log)


def _build_context(
    context: Path, report: Report, *, base: str | None, tag: str, builder: str, log: Path
) -> None:
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
