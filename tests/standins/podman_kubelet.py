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
  reaches its pods (the lifecycle asks a shell's agent there).

It does not model: resources limits, runtimeClassName (no GPU runtime here), more than one
container, restarts after a crash (a failed container stays failed, as in CrashLoopBackOff),
liveness probes, or logs through the API.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

Obj = dict[str, Any]


class PodmanKubelet:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="standin-kubelet-"))
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
        """The readiness probe: a TCP connect to the published port of the probed container port."""
        probe = (pod["spec"]["containers"][0].get("readinessProbe") or {}).get("tcpSocket")
        if not probe:
            return self._running(pod)
        port = self._published(pod, services).get(int(probe["port"]))
        if port is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
                connection.settimeout(0.5)
                return bool(connection.recv(4))  # sshd greets first; a bare accept is not readiness
        except OSError:
            return False

    def pod_ip(self, pod: Obj) -> str | None:
        """The container's address on podman's network, as the kubelet reports the pod's."""
        found = subprocess.run(
            ["podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.container_name(pod)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return found.stdout.strip() or None

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
        if "runAsUser" in security:
            group = f":{security['runAsGroup']}" if "runAsGroup" in security else ""
            args += ["--user", f"{security['runAsUser']}{group}"]
        args += [
            arg
            for env in container.get("env") or []
            for arg in ("--env", f"{env['name']}={env.get('value', '')}")
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
