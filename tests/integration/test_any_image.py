"""Any image as a shell, end to end on real processes: `toolkit shell create --image` against the
STAND-IN API server, whose STAND-IN kubelet (tests/standins/podman_kubelet.py) runs the pod's init
container (the shell image's toolbox, copied into an emptyDir) and then the user's image, as real
podman containers. A real `ssh` logs in through the ssh config the toolkit wrote.

The images: a Debian minbase with only python3-minimal (no sshd, ttyd or sudo) whose PATH puts
its own directory first; the same with its shells marked as another architecture's; and one with
no /bin/sh at all (tests/integration/conftest.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import toolkit
from tests.integration.test_shell_end_to_end import (
    alice_with_a_key,
    cluster,  # noqa: F401 (the fixture, found by name)
    ssh,
)
from tests.standins.kube_apiserver import FakeApiServer

pytestmark = pytest.mark.lab


ALLOWED_IMAGES = (
    "localhost/toolkit-test-minimal,localhost/toolkit-test-aarch64-shells,localhost/toolkit-test-no-shell"
)


@pytest.fixture
def site(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FakeApiServer, Path]:
    """test_shell_end_to_end's cluster, limited to the test images' registries, with alice added;
    her kubeconfig."""
    server, admin = request.getfixturevalue("cluster")
    shells = server.get("ConfigMap", "shells", "toolkit-system")
    assert shells is not None
    server.put({**shells, "data": {**shells["data"], "allowedImages": ALLOWED_IMAGES}})
    alice, _ = alice_with_a_key(admin, tmp_path, gpus=2)
    return server, alice


def create(tmp_path: Path, kubeconfig: Path, *options: str) -> subprocess.CompletedProcess[str]:
    key = tmp_path / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return toolkit(
        "shell", "create", "train", "--ssh-key", f"{key}.pub", "--identity-file", str(key),
        "--timeout", "120", *options, "--kubeconfig", str(kubeconfig),
        env={"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")},
    )  # fmt: skip


def users_objects(server: FakeApiServer) -> set[tuple[str, ...]]:
    return {key for key in server.objects if key[1] == "user-alice" and key[0] != "events"}


def test_a_minimal_image_without_sshd_becomes_a_shell_with_its_own_environment(
    site: tuple[FakeApiServer, Path], tmp_path: Path, minimal_image: str
) -> None:
    server, alice = site
    created = create(tmp_path, alice, "--image", minimal_image)
    assert created.returncode == 0, created.stdout + created.stderr
    found = re.search(r"ssh -F (\S+) (toolkit-alice-train)", created.stdout)
    assert found, created.stdout
    login = (found.group(1), found.group(2))

    # A command sees the image's PATH and its python3; the toolbox is nowhere on it.
    ran = ssh(*login, "command -v python3; python3 --version; echo $PATH; echo $IMAGE_FLAVOUR; id -un")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    python, version, path, flavour, user = ran.stdout.split("\n")[:5]
    assert python == "/opt/image-python/bin/python3"
    assert re.fullmatch(r"Python 3\.\d+\.\d+", version), version
    assert path.startswith("/opt/image-python/bin:") and "shell-toolbox" not in path, path
    assert (flavour, user) == ("minimal", "alice")
    # A login shell too (Debian's /etc/profile resets PATH), with the banner an SSH login shows.
    login_shell = ssh(*login, "", options=["-tt"], stdin="echo PATH=$PATH; exit\n")
    assert "GPU shell of alice." in login_shell.stdout and "expires at" in login_shell.stdout
    assert "PATH=/opt/image-python/bin:" in login_shell.stdout, login_shell.stdout
    # The image really has no sshd: it is the toolbox's, mounted read-only (not even root in the
    # shell changes it) and not the user's to write.
    toolbox = ssh(*login, "test ! -e /usr/sbin/sshd && grep ' /opt/shell-toolbox ' /proc/mounts")
    assert toolbox.returncode == 0 and " ro," in toolbox.stdout, toolbox.stdout + toolbox.stderr
    written = ssh(*login, "touch /opt/shell-toolbox/bin/sshd")
    assert written.returncode != 0, written.stdout
    # The image's USER (nobody) did not stop the entrypoint, which ran as root without sourcing
    # the image's BASH_ENV; the user's own scripts do source it.
    sourced = ssh(*login, "bash -c true; ls /tmp | grep bash-env-sourced-by-")
    assert sourced.stdout.split() == ["bash-env-sourced-by-1000"], sourced.stdout + sourced.stderr
    # The home is the user's persistent volume.
    wrote = ssh(*login, "echo kept > ~/notes && stat -c %U ~/notes")
    assert wrote.stdout.strip() == "alice", wrote.stdout + wrote.stderr

    statefulset = server.get("StatefulSet", "train", "user-alice")
    assert statefulset is not None
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == minimal_image
    assert [c["name"] for c in pod["initContainers"]] == ["toolbox"]


@pytest.mark.parametrize(
    ("image_fixture", "cause"),
    [
        (
            "other_architecture_image",
            r"the image's /bin/bash does not run on this node \(Exec format error\)",
        ),
        ("shell_less_image", r"the image has no /bin/sh"),
    ],
)
def test_an_image_that_cannot_be_a_shell_fails_the_create_in_one_line_and_leaves_nothing(
    site: tuple[FakeApiServer, Path],
    tmp_path: Path,
    image_fixture: str,
    cause: str,
    request: pytest.FixtureRequest,
) -> None:
    server, alice = site
    image = request.getfixturevalue(image_fixture)
    before = users_objects(server)
    created = create(tmp_path, alice, "--image", image)
    assert created.returncode != 0, created.stdout
    assert created.stderr.count("\n") == 1, created.stderr
    assert re.search(
        rf"shell train cannot start: container shell exited with code 64: .*{cause}", created.stderr
    )
    assert users_objects(server) == before
    left = subprocess.run(
        ["podman", "ps", "--all", "--filter", "name=standin-kubelet-user-alice-train",
         "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert left.stdout.strip() == ""


def test_an_image_from_a_registry_the_site_does_not_allow_is_refused_before_anything_is_made(
    site: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, alice = site
    before = users_objects(server)
    created = create(tmp_path, alice, "--image", "nvcr.io/nvidia/pytorch:24.08-py3")
    assert created.returncode == 3, created.stdout + created.stderr
    assert created.stderr.count("\n") == 1, created.stderr
    assert "runs users' images only from localhost/toolkit-test-minimal" in created.stderr
    assert users_objects(server) == before
