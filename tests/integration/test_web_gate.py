"""The shell image's web gate (images/shell/web-gate.py), run as a real process in front of a
unix socket standing in for ttyd, which records the request heads that reach it. The image
tests (test_shell_image.py) run it in front of the real ttyd."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PROJECT

GATE = PROJECT / "images" / "shell" / "web-gate.py"
CREDENTIAL = "alice:web-secret-77aa"


class Ttyd:
    """A unix socket that answers every request 200 and keeps the heads it got (or, given a TCP
    port, the same on loopback: JupyterLab's stand-in)."""

    def __init__(self, path: Path | None, port: int | None = None) -> None:
        self.heads: list[str] = []
        self.server = socket.socket(socket.AF_UNIX) if path else socket.socket()
        self.server.bind(str(path) if path else ("127.0.0.1", port))
        self.server.listen()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.decode("latin-1"))
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gate(
    tmp_path: Path, *tls: str, options: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    credential = tmp_path / "ttyd-credential"
    credential.write_text(CREDENTIAL + "\n")
    port = free_port()
    gate = subprocess.Popen(
        [sys.executable, str(GATE), *options, str(port), str(credential), str(tmp_path / "ttyd.sock"), *tls]
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return gate, port
        except OSError:
            time.sleep(0.05)
    gate.kill()
    raise AssertionError("the gate did not start")


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[int, Ttyd]]:
    ttyd = Ttyd(tmp_path / "ttyd.sock")
    process, port = start_gate(tmp_path)
    yield port, ttyd
    process.kill()
    process.wait()


def exchange(port: int, request: str, wrap: ssl.SSLContext | None = None) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = wrap.wrap_socket(raw, server_hostname="localhost") if wrap else raw
        sock.sendall(request.encode("latin-1"))
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer.decode("latin-1")


def basic(credential: str) -> str:
    return f"Authorization: Basic {base64.b64encode(credential.encode()).decode()}\r\n"


def get(port: int, extra: str = "", path: str = "/") -> str:
    return exchange(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n")


def test_without_the_credential_nothing_reaches_ttyd(gate: tuple[int, Ttyd]) -> None:
    port, ttyd = gate
    for extra in ("", basic("alice:wrong"), basic("alice:web-secret-77a"), "Authorization: Basic !!!\r\n",
                  "X-WebAuth-User: alice\r\n", "Authorization: Bearer x\r\n"):  # fmt: skip
        answer = get(port, extra)
        assert (
            answer.startswith("HTTP/1.1 401 Unauthorized\r\n")
            and 'WWW-Authenticate: Basic realm="shell"' in answer
        )
    assert ttyd.heads == []


def test_with_the_credential_ttyd_gets_the_gates_header_and_no_forged_one(gate: tuple[int, Ttyd]) -> None:
    port, ttyd = gate
    answer = get(port, basic(CREDENTIAL) + "X-WebAuth-User: mallory\r\nConnection: keep-alive\r\n")
    assert answer.startswith("HTTP/1.1 200 OK") and answer.endswith("ok")
    (head,) = ttyd.heads
    lines = head.split("\r\n")
    assert "X-WebAuth-User: alice" in lines and "X-WebAuth-User: mallory" not in lines
    assert "Connection: close" in lines and "Connection: keep-alive" not in lines


def test_a_second_request_on_an_authorised_connection_is_not_passed_unchecked(gate: tuple[int, Ttyd]) -> None:
    port, ttyd = gate
    first = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{basic(CREDENTIAL)}\r\n"
    second = f"GET /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    answer = exchange(port, first + second)
    assert answer.count("HTTP/1.1 200 OK") == 1
    (head,) = ttyd.heads
    assert head.count("GET ") == 1 and "/token" not in head


@pytest.mark.parametrize(
    ("origin", "status"),
    [(None, "403"), ("http://evil.example", "403"), ("http://127.0.0.1:{port}", "200")],
)
def test_a_websocket_must_come_from_the_terminals_own_page(
    gate: tuple[int, Ttyd], origin: str | None, status: str
) -> None:
    port, ttyd = gate
    extra = basic(CREDENTIAL) + "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    if origin:
        extra += f"Origin: {origin.format(port=port)}\r\n"
    assert get(port, extra, "/ws").startswith(f"HTTP/1.1 {status}")
    assert len(ttyd.heads) == (1 if status == "200" else 0)


def test_a_bad_request_line_is_refused(gate: tuple[int, Ttyd]) -> None:
    port, ttyd = gate
    assert exchange(port, "NONSENSE\r\n\r\n").startswith("HTTP/1.1 400 Bad Request")
    assert ttyd.heads == []


def test_with_a_certificate_it_serves_https(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt"), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    ttyd = Ttyd(tmp_path / "ttyd.sock")
    process, port = start_gate(tmp_path, str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    try:
        trusted = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
        request = f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\n{basic(CREDENTIAL)}\r\n"
        assert exchange(port, request, trusted).startswith("HTTP/1.1 200 OK")
        with pytest.raises(ssl.SSLCertVerificationError):
            exchange(port, request, ssl.create_default_context())
        assert len(ttyd.heads) == 1
    finally:
        process.kill()
        process.wait()


def test_with_jupyter_its_paths_go_to_it_behind_the_same_credential_without_the_gates_header(
    tmp_path: Path,
) -> None:
    ttyd = Ttyd(tmp_path / "ttyd.sock")
    jupyter_port = free_port()
    jupyter = Ttyd(None, jupyter_port)
    process, port = start_gate(tmp_path, options=("--jupyter", str(jupyter_port)))
    try:
        # An image's or the user's own Jupyter config may turn the token off: the gate still asks.
        for extra in ("", basic("alice:wrong"), "X-WebAuth-User: alice\r\n"):
            answer = get(port, extra, path="/jupyter/api/status")
            assert answer.startswith("HTTP/1.1 401 Unauthorized"), answer
        assert jupyter.heads == []
        answer = get(
            port, basic(CREDENTIAL) + "X-WebAuth-User: mallory\r\n", path="/jupyter/api/status?token=t"
        )
        assert answer.startswith("HTTP/1.1 200 OK"), answer
        (head,) = jupyter.heads
        assert head.startswith("GET /jupyter/api/status?token=t HTTP/1.1\r\n")
        assert "X-WebAuth-User" not in head and "Connection: close" in head.split("\r\n")
        # Everything else is still the terminal's.
        for path in ("/", "/jupyterx", "/token?/jupyter/"):
            assert get(port, basic(CREDENTIAL), path=path).startswith("HTTP/1.1 200 OK"), path
        assert len(ttyd.heads) == 3 and len(jupyter.heads) == 1
    finally:
        process.kill()


def test_a_websocket_its_backend_refuses_ends_the_connection_there(gate: tuple[int, Ttyd]) -> None:
    port, ttyd = gate
    upgrade = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\n{basic(CREDENTIAL)}\r\n"
    )
    smuggled = "GET /after HTTP/1.1\r\nHost: x\r\nX-WebAuth-User: alice\r\n\r\n"
    # The stand-in answers 200, not 101: the answer is passed on, and nothing after it.
    answer = exchange(port, upgrade + smuggled)
    assert answer.startswith("HTTP/1.1 200 OK") and answer.endswith("ok"), answer
    assert len(ttyd.heads) == 1 and "/after" not in ttyd.heads[0]


def test_without_jupyter_its_paths_are_the_terminals(gate: tuple[int, Ttyd]) -> None:
    port, ttyd = gate
    assert get(port, path="/jupyter/api/status").startswith("HTTP/1.1 401 Unauthorized")
    assert ttyd.heads == []
