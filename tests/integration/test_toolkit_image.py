"""The lifecycle image (images/toolkit), built with `toolkit images build --image toolkit` and run
as the lifecycle CronJob runs it: as nobody, on a read-only root filesystem, with no HOME, and as
ServiceAccount toolkit-lifecycle through the files Kubernetes mounts in a pod.

The base is the lab's Debian 12 image (debian:12-slim needs a registry); the pinned wheels come
from PyPI. The API server is the STAND-IN (tests/standins/kube_apiserver.py) with
shells_platform's rendered settings and lifecycle RBAC, reached over the host's network.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import toolkit
from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from tests.support import eventually, gpu_cluster
from toolkit import kube, users
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

pytestmark = pytest.mark.lab

TOOLKIT_IMAGE_TAG = "localhost/toolkit:test"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="session")
def toolkit_image(lab_image: str) -> str:
    started = time.monotonic()
    result = toolkit(
        "images", "build", "--image", "toolkit", "--base", lab_image, "--tag", TOOLKIT_IMAGE_TAG, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"built {TOOLKIT_IMAGE_TAG} in {time.monotonic() - started:.0f} s")
    return TOOLKIT_IMAGE_TAG


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    server = gpu_cluster()
    documents = render("shells_platform", "shells.yaml.j2")
    documents += render("shells_platform", "toolkit-lifecycle.yaml.j2")
    for document in documents:
        server.seed(document["kind"], document)
    yield server
    server.stop()


def service_account_files(cluster: FakeApiServer, admin: kube.Kube, directory: Path) -> Path:
    """What Kubernetes mounts in the CronJob's pod for ServiceAccount toolkit-lifecycle."""
    namespace = "toolkit-lifecycle"
    admin.create({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "lifecycle-token", "namespace": namespace,
                     "annotations": {"kubernetes.io/service-account.name": "toolkit-lifecycle"}},
    })  # fmt: skip

    def token() -> str:
        found = admin.get("Secret", "lifecycle-token", namespace) or {}
        return base64.b64decode((found.get("data") or {}).get("token", "")).decode()

    assert eventually(lambda: bool(token()))
    directory.mkdir()
    (directory / "token").write_text(token())
    (directory / "ca.crt").write_bytes(cluster.ca_pem)
    (directory / "namespace").write_text(namespace)
    return directory


def test_the_image_reaps_as_the_lifecycle_account_read_only_and_without_a_home(
    toolkit_image: str, cluster: FakeApiServer, tmp_path: Path
) -> None:
    admin = kube.connect(cluster.kubeconfig(tmp_path / "admin.kubeconfig"))
    users.add(admin, "alice", 4, tmp_path / "alice.kubeconfig", None, None)
    alice = kube.connect(tmp_path / "alice.kubeconfig")
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    expired = {"metadata": {"annotations": {"toolkit.dev/expires-at": "2000-01-01T00:00:00Z"}}}
    admin.merge_patch("StatefulSet", "train", "user-alice", expired)
    before = cluster.get("StatefulSet", "train", "user-alice")
    account = service_account_files(cluster, admin, tmp_path / "serviceaccount")

    started = time.monotonic()
    run = subprocess.run(
        [
            "podman", "run", "--rm", "--read-only", "--read-only-tmpfs=false", "--user", "65534:65534",
            "--network", "host", "--unsetenv", "HOME",
            "--volume", f"{account}:{ACCOUNT}:ro",
            "--env", "KUBERNETES_SERVICE_HOST=127.0.0.1",
            "--env", f"KUBERNETES_SERVICE_PORT={cluster.port}",
            toolkit_image, "shell", "reap", "--all-users", "--dry-run",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    print(f"the container ran in {time.monotonic() - started:.1f} s")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "alice/train would be paused" in run.stdout
    assert "1 expired shell(s) found" in run.stdout
    after = cluster.get("StatefulSet", "train", "user-alice")
    assert before is not None and after is not None
    assert (after["spec"], after["metadata"].get("annotations")) == (
        before["spec"],
        before["metadata"].get("annotations"),
    )
