"""STAND-IN kubelet for the stand-in API server: runs each scheduled pod as a real podman container.

With `FakeApiServer(kubelet=PodmanKubelet(...))`, a pod is not marked Running by fiat: its first
container is started with podman, the way the kubelet would start it, and the pod turns Ready only
when its readiness probe (a TCP port) answers. That lets tests drive real shells through the
toolkit: create, SSH in, pause (the container goes away), resume (a new one, with the same Secret
and volume).

What it does, per pod:
- the container's image, command, args and env;
- its securityContext: `capabilities.drop`/`add`, `allowPrivilegeEscalation: false` as
  no-new-privileges, `privileged`, `runAsUser` and `runAsGroup` (over the image's USER);
- volumes: a Secret's keys as files (defaultMode honoured), rewritten in place when the Secret
  changes, as the kubelet's atomic writer does (it does so within its sync period, about a
  minute; this does it at once), a PVC as a directory kept per claim (so data outlives pods),
  an emptyDir;
- ports: each port of a Service whose selector matches the pod is published on 127.0.0.1 at the
  Service's nodePort, as kube-proxy would forward it; a ClusterIP Service's port, which only the
  cluster reaches, on a free loopback port that `cluster_port` tells the cluster's stand-ins
  (tests/standins/ingress_controller.py);
- init containers: each runs to its end, in order, before the pod's container starts (with the
  pod's volumes, so an emptyDir carries what they wrote); one that fails stops the pod there;
- a container that exited with an error (`failed`): its exit code, and with
  `terminationMessagePolicy: FallbackToLogsOnError` its log's tail as the message, at most 80
  lines or 2048 bytes (upstream's API reference for Container, terminationMessagePolicy: "the
  last chunk of container log output ... limited to 2048 bytes or 80 lines, whichever is
  smaller"); no termination message file is read;
- readiness: a `tcpSocket` probe checked against the published port;
- the pod's address: the container's on podman's network, which the host reaches as a node
  reaches its pods (the lifecycle asks a shell's agent there);
- on a podman network with DNS (aardvark-dns; `network=`), cluster DNS for a pod with a hostname
  and subdomain: as the DNS specification for Services says (kubernetes.io/docs/concepts/
  services-networking/dns-pod-service/, "A/AAAA records" and "Pod's hostname and subdomain
  fields"), such a pod is HOSTNAME.SUBDOMAIN.NAMESPACE.svc.cluster.local once a headless Service
  named SUBDOMAIN exists in its namespace; its resolv.conf searches NAMESPACE.svc.cluster.local,
  svc.cluster.local and cluster.local, so HOSTNAME.SUBDOMAIN resolves too. The container's
  hostname is the pod's `spec.hostname` (else its name);
- env `valueFrom.fieldRef` (the downward API): metadata.name, metadata.namespace,
  metadata.labels['KEY'], metadata.annotations['KEY'] and spec.nodeName;
- NetworkPolicy (`network_policy=`, tests/standins/network_policy.py), which `sync_network`
  programs with every pod's address, as k3s's network policy controller does.

It does not model: resources limits, runtimeClassName (no GPU runtime here), more than one
container, restarts after a crash (a failed container stays failed, as in CrashLoopBackOff),
liveness probes, logs through the API, DNS for Services' cluster IPs or for pods of a Service
made after they started, or env fieldRefs to status fields.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.standins.network_policy import NetworkPolicyEnforcer

Obj = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"
# A downward API label or annotation reference: metadata.labels['KEY'].
FIELD_KEY = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class PodmanKubelet:
    def __init__(
        self,
        root: Path | None = None,
        network: str = "podman",
        network_policy: NetworkPolicyEnforcer | None = None,
    ) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="standin-kubelet-"))
        self.network = network
        self.network_policy = network_policy
        self._dns = network != "podman" and _dns_enabled(network)
        self._started: dict[str, str] = {}  # pod uid -> container name
        self._cluster_ports: dict[str, dict[int, int]] = {}  # pod uid -> container port -> loopback port
        self._init_failures: dict[str, Obj] = {}  # pod uid -> how its failed init container ended
        self._lock = threading.Lock()

    def container_name(self, pod: Obj) -> str:
        return f"standin-kubelet-{pod['metadata']['namespace']}-{pod['metadata']['name']}"

    def start(self, pod: Obj, secrets: dict[str, Obj], claims: dict[str, Obj], services: list[Obj]) -> None:
        """Start the pod's container in the background (podman run takes a while)."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self._started:
                return
            self._started[uid] = self.container_name(pod)
        init_runs = [
            (container, self._run_args(pod, container, secrets, claims, [], init=True))
            for container in pod["spec"].get("initContainers") or []
        ]
        args = self._run_args(pod, pod["spec"]["containers"][0], secrets, claims, services)
        threading.Thread(target=self._run, args=(uid, init_runs, args), daemon=True).start()

    def _run(self, uid: str, init_runs: list[tuple[Obj, list[str]]], args: list[str]) -> None:
        for container, init_args in init_runs:
            ran = subprocess.run(init_args, capture_output=True, text=True, check=False)
            if ran.returncode != 0:
                with self._lock:
                    self._init_failures[uid] = {
                        "name": container["name"],
                        "exitCode": ran.returncode,
                        "message": _log_tail(ran.stdout + ran.stderr, container),
                    }
                return
        subprocess.run(args, capture_output=True, check=False)

    def failed(self, pod: Obj) -> Obj | None:
        """How the pod's failed container ended ({"name", "exitCode", "message", "init"}), or None."""
        with self._lock:
            init_failure = self._init_failures.get(pod["metadata"]["uid"])
        if init_failure:
            return {**init_failure, "init": True}
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
             self.container_name(pod)],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if len(state) != 2 or state[0] != "exited" or state[1] == "0":
            return None
        container = pod["spec"]["containers"][0]
        logs = subprocess.run(
            ["podman", "logs", self.container_name(pod)], capture_output=True, text=True, check=False
        )
        return {
            "name": container["name"],
            "exitCode": int(state[1]),
            "message": _log_tail(logs.stdout + logs.stderr, container),
            "init": False,
        }

    def ready(self, pod: Obj, services: list[Obj]) -> bool:
        """The readiness probe: a TCP connect to the probed container port, at the pod's address as
        the kubelet probes it (or where a Service publishes it, on a network the host can't route to)."""
        probe = (pod["spec"]["containers"][0].get("readinessProbe") or {}).get("tcpSocket")
        if not probe:
            return self._running(pod)
        port = self._published(pod, services).get(int(probe["port"]))
        address = ("127.0.0.1", port) if port is not None else (self.pod_ip(pod), int(probe["port"]))
        if address[0] is None:
            return False
        try:
            with socket.create_connection(address, timeout=0.2) as connection:
                connection.settimeout(0.5)
                return bool(connection.recv(4))  # sshd greets first; a bare accept is not readiness
        except OSError:
            return False

    def pod_ip(self, pod: Obj) -> str | None:
        """The container's address on podman's network, as the kubelet reports the pod's."""
        found = subprocess.run(
            ["podman", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
             self.container_name(pod)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return next(iter(found.stdout.split()), None)

    def cluster_port(self, pod: Obj, container_port: int) -> int | None:
        """Where, on loopback, the pod's container port answers for a ClusterIP Service."""
        with self._lock:
            return self._cluster_ports.get(pod["metadata"]["uid"], {}).get(container_port)

    def stop(self, pod: Obj) -> None:
        with self._lock:
            name = self._started.pop(pod["metadata"]["uid"], None)
            self._cluster_ports.pop(pod["metadata"]["uid"], None)
            self._init_failures.pop(pod["metadata"]["uid"], None)
        if name:
            subprocess.run(["podman", "rm", "--force", "--time", "0", name], capture_output=True, check=False)

    def stop_all(self) -> None:
        with self._lock:
            names, self._started = list(self._started.values()), {}
        for name in names:
            subprocess.run(["podman", "rm", "--force", "--time", "0", name], capture_output=True, check=False)

    def _running(self, pod: Obj) -> bool:
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Running}}", self.container_name(pod)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return state.stdout.strip() == "true"

    @staticmethod
    def _selected_ports(pod: Obj, services: list[Obj]) -> list[Obj]:
        """The ports of the Services that select the pod."""
        labels = pod["metadata"].get("labels") or {}
        return [
            port
            for service in services
            if (selector := service["spec"].get("selector") or {})
            and all(labels.get(k) == v for k, v in selector.items())
            for port in service["spec"].get("ports") or []
        ]

    @classmethod
    def _published(cls, pod: Obj, services: list[Obj]) -> dict[int, int]:
        """container port -> host port, from the Services that select the pod at a node port."""
        return {
            int(port.get("targetPort", port["port"])): int(port["nodePort"])
            for port in cls._selected_ports(pod, services)
            if port.get("nodePort")
        }

    def _run_args(
        self,
        pod: Obj,
        container: Obj,
        secrets: dict[str, Obj],
        claims: dict[str, Obj],
        services: list[Obj],
        init: bool = False,
    ) -> list[str]:
        security = container.get("securityContext") or {}
        if init:
            args = ["podman", "run", "--rm", "--name", f"{self.container_name(pod)}-{container['name']}"]
        else:
            args = ["podman", "run", "--detach", "--replace", "--name", self.container_name(pod)]
        if security.get("privileged"):
            args.append("--privileged")
        capabilities = security.get("capabilities") or {}
        args += [arg for cap in capabilities.get("drop") or [] for arg in ("--cap-drop", cap)]
        args += [arg for cap in capabilities.get("add") or [] for arg in ("--cap-add", cap)]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if not init:
            args += self._network_args(pod, services)
        if "runAsUser" in security:
            group = f":{security['runAsGroup']}" if "runAsGroup" in security else ""
            args += ["--user", f"{security['runAsUser']}{group}"]
        args += [
            arg
            for env in container.get("env") or []
            for arg in ("--env", f"{env['name']}={_env_value(pod, env)}")
        ]
        published = self._published(pod, services)
        for inside, outside in published.items():
            args += ["--publish", f"127.0.0.1:{outside}:{inside}"]
        targets = (int(port.get("targetPort", port["port"])) for port in self._selected_ports(pod, services))
        inside_only = {target for target in targets if target not in published}
        cluster_ports = {port: _free_port() for port in sorted(inside_only)}
        if not init:
            with self._lock:
                self._cluster_ports[pod["metadata"]["uid"]] = cluster_ports
        for inside, outside in cluster_ports.items():
            args += ["--publish", f"127.0.0.1:{outside}:{inside}"]
        volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            source = self._volume_dir(pod, volumes[mount["name"]], secrets, claims)
            args += ["--volume", f"{source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
        args += [
            *(["--entrypoint", container["command"][0]] if container.get("command") else []),
            container["image"],
        ]
        return args + list(container.get("command", [])[1:]) + list(container.get("args") or [])

    def _network_args(self, pod: Obj, services: list[Obj]) -> list[str]:
        """The pod's network, hostname and, on a network with DNS, its names under a headless Service."""
        namespace, spec = pod["metadata"]["namespace"], pod["spec"]
        hostname = spec.get("hostname") or pod["metadata"]["name"]
        args = ["--network", self.network, "--hostname", hostname]
        if not self._dns:
            return args
        search = [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        args += [arg for domain in search for arg in ("--dns-search", domain)]
        subdomain = spec.get("subdomain")
        headless = any(
            service["metadata"]["name"] == subdomain and service["spec"].get("clusterIP") == "None"
            for service in services
        )
        if subdomain and spec.get("hostname") and headless:
            name = f"{hostname}.{subdomain}"
            args += ["--network-alias", name, "--network-alias", f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]
        return args

    def sync_network(self, pods: Iterable[Obj], namespaces: Iterable[Obj], policies: Iterable[Obj]) -> None:
        """Program the cluster's NetworkPolicies for the pods as they are now (their addresses)."""
        if self.network_policy is not None:
            self.network_policy.sync(pods, namespaces, policies)

    def refresh(self, pod: Obj, secrets: dict[str, Obj]) -> None:
        """Bring a started pod's Secret volumes up to date with their Secrets."""
        with self._lock:
            if pod["metadata"]["uid"] not in self._started:
                return
        for volume in pod["spec"].get("volumes") or []:
            if "secret" in volume and volume["secret"]["secretName"] in secrets:
                self._write_secret(pod, volume, secrets[volume["secret"]["secretName"]])

    def _write_secret(self, pod: Obj, volume: Obj, secret: Obj) -> Path:
        target = self.root / "secrets" / pod["metadata"]["uid"] / volume["name"]
        target.mkdir(parents=True, exist_ok=True)
        for key, value in (secret.get("data") or {}).items():
            content = base64.b64decode(value)
            if (target / key).exists() and (target / key).read_bytes() == content:
                continue
            staged = target / f"..{key}.new"
            staged.write_bytes(content)
            staged.chmod(volume["secret"].get("defaultMode", 0o644))
            os.replace(staged, target / key)
        return target

    def _volume_dir(self, pod: Obj, volume: Obj, secrets: dict[str, Obj], claims: dict[str, Obj]) -> Path:
        if "secret" in volume:
            return self._write_secret(pod, volume, secrets[volume["secret"]["secretName"]])
        if "persistentVolumeClaim" in volume:
            claim = claims[volume["persistentVolumeClaim"]["claimName"]]
            target = self.root / "volumes" / claim["metadata"]["uid"]
        else:
            target = self.root / "empty" / pod["metadata"]["uid"] / volume["name"]
        target.mkdir(parents=True, exist_ok=True)
        return target


def _env_value(pod: Obj, env: Obj) -> str:
    """An env var's value as the kubelet resolves it: a literal, or a downward API field."""
    field = ((env.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
    if field is None:
        return str(env.get("value", ""))
    metadata = pod["metadata"]
    plain = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata["namespace"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
    }
    if field in plain:
        return str(plain[field])
    keyed = FIELD_KEY.fullmatch(field)
    if keyed is None:
        raise ValueError(f"the stand-in kubelet does not resolve the fieldRef {field!r}")
    return str((metadata.get(keyed[1]) or {}).get(keyed[2], ""))


def _dns_enabled(network: str) -> bool:
    found = subprocess.run(
        ["podman", "network", "inspect", network, "--format", "{{.DNSEnabled}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return found.stdout.strip() == "true"


def _log_tail(log: str, container: Obj) -> str:
    """The termination message without a message file: the log's last 80 lines, at most 2048
    bytes, where the container asks for it (FallbackToLogsOnError); else nothing."""
    if container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        return ""
    tail = "\n".join(log.splitlines()[-80:]).encode()[-2048:]
    return tail.decode(errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
