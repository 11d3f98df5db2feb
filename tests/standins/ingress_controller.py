"""STAND-IN for k3s's ingress controller, Traefik, serving Ingresses from the stand-in API server
to the pods the stand-in kubelet (tests/standins/podman_kubelet.py) runs. No Traefik binary can be
had here; this follows what Traefik's documentation says its Kubernetes Ingress provider and TLS
store do, for what shells use (doc.traefik.io: routing/providers/kubernetes-ingress, https/tls):

- one HTTPS entrypoint (websecure) on a loopback port; its certificate is the default TLS store's
  (`TLSStore` named `default`: the certificate served for every connection whose Ingress names no
  Secret, whatever the SNI);
- Ingresses of its IngressClass (`traefik`) whose `tls` lists the request's host get a TLS
  router: the `Host` header (without its port) must equal a rule's `host`, and the path must
  start with a `Prefix` path; anything else is Traefik's `404 page not found`;
- the backend is the rule's Service port, forwarded to a Ready pod the Service selects, at its
  `targetPort`; with none Ready, Traefik's `503 Service Unavailable`;
- the Host header passes through unchanged (passHostHeader), and X-Forwarded-For, -Host,
  -Proto (https) and X-Real-Ip are set, as Traefik sets them; after the request head the bytes
  flow both ways untouched, so WebSocket upgrades work.

It does not model: Traefik's own CRDs (IngressRoute, Middleware), annotations, entrypoints other
than websecure, HTTP/2, several certificates selected by SNI, load balancing over several pods
(the first Ready one answers), or more than one request per connection.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from tests.standins.kube_apiserver import FakeApiServer
from tests.standins.podman_kubelet import PodmanKubelet

Obj = dict[str, Any]
HEAD_LIMIT = 64 * 1024
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\n"
    b"404 page not found\n"
)
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 19\r\n\r\nService Unavailable"


class IngressController:
    def __init__(
        self,
        server: FakeApiServer,
        kubelet: PodmanKubelet,
        certificate: Path,
        key: Path,
        ingress_class: str = "traefik",
    ) -> None:
        self.server, self.kubelet, self.ingress_class = server, kubelet, ingress_class
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(certificate, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="standin-traefik", daemon=True)

    def start(self) -> IngressController:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()

    def __enter__(self) -> IngressController:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, address = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, address[0]), daemon=True).start()

    def _serve(self, raw: socket.socket, peer: str) -> None:
        try:
            client = self._tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with client:
            head = _read_head(client)
            if head is None:
                return
            request_line, headers = _parse(head)
            host = headers.get("host", "").split(":")[0]  # host names only: no IPv6 literal routes
            path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
            target = self._route(host, path)
            if target is None:
                client.sendall(NOT_FOUND)
                return
            if target == 0:
                client.sendall(UNAVAILABLE)
                return
            forwarded = (
                f"X-Forwarded-For: {peer}\r\nX-Forwarded-Host: {headers.get('host', '')}\r\n"
                f"X-Forwarded-Proto: https\r\nX-Real-Ip: {peer}\r\n"
            ).encode()
            end = head.index(b"\r\n\r\n") + 2
            try:
                backend = socket.create_connection(("127.0.0.1", target), timeout=5)
            except OSError:
                client.sendall(UNAVAILABLE)
                return
            with backend:
                backend.settimeout(None)
                backend.sendall(head[:end] + forwarded + head[end:])
                _pipe(client, backend)

    def _route(self, host: str, path: str) -> int | None:
        """The loopback port of the pod serving `host` and `path`; 0 when no pod is Ready; None
        when no Ingress routes them."""
        for ingress in self.server.list("Ingress"):
            spec = ingress.get("spec") or {}
            if spec.get("ingressClassName") != self.ingress_class:
                continue
            tls_hosts = {h for entry in spec.get("tls") or [] for h in entry.get("hosts") or []}
            for rule in spec.get("rules") or []:
                if rule.get("host") != host or host not in tls_hosts:
                    continue
                for candidate in (rule.get("http") or {}).get("paths") or []:
                    if candidate.get("pathType") == "Prefix" and path.startswith(candidate.get("path", "/")):
                        return self._backend(
                            ingress["metadata"]["namespace"], candidate["backend"]["service"]
                        )
        return None

    def _backend(self, namespace: str, wanted: Obj) -> int:
        service = self.server.get("Service", wanted["name"], namespace)
        if service is None:
            return 0
        port = next(
            (p for p in service["spec"].get("ports") or [] if p["port"] == wanted["port"].get("number")), None
        )
        if port is None:
            return 0
        selector = service["spec"].get("selector") or {}
        for pod in self.server.list("Pod", namespace):
            labels = pod["metadata"].get("labels") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
            if selector and ready and all(labels.get(k) == v for k, v in selector.items()):
                return self.kubelet.cluster_port(pod, int(port.get("targetPort", port["port"]))) or 0
        return 0


def _read_head(client: ssl.SSLSocket) -> bytes | None:
    head = b""
    while b"\r\n\r\n" not in head:
        try:
            chunk = client.recv(4096)
        except (ssl.SSLError, OSError):
            return None
        if not chunk or len(head) > HEAD_LIMIT:
            return None
        head += chunk
    return head


def _parse(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _pipe(client: ssl.SSLSocket, backend: socket.socket) -> None:
    """Copy both ways, in this one thread (an SSL socket is not to be read and written from two),
    until either side closes or both stay silent for five minutes."""
    while True:
        readable = [client] if client.pending() else select.select([client, backend], [], [], 300)[0]
        if not readable:
            return
        for source in readable:
            sink = backend if source is client else client
            try:
                data = source.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                sink.sendall(data)
            except OSError:  # the other side hung up first, as a client that read its status does
                return
