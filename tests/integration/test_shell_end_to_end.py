"""End to end on real processes: `toolkit user add` and `toolkit shell ...` against the STAND-IN API
server, whose STAND-IN kubelet (tests/standins/podman_kubelet.py) runs each pod as a real podman
container of the shell image: the StatefulSet's env, exactly its capabilities, no-new-privileges,
the Secret the toolkit generated, and the home volume. A pod is Ready only when sshd answers.

A real `ssh` logs in through the ssh config the toolkit wrote, with strict host-key checking
against the key the toolkit pinned; the web terminal answers over HTTPS at the shell's own host
name with the site's certificate, and takes the printed credential; the home survives a pause
and a resume; and `toolkit cluster verify`'s shell check passes against it.

What stands in: the API server and the kubelet (podman instead of containerd, no GPU runtime),
k3s's ingress controller (tests/standins/ingress_controller.py, in Traefik's place), DNS (the
test connects to the controller's loopback port, naming the shell's host in SNI and Host), and
the node's address (127.0.0.1, from the shells' sshHost setting).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import toolkit
from tests.standins.ingress_controller import IngressController
from tests.standins.kube_apiserver import FakeApiServer
from tests.standins.podman_kubelet import PodmanKubelet
from tests.support import eventually
from toolkit import kube, verify

pytestmark = pytest.mark.lab


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


WEB_DOMAIN = "shells.test"


def site_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and the site's certificate for *.WEB_DOMAIN it signed: (ca, certificate, key)."""

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("site CA")).issuer_name(name("site CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(name(f"*.{WEB_DOMAIN}")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{WEB_DOMAIN}")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def https_status(url: str, port: int, ca: Path, credential: str | None = None) -> int:
    """GET `url` through the ingress on loopback `port`: the certificate must be valid for the
    URL's host and signed by `ca`, as a browser would require."""
    parts = urlsplit(url)
    host, target = parts.hostname or "", (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = ssl.create_default_context(cafile=str(ca))
    auth = f"Authorization: Basic {base64.b64encode(credential.encode()).decode()}\r\n" if credential else ""
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        status_line = tls.recv(4096).split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1])


@pytest.fixture
def cluster(tmp_path: Path, shell_image: str) -> Iterator[tuple[FakeApiServer, Path]]:
    server = FakeApiServer(first_node_port=free_port(), kubelet=PodmanKubelet(tmp_path / "kubelet")).start()
    server.add_gpu_node("gpu-1")
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    server.seed("Namespace", {"metadata": {"name": "toolkit-system"}})
    labels = {"toolkit.dev/shells-config": "true"}
    # The stand-in kubelet's pods are on podman's network: the cluster's pod network here.
    network = subprocess.run(
        ["podman", "network", "inspect", "podman", "--format", "{{range .Subnets}}{{.Subnet}},{{end}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip(",\n")  # fmt: skip
    server.seed("ConfigMap", {
        "metadata": {"name": "shells", "namespace": "toolkit-system", "labels": labels},
        "data": {"image": shell_image, "sshHost": "127.0.0.1", "webDomain": WEB_DOMAIN, "podCidrs": network,
                 "sharedStorage": "10Gi"},
    })  # fmt: skip
    try:
        yield server, server.kubeconfig(tmp_path / "admin.kubeconfig")
    finally:
        server.stop()


def alice_with_a_key(admin: Path, tmp_path: Path, gpus: int = 1) -> tuple[Path, Path]:
    """`user add alice`, and an SSH key of hers: her kubeconfig and the private key."""
    kubeconfig = tmp_path / "alice.kubeconfig"
    added = toolkit(
        "user", "add", "alice", "--max-gpus", str(gpus), "-o", str(kubeconfig), "--kubeconfig", str(admin)
    )
    assert added.returncode == 0, added.stderr
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return kubeconfig, key


def ssh(
    config: str, alias: str, command: str, stdin: str | None = None, options: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", *(options or []),
         alias, command],
        input=stdin, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_create_login_pause_resume_delete_on_a_real_container(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")}
    user_kubeconfig, key = alice_with_a_key(admin, tmp_path)
    user = ["--kubeconfig", str(user_kubeconfig)]
    keys = ["--ssh-key", f"{key}.pub", "--identity-file", str(key)]
    created = toolkit("shell", "create", "train", "--web", *keys, "--timeout", "120", *user, env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    found = re.search(r"ssh -F (\S+) (toolkit-alice-train)", created.stdout)
    web = re.search(
        r"web terminal: (https://train--alice\.shells\.test/)\s+user:password (\S+)", created.stdout
    )
    assert found and web, created.stdout
    assert "plain HTTP" not in created.stdout
    config, alias = found.group(1), found.group(2)

    login = ssh(config, alias, "id -un; echo kept > ~/note.txt; cat /etc/motd")
    assert login.returncode == 0, login.stderr
    assert login.stdout.splitlines()[0] == "alice" and "expires at" in login.stdout
    ca, certificate, key = site_certificate(tmp_path)
    with IngressController(server, server.kubelet, certificate, key) as ingress:
        url, credential = web.group(1), web.group(2)
        assert https_status(url, ingress.port, ca) == 401
        assert https_status(url, ingress.port, ca, credential) == 200
        assert https_status(f"https://train--bob.{WEB_DOMAIN}/", ingress.port, ca, credential) == 404
        (tmp_path / "another-site").mkdir()
        other_ca, _, _ = site_certificate(tmp_path / "another-site")
        with pytest.raises(ssl.SSLCertVerificationError):
            https_status(url, ingress.port, other_ca)

    # extend and add-key reach the running shell through its Secret: same container, sessions go on.
    container = "standin-kubelet-user-alice-train-0"

    def started() -> str:
        return subprocess.run(
            ["podman", "inspect", "--format", "{{.State.StartedAt}}", container],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    before = started()
    session = subprocess.Popen(
        ["ssh", "-F", config, "-o", "BatchMode=yes", alias, "sleep 600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        extended = toolkit("shell", "extend", "train", "--for", "2h", *user, env=env)
        assert extended.returncode == 0, extended.stderr
        new_expiry = re.search(r"now expires (\S+ \S+) UTC", extended.stdout)
        assert new_expiry, extended.stdout
        wanted = "This shell expires at " + new_expiry.group(1).replace(" ", "T")
        assert eventually(lambda: wanted in ssh(config, alias, "cat /etc/motd").stdout), wanted
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "bob")], check=True
        )
        added = toolkit("shell", "add-key", "train", "--ssh-key", f"{tmp_path}/bob.pub", *user, env=env)
        assert added.returncode == 0 and "within a minute" in added.stdout, added.stderr
        as_bob = ["-o", f"IdentityFile={tmp_path}/bob", "-o", "IdentitiesOnly=yes"]
        assert eventually(lambda: ssh(config, alias, "true", options=as_bob).returncode == 0)
        assert session.poll() is None and "sleep 600" in ssh(config, alias, "ps -eo args").stdout
        assert started() == before
    finally:
        session.kill()

    # The lifecycle's run, as the cluster's CronJob makes it: the shell's agent answers at its pod's
    # address, and a shell in use a moment ago is not idle.
    lifecycle_run = toolkit("shell", "reap", "-A", "--idle", "--kubeconfig", str(admin))
    assert lifecycle_run.returncode == 0, lifecycle_run.stdout + lifecycle_run.stderr
    assert "0 idle shell(s) paused of 1 checked" in lifecycle_run.stdout, lifecycle_run.stdout
    assert "not checked" not in lifecycle_run.stdout

    # `shell connect` runs ssh through the same config; with no terminal it reads commands from stdin.
    connected = toolkit("shell", "connect", "train", *user, env=env, stdin="cat ~/note.txt\n")
    assert connected.returncode == 0, connected.stderr
    assert "kept" in connected.stdout

    assert toolkit("shell", "pause", "train", *user, env=env).returncode == 0
    assert ssh(config, alias, "true").returncode != 0  # the container is gone
    # `connect` on a paused shell resumes it, with its progress on stderr, then logs in.
    resumed = toolkit(
        "shell", "connect", "train", "--timeout", "120", *user, env=env, stdin="cat ~/note.txt\n"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "shell train: resuming" in resumed.stderr and "kept" in resumed.stdout, (
        resumed.stdout + resumed.stderr
    )
    again = ssh(config, alias, "cat ~/note.txt")  # a new container: same pinned host key, same home
    assert again.returncode == 0 and again.stdout == "kept\n", again.stderr

    known_hosts = Path(config).parent / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    forged = (tmp_path / "other.pub").read_text().split()[:2]
    pinned = known_hosts.read_text()
    known_hosts.write_text(f"{alias} {forged[0]} {forged[1]}\n")
    refused = ssh(config, alias, "true")
    assert refused.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    known_hosts.write_text(pinned)

    deleted = toolkit("shell", "delete", "train", "--yes", *user, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert server.list("Pod", "user-alice") == [] and server.list("Ingress", "user-alice") == []
    assert alias not in Path(config).read_text()


def test_disks_and_the_shared_area_follow_the_user_from_shell_to_shell(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")}
    user_kubeconfig, key = alice_with_a_key(admin, tmp_path, gpus=2)
    user = ["--kubeconfig", str(user_kubeconfig)]
    keys = ["--ssh-key", f"{key}.pub", "--identity-file", str(key), "--timeout", "120"]
    logins: dict[str, tuple[str, str]] = {}
    for name, options in (("one", ["--forward-agent"]), ("two", [])):
        created = toolkit("shell", "create", name, *keys, *options, *user, env=env)
        assert created.returncode == 0, created.stdout + created.stderr
        found = re.search(rf"ssh -F (\S+) (toolkit-alice-{name})", created.stdout)
        assert found, created.stdout
        logins[name] = (found.group(1), found.group(2))

    # /shared is the same volume in both shells, and the user's own.
    wrote = ssh(*logins["one"], "echo from-one > /shared/data.txt && echo mine > ~/note.txt")
    assert wrote.returncode == 0, wrote.stderr
    assert ssh(*logins["two"], "cat /shared/data.txt").stdout == "from-one\n"

    # --forward-agent: the shell made with it gets the user's agent; connect -A is refused on another.
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    agent_env = dict(re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", agent))
    try:
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, **agent_env}, check=True)
        forwarded = subprocess.run(
            ["ssh", "-F", logins["one"][0], "-o", "BatchMode=yes", logins["one"][1], "ssh-add -l"],
            capture_output=True, text=True, timeout=30, env={**os.environ, **agent_env}, check=False,
        )  # fmt: skip
        assert forwarded.returncode == 0, forwarded.stdout + forwarded.stderr
        assert "ED25519" in forwarded.stdout, forwarded.stdout
        refused = toolkit("shell", "connect", "two", "-A", *user, env={**env, **agent_env}, stdin="true\n")
        assert refused.returncode == 3 and "made without --forward-agent" in refused.stderr, refused.stderr
    finally:
        subprocess.run(["kill", agent_env["SSH_AGENT_PID"]], check=False)

    # A home in use is refused; once its shell is deleted it is a disk that mounts in a new shell.
    in_use = toolkit("disk", "delete", "one-home", "--yes", *user, env=env)
    assert in_use.returncode != 0 and "in use by shell one (ready)" in in_use.stderr, in_use.stderr
    assert len(in_use.stderr.strip().splitlines()) == 1
    assert toolkit("shell", "delete", "one", "--yes", *user, env=env).returncode == 0
    listed = toolkit("disk", "list", "--output", "json", *user, env=env)
    assert listed.returncode == 0, listed.stderr
    kept = {disk["name"]: disk for disk in json.loads(listed.stdout)}
    assert kept["one-home"]["used_by"] == [] and kept["one-home"]["last_used"]
    assert kept["shared"]["used_by"] == ["shell two (ready)"]
    created = toolkit("shell", "create", "three", "--disk", "one-home", *keys, *user, env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    three = re.search(r"ssh -F (\S+) (toolkit-alice-three)", created.stdout)
    assert three, created.stdout
    back = ssh(three.group(1), three.group(2), "cat ~/note.txt /shared/data.txt")
    assert back.returncode == 0 and back.stdout == "mine\nfrom-one\n", back.stderr
    assert server.get("PersistentVolumeClaim", "three-home", "user-alice") is None

    table = toolkit("disk", "list", *user, env=env)
    assert re.search(r"one-home .* shell three \(ready\)", table.stdout), table.stdout
    for name in ("two", "three"):
        assert toolkit("shell", "delete", name, "--yes", *user, env=env).returncode == 0
    gone = toolkit("disk", "delete", "one-home", "--yes", *user, env=env)
    assert gone.returncode == 0, gone.stderr
    assert server.get("PersistentVolumeClaim", "one-home", "user-alice") is None


def test_sudo_where_the_operator_allows_it_and_nowhere_else(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")}
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    keys = ["--ssh-key", f"{key}.pub", "--identity-file", str(key), "--timeout", "120"]
    kubeconfigs = {}
    for name, sudo in (("alice", ["--sudo"]), ("bob", [])):
        kubeconfigs[name] = tmp_path / f"{name}.kubeconfig"
        added = toolkit(
            "user", "add", name, *sudo, "--max-gpus", "2", "-o", str(kubeconfigs[name]),
            "--kubeconfig", str(admin),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    logins = {}
    for name, options in (("root", ["--sudo"]), ("plain", [])):
        created = toolkit(
            "shell", "create", name, *keys, *options, "--kubeconfig", str(kubeconfigs["alice"]), env=env
        )
        assert created.returncode == 0, created.stdout + created.stderr
        found = re.search(rf"ssh -F (\S+) (toolkit-alice-{name})", created.stdout)
        assert found, created.stdout
        logins[name] = (found.group(1), found.group(2))
    # Root through sudo, within the shell's capabilities: packages' files are root's to write.
    root = ssh(*logins["root"], "sudo -n id -u && sudo -n touch /usr/local/bin/mine && id -u")
    assert root.returncode == 0 and root.stdout.split() == ["0", "1000"], root.stdout + root.stderr
    plain = ssh(*logins["plain"], "sudo -n true")
    assert plain.returncode != 0, plain.stdout
    before = {key for key in server.objects if key[1] == "user-bob" and key[0] != "events"}
    refused = toolkit(
        "shell", "create", "train", *keys, "--sudo", "--kubeconfig", str(kubeconfigs["bob"]), env=env
    )
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "bob is not one of them" in refused.stderr, refused.stderr
    assert {key for key in server.objects if key[1] == "user-bob" and key[0] != "events"} == before


def test_jupyterlab_answers_over_https_only_with_its_token_and_through_ssh(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")}
    alice, key = alice_with_a_key(admin, tmp_path)
    created = toolkit(
        "shell", "create", "lab", "--jupyter", "--ssh-key", f"{key}.pub", "--identity-file", str(key),
        "--timeout", "120", "--kubeconfig", str(alice), env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    web = re.search(r"web terminal: https://lab--alice\.shells\.test/\s+user:password (\S+)", created.stdout)
    jupyter = re.search(r"JupyterLab: (https://lab--alice\.shells\.test/jupyter/lab)\n", created.stdout)
    token = re.search(r"JupyterLab's token: (\S+)", created.stdout)
    tunnel = re.search(
        r"or through SSH: (ssh -F \S+ -L 8888:127\.0\.0\.1:8888 toolkit-alice-lab), then "
        r"http://127\.0\.0\.1:8888/jupyter/lab\n",
        created.stdout,
    )
    assert web and jupyter and token and tunnel and "token is shown only now" in created.stdout, (
        created.stdout
    )
    credential, url, token = web.group(1), jupyter.group(1), token.group(1)
    assert f"token={token}" not in created.stdout  # never in a URL: proxies and browsers log those
    status = url.replace("/jupyter/lab", "/jupyter/api/status")
    ca, certificate, site_key = site_certificate(tmp_path)
    with IngressController(server, server.kubelet, certificate, site_key) as ingress:
        # The shell's credential first, whatever Jupyter's own config says; then Jupyter's token.
        assert eventually(
            lambda: https_status(f"{status}?token={token}", ingress.port, ca, credential) == 200
        )
        assert https_status(f"{status}?token={token}", ingress.port, ca) == 401
        assert https_status(status, ingress.port, ca, credential) == 403
        assert https_status(f"{status}?token=wrong{token}", ingress.port, ca, credential) == 403
        assert https_status(f"{url}?token={token}", ingress.port, ca, credential) == 200
    # shell show gives the address and the tunnel, never the token.
    shown = toolkit("shell", "show", "lab", "--kubeconfig", str(alice), env=env)
    details = json.loads(shown.stdout)
    assert details["jupyter"] is True and details["jupyter_url"] == url and token not in shown.stdout
    assert details["jupyter_through_ssh"] == tunnel.group(1)
    # Through SSH: the forward reaches JupyterLab on the shell's loopback, over plain HTTP.
    local = free_port()
    forward = subprocess.Popen(
        ["ssh", *details["jupyter_through_ssh"].split()[1:3], "-o", "BatchMode=yes", "-N",
         "-L", f"{local}:127.0.0.1:8888", "toolkit-alice-lab"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def through_ssh(with_token: bool) -> int:
            query = f"?token={token}" if with_token else ""
            try:
                return requests.get(
                    f"http://127.0.0.1:{local}/jupyter/api/status{query}", timeout=5
                ).status_code
            except requests.ConnectionError:
                return 0

        assert eventually(lambda: through_ssh(True) == 200)
        assert through_ssh(False) == 403
    finally:
        forward.terminate()
    # JupyterLab runs as the user, and the token is on no command line in the shell.
    ps = ssh(details["ssh"].split()[2], "toolkit-alice-lab", "ps -eo user:12,args")
    assert re.search(r"^alice +\S*python3 \S*jupyter-lab ", ps.stdout, re.MULTILINE), ps.stdout
    assert token not in ps.stdout
    # JupyterLab shut down (its menu, a crash) starts again; the shell and its sessions stay.
    probe = (
        "import urllib.request; urllib.request.urlopen("
        f"'http://127.0.0.1:8888/jupyter/api/status?token={token}', timeout=2)"
    )
    again = ssh(
        details["ssh"].split()[2], "toolkit-alice-lab",
        f'pkill -f "[j]upyter-lab"; sleep 1; for i in $(seq 40); do python3 -c "{probe}" 2>/dev/null '
        "&& echo back && break; sleep 0.5; done",
    )  # fmt: skip
    assert again.stdout.strip() == "back", again.stdout + again.stderr


def test_a_site_that_opts_out_of_the_ingress_serves_plain_http_on_a_node_port_and_says_so(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    _, admin = cluster
    kube.connect(admin).merge_patch(
        "ConfigMap", "shells", "toolkit-system", {"data": {"webExpose": "nodeport"}}
    )
    user_kubeconfig = tmp_path / "alice.kubeconfig"
    toolkit("user", "add", "alice", "--max-gpus", "1", "-o", str(user_kubeconfig), "--kubeconfig", str(admin))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    created = toolkit(
        "shell", "create", "train", "--web", "--ssh-key", str(tmp_path / "key.pub"), "--timeout", "120",
        "--kubeconfig", str(user_kubeconfig), env={"TOOLKIT_CONFIG_DIR": str(tmp_path / "config")},
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    web = re.search(r"web terminal: (http://127\.0\.0\.1:\d+/)\s+user:password (\S+)", created.stdout)
    assert web, created.stdout
    assert "warning: this cluster serves web terminals as plain HTTP" in " ".join(created.stdout.split())
    assert requests.get(web.group(1), timeout=5).status_code == 401
    user_name, password = web.group(2).split(":", 1)
    assert requests.get(web.group(1), auth=(user_name, password), timeout=5).status_code == 200


def test_verify_shell_check_passes_against_a_real_shell(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    server, admin = cluster
    check: Any = verify.shell_check(admin, tmp_path, gpus=1, timeout=120)
    assert (check.check, check.status) == ("shell over ssh", "pass"), check.detail
    assert (
        server.get("Namespace", "user-toolkit-verify") is None
        or server.get("Namespace", "user-toolkit-verify")["status"]["phase"] == "Terminating"
    )
