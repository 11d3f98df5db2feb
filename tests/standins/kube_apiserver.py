"""STAND-IN for a Kubernetes API server (no kube-apiserver, k3s or kind can run here).

An in-process HTTP server on a free loopback port that speaks the Kubernetes REST protocol
closely enough that the official `kubernetes` Python client (v37, which validates `/version`
strictly) and a real `kubectl` 1.37 both accept it. Tests start it with `FakeApiServer()`,
write its admin kubeconfig, and talk to it as they would to a cluster.

What it models:
- discovery: `/version` with every field, `/api`, `/api/v1`, `/apis`, `/apis/GROUP/VERSION`, and
  an `/openapi/v3` index whose documents declare the `fieldValidation` parameter, so kubectl
  uses server-side field validation instead of downloading schemas;
- create (with `generateName` and `dryRun=All`), get, list (label and field selectors, `limit`
  and `continue`), PUT with resourceVersion conflicts, the four patch content types (JSON patch,
  merge patch, strategic merge patch, server-side apply that creates when missing), delete,
  deletecollection, and the `status` and `scale` subresources;
- watch from a resourceVersion, from "now" with synthetic ADDED events, and the watch-list mode
  (`sendInitialEvents=true`, closed by a BOOKMARK carrying `k8s.io/initial-events-end`) that
  kubectl 1.37 uses; objects that stop matching a selector arrive as DELETED;
- Status error bodies with the real reasons, codes and messages (NotFound, AlreadyExists,
  Conflict, Invalid, BadRequest, Forbidden, Unauthorized), names checked as DNS-1123,
  namespaces that must exist, Terminating namespaces that refuse new objects, and the cascade
  when a namespace or an owner is deleted;
- ValidatingAdmissionPolicy with its bindings, their CEL evaluated by cel-python
  (tests/standins/admission_policy.py says what of it is modelled);
- bearer-token authentication and RBAC: an admin token, ServiceAccount tokens filled into
  `kubernetes.io/service-account-token` Secrets, and Role/ClusterRole rules evaluated per request;
- admission in kube-apiserver's order: LimitRanger's container defaults, PodSecurity's enforce
  mode at the baseline level (tests/standins/pod_security.py: the namespace's label, else the
  cluster default the k3s role configures, with its exempt namespaces), and ResourceQuota for
  pods, PVCs, Services, Secrets, StatefulSets and Ingresses (requests.*, limits.*, pods,
  persistentvolumeclaims, requests.storage, services, services.nodeports,
  services.loadbalancers, and object counts such as `count/secrets`, `count/statefulsets.apps`)
  with the quota's `status.used`; each request's user and groups reach the admission policies
  (the controllers act as kube-system's statefulset-controller);
- Secrets' `stringData` folded into base64 `data`; Services get a clusterIP and nodePorts, and
  LoadBalancer Services the first node's address, as k3s's ServiceLB gives them; a headless
  Service (`clusterIP: None`, kubernetes.io/docs/concepts/services-networking/service/, "Headless
  Services") keeps "None" in `clusterIP` and `clusterIPs`, gets no nodePorts, and is refused as a
  NodePort or LoadBalancer as ValidateService refuses it (`publishNotReadyAddresses` is stored, with
  no Endpoints to act on);
- with `kubelet=PodmanKubelet()`, pods run as real podman containers and turn Ready when their
  readiness probe answers (tests/standins/podman_kubelet.py), and after each reconcile the
  kubelet is handed every pod, namespace and NetworkPolicy for its network policy stand-in (so a
  pod just started is isolated a moment after it runs, not before);
- controllers: a StatefulSet controller (pods `NAME-0..N-1` from the template, status counts,
  scale up and down), a scheduler (node selector, cordons, allocatable minus the requests of
  scheduled pods for every resource, `Insufficient nvidia.com/gpu`, required node affinity, and
  inter-pod affinity and anti-affinity as kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/
  describes it: required podAffinity and podAntiAffinity terms, existing pods' required
  anti-affinity, and the preferred terms' weights choosing among the nodes that fit; one pod at a
  time, so a StatefulSet's second pod sees where its first went), a kubelet that marks pods
  Running and Ready, a PVC binder (Bound when the StorageClass exists; a claim naming its
  PersistentVolume binds to it as the PV controller's syncUnboundClaim does: one reserved for it
  at once, a free one when large enough, of the same class, access modes and volume mode), and
  Events for each.

Switches (`server.behaviour`) simulate what goes wrong on a cluster: `unschedulable` (a
FailedScheduling event and PodScheduled=False), `image_pull_backoff` (ErrImagePull, then
ImagePullBackOff), `pod_start_delay` (slow starts), `provisioner_stuck` (PVCs stay Pending) and
`latency` (added to every request, for benchmarks).

It serves HTTPS with a throwaway CA written into its kubeconfigs, because kubectl sends bearer
tokens only over TLS.

Deletion honours the Orphan propagation policy (dependents lose the owner's reference and stay).

With `kueue=True` it serves Kueue's API groups (Workload, ClusterQueue, LocalQueue,
ResourceFlavor, and the visibility API's pending workloads) and runs tests/standins/kueue.py's
model of Kueue's webhooks and controllers; without, those groups answer 404 as on a cluster
without Kueue.

It does not model: client certificates, admission webhooks (but Kueue's), CRDs, finalizers
(so neither PV nor PVC protection: a deleted volume or claim goes at once), the Priority
plugin, init containers in quota, the scheduler's other scores (it takes the best inter-pod
affinity score, else the first node by name, where kube-scheduler also weighs free resources and
spreads a StatefulSet's pods by default), taints, topology spread constraints, `matchLabelKeys` in
affinity terms, preemption, dynamically provisioned PersistentVolume objects (a bound
claim names a volume that is not stored), the Released phase, field-ownership
conflicts in server-side apply (it merges; the toolkit always applies with force), strategic
merge directives (`$patch`, `$retainKeys`; lists of objects with a `name` are merged by name,
other lists replaced), Table output, protobuf, graceful pod deletion, exec/logs/port-forward
(`pods/log` returns a fixed line), proxies but GET through `pods/NAME:PORT/proxy` to what a test
registers in `proxied` (RBAC's get on pods/proxy; 503 when the pod does not run), CronJobs' runs
(they are stored, never scheduled), or any
resource not listed in RESOURCES.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.standins import admission_policy, kueue, pod_security

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the real server names the resource in messages: `statefulsets.apps`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = [
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), ("status",)),
    Resource("", "v1", "Node", "nodes", False, ("no",), ("status",)),
    Resource("", "v1", "Pod", "pods", True, ("po",), ("status", "log", "proxy")),
    Resource("", "v1", "Service", "services", True, ("svc",), ("status",)),
    Resource("", "v1", "Secret", "secrets", True),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), ("status",)),
    Resource("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), ("status",)),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Resource("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), ("status",)),
    Resource("", "v1", "LimitRange", "limitranges", True, ("limits",)),
    Resource("", "v1", "Event", "events", True, ("ev",)),
    Resource("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), ("status", "scale")),
    Resource("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("status",)),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    Resource("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",)),
    Resource("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",)),
    Resource("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", False),
    Resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        False,
    ),
    Resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        False,
    ),
    # Kueue's, served only by FakeApiServer(kueue=True) (tests/standins/kueue.py).
    Resource(kueue.GROUP, kueue.VERSION, "Workload", "workloads", True, ("kwl",), ("status",)),
    Resource(kueue.GROUP, kueue.VERSION, "ClusterQueue", "clusterqueues", False, ("cq",), ("status",)),
    Resource(kueue.GROUP, kueue.VERSION, "LocalQueue", "localqueues", True, ("lq",), ("status",)),
    Resource(kueue.GROUP, kueue.VERSION, "ResourceFlavor", "resourceflavors", False, ("rf",)),
    Resource(
        kueue.VISIBILITY_GROUP,
        kueue.VERSION,
        "ClusterQueue",
        "clusterqueues",
        False,
        (),
        ("pendingworkloads",),
    ),
    Resource(
        kueue.VISIBILITY_GROUP, kueue.VERSION, "LocalQueue", "localqueues", True, (), ("pendingworkloads",)
    ),
]
KUEUE_GROUPS = (kueue.GROUP, kueue.VISIBILITY_GROUP)
# The API server's proxy to a pod's port: GET /api/v1/namespaces/NS/pods/NAME[:PORT]/proxy[/PATH].
PODS_PROXY = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/:]+)(?::(\d+))?/proxy/?(.*)")
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
QUOTA_KINDS = ("Pod", "PersistentVolumeClaim", "Service", "Secret", "StatefulSet", "Ingress")
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}

VERSION = {
    "major": "1",
    "minor": "33",
    "emulationMajor": "1",
    "emulationMinor": "33",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "32",
    "gitVersion": "v1.33.5+standin",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"
# Who the controllers act as: kube-controller-manager's StatefulSet controller, as a real cluster
# names it when it runs with --use-service-account-credentials (k3s does).
CONTROLLER = "system:serviceaccount:kube-system:statefulset-controller"


def groups_of(user: str) -> tuple[str, ...]:
    """The groups the authenticator gives a user: a ServiceAccount's are
    system:serviceaccounts and system:serviceaccounts:NAMESPACE; the admin's system:masters."""
    if user.startswith("system:serviceaccount:"):
        namespace = user.split(":")[2]
        return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated")
    return ("system:masters", "system:authenticated")


def self_signed_tls() -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 and localhost, and its key, both PEM; the certificate is its own CA."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in kube-apiserver")])
    issued = datetime.now(UTC) - timedelta(minutes=5)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued)
        .not_valid_after(issued + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource.qualified} "{name}" not found',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def invalid(resource: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 with causes of (field, value, message), worded as the real validators word them."""
    text = ", ".join(f'{f}: Invalid value: "{v}": {m}' for f, v, m in causes)
    kind = f"{resource.kind}.{resource.group}" if resource.group else resource.kind
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": f'Invalid value: "{v}": {m}', "field": f}
                for f, v, m in causes
            ],
        },
    )


# --- quantities -----------------------------------------------------------------------------

_SUFFIX = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]i?|)$")


def quantity(value: Any) -> Fraction:
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) in ("ni", "ui", "mi", "ki"):
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    number, suffix = Fraction(match.group(1)), match.group(2)
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def format_quantity(value: Fraction, like: str) -> str:
    """As the API server writes a quantity: memory and storage with the largest binary suffix
    that is exact (10Pi, 512Mi), CPU in millicores when fractional, counts as integers."""
    if like in ("cpu",) or value.denominator != 1:
        millis = value * 1000
        return f"{int(millis)}m" if millis.denominator == 1 and millis % 1000 else str(int(value))
    if like.endswith(("memory", "storage")) and value:
        for power, suffix in reversed(list(enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")))):
            if value % 1024**power == 0:
                return f"{int(value) // 1024**power}{suffix}"
    return str(int(value))


# --- selectors --------------------------------------------------------------------------------


def split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in split_terms(selector):
        set_match = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if set_match:
            key, operator, values = set_match.group(1), set_match.group(2), set_match.group(3)
            allowed = {v.strip() for v in values.split(",")}
            if operator == "in":
                checks.append(lambda labels, k=key, a=allowed: labels.get(k) in a)
            else:
                checks.append(lambda labels, k=key, a=allowed: labels.get(k) not in a)
            continue
        equality = re.match(r"^([\w./-]+)\s*(==|!=|=)\s*([\w.-]*)$", term)
        if equality:
            key, operator, value = equality.groups()
            if operator == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        exists = re.match(r"^(!?)([\w./-]+)$", term)
        if not exists:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        negate, key = exists.group(1) == "!", exists.group(2)
        checks.append(lambda labels, k=key, n=negate: (k in labels) != n)
    return lambda labels: all(check(labels) for check in checks)


def field_value(obj: Obj, path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return "" if current is None else str(current)


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    checks: list[Callable[[Obj], bool]] = []
    for term in split_terms(selector):
        match = re.match(r"^([\w.]+)\s*(==|!=|=)\s*(.*)$", term)
        if not match:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, operator, value = match.groups()
        if operator == "!=":
            checks.append(lambda obj, p=path, v=value: field_value(obj, p) != v)
        else:
            checks.append(lambda obj, p=path, v=value: field_value(obj, p) == v)
    return lambda obj: all(check(obj) for check in checks)


# --- patches ----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any, by_name: bool = False) -> Any:
    """RFC 7386. With `by_name` (strategic merge), lists of named objects merge item by item, as the
    built-in types declare for containers, env, volumes and ports; other lists are replaced."""
    named_lists = by_name and isinstance(patch, list) and isinstance(target, list) and bool(patch)
    if named_lists and all(isinstance(item, dict) and "name" in item for item in [*patch, *target]):
        merged = {item["name"]: copy.deepcopy(item) for item in target}
        for item in patch:
            merged[item["name"]] = merge_patch(merged.get(item["name"]), item, by_name)
        return list(merged.values())
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, by_name)
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def json_patch(document: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902."""
    doc: Any = copy.deepcopy(document)

    def parent(path: str) -> tuple[Any, str]:
        parts = _pointer(path)
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(path: str) -> Any:
        node, last = parent(path)
        return node[int(last)] if isinstance(node, list) else node[last]

    def add(path: str, value: Any) -> None:
        node, last = parent(path)
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[last] = value

    def remove(path: str) -> Any:
        node, last = parent(path)
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    try:
        for operation in operations:
            op, path = operation["op"], operation["path"]
            if op == "add":
                add(path, copy.deepcopy(operation["value"]))
            elif op == "remove":
                remove(path)
            elif op == "replace":
                remove(path)
                add(path, copy.deepcopy(operation["value"]))
            elif op == "move":
                add(path, remove(operation["from"]))
            elif op == "copy":
                add(path, copy.deepcopy(get(operation["from"])))
            elif op == "test":
                if get(path) != operation["value"]:
                    raise ApiError(422, "Invalid", f"the server rejected our request: test failed at {path}")
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch operation {op!r}")
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise ApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {error}"
        ) from None
    return doc  # type: ignore[no-any-return]


# --- the server -------------------------------------------------------------------------------


@dataclass
class Behaviour:
    """Switches the tests flip to simulate a cluster's failures."""

    unschedulable: bool = False
    image_pull_backoff: bool = False
    provisioner_stuck: bool = False
    pod_start_delay: float = 0.0
    latency: float = 0.0
    # What run-to-completion pods (restartPolicy: Never) print, by command line ("nvidia-smi -L").
    # Such a pod ends Succeeded with that log; one whose command is not listed ends Failed with
    # exit code 127, as a missing program would.
    command_output: dict[str, str] = field(default_factory=dict)


def command_line(pod: Obj) -> str:
    container = pod["spec"]["containers"][0]
    return " ".join([*(container.get("command") or []), *(container.get("args") or [])])


@dataclass
class WatchEvent:
    resource_version: int
    type: str
    resource: Resource
    obj: Obj
    previous: Obj | None


@dataclass
class Request:
    """What a handler passes to the server: the parsed URL, who asks, and the body."""

    method: str
    resource: Resource | None
    namespace: str | None
    name: str | None
    subresource: str | None
    query: dict[str, str]
    content_type: str
    body: bytes
    user: str
    groups: tuple[str, ...] = field(default_factory=tuple)


def query_bool(value: str | None) -> bool:
    """A boolean query parameter as the API server reads it (Go's strconv.ParseBool, through the
    query parameter codec): "1", "t", "T", "true", "TRUE" and "True" are true. Clients differ:
    the Python client before 36 sends watch=True."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


class FakeApiServer:
    """The stand-in API server. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        admin_token: str | None = None,
        first_node_port: int = 30000,
        kubelet: Any = None,
        admission_config: Obj | None = None,
        kueue: bool = False,
        kueue_config: Obj | None = None,
    ) -> None:
        """`first_node_port`: where NodePort allocation starts. `kubelet`: a real container runtime
        for pods (tests/standins/podman_kubelet.py); without one, pods are marked Running by fiat.
        `admission_config`: an AdmissionConfiguration, as kube-apiserver's
        --admission-control-config-file reads it; its PodSecurity plugin's `defaults.enforce` and
        `exemptions.namespaces` apply. Without one, every namespace without a label is privileged.
        `kueue`: Kueue is installed (tests/standins/kueue.py); without it, its API groups are 404.
        `kueue_config`: Kueue's Configuration (config.kueue.x-k8s.io/v1beta2), of which
        `resources.excludeResourcePrefixes` applies."""
        self.admin_token = admin_token or secrets.token_hex(16)
        pod_security = next(
            (
                plugin.get("configuration") or {}
                for plugin in (admission_config or {}).get("plugins") or []
                if plugin.get("name") == "PodSecurity"
            ),
            {},
        )
        self.pod_security_default = (pod_security.get("defaults") or {}).get("enforce") or "privileged"
        self.pod_security_exempt_namespaces = frozenset(
            (pod_security.get("exemptions") or {}).get("namespaces") or []
        )
        self.behaviour = Behaviour()
        self.kubelet = kubelet
        # What answers at a pod's port through the pods proxy: (namespace, pod, port) -> PATH -> text
        # (a stand-in exporter's page, tests/standins/dcgm_exporter.py).
        self.proxied: dict[tuple[str, str, int], Callable[[str], str]] = {}
        self.kueue = kueue
        self.kueue_excluded_prefixes = tuple(
            ((kueue_config or {}).get("resources") or {}).get("excludeResourcePrefixes") or ()
        )
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (qualified resource, namespace, name)
        self.events: list[WatchEvent] = []
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> (namespace, service account)
        self.requests: list[tuple[str, str]] = []  # (method, path?query), for benchmarks
        self._resource_version = 1000
        self._next_node_port = first_node_port
        self._next_cluster_ip = 10
        self._next_pod_ip = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._pod_started: dict[str, float] = {}
        self._unsettled: set[str] = set()  # namespaces with pods not yet running
        self._requester = CONTROLLER  # who the request being handled comes from, under the lock
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self.ca_pem, key_pem = self_signed_tls()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as scratch:
            cert_file, key_file = Path(scratch, "tls.crt"), Path(scratch, "tls.key")
            cert_file.write_bytes(self.ca_pem)
            key_file.write_bytes(key_pem)
            tls.load_cert_chain(cert_file, key_file)
        # The handshake happens in each request's thread, so a slow client cannot stall accept().
        self._http.socket = tls.wrap_socket(
            self._http.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = self._http.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._threads = [
            threading.Thread(
                target=self._http.serve_forever, args=(0.05,), name="fake-apiserver", daemon=True
            ),
            threading.Thread(target=self._controllers, name="fake-controllers", daemon=True),
        ]
        for namespace in ("default", "kube-system", "kube-public"):
            self.seed(Resource("", "v1", "Namespace", "namespaces", False), {"metadata": {"name": namespace}})

    # -- lifecycle

    def start(self) -> FakeApiServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._http.shutdown()
        self._http.server_close()
        if self.kubelet is not None:
            self.kubelet.stop_all()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, token: str | None = None, context: str = "fake") -> Path:
        """A kubeconfig for this server; the admin's unless another token is given."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": context,
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": context, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- test helpers (no HTTP, no auth)

    def seed(self, resource: Resource | str, obj: Obj) -> Obj:
        """Create an object directly, as a cluster's components would (nodes, classes)."""
        if isinstance(resource, str):
            resource = next(r for r in RESOURCES if r.kind == resource)
        obj = {"apiVersion": resource.api_version, "kind": resource.kind, **copy.deepcopy(obj)}
        with self._changed:
            return self._create(resource, obj["metadata"].get("namespace"), obj)

    def put(self, obj: Obj) -> Obj:
        """Create or replace an object directly, as an operator's `kubectl apply` would."""
        resource = BY_KIND[(obj["apiVersion"], obj["kind"])]
        with self._changed:
            key = self._key(resource, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            if key in self.objects:
                return self._update(resource, key, copy.deepcopy(obj))
            return self._create(resource, obj["metadata"].get("namespace"), copy.deepcopy(obj))

    def add_gpu_node(
        self,
        name: str,
        gpus: int = 8,
        cpu: str = "192",
        memory: str = "2Ti",
        labels: dict[str, str] | None = None,
        ephemeral_storage: str = "3500Gi",
    ) -> Obj:
        """A Ready node with `gpus` allocatable; by default an HGX H100's CPUs, memory and
        local NVMe (ephemeral storage, which every kubelet reports)."""
        capacity = {
            "cpu": cpu,
            "memory": memory,
            "pods": "110",
            "ephemeral-storage": ephemeral_storage,
            "nvidia.com/gpu": str(gpus),
        }
        return self.seed(
            "Node",
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        **({"nvidia.com/gpu.present": "true"} if gpus else {}),
                        **(labels or {}),
                    },
                },
                "spec": {},
                "status": {
                    "capacity": capacity,
                    "allocatable": dict(capacity),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [{"type": "InternalIP", "address": f"10.0.0.{len(self.list('Node')) + 11}"}],
                    "nodeInfo": {
                        "kubeletVersion": "v1.33.5+k3s1",
                        "containerRuntimeVersion": "containerd://2.0.5-k3s1",
                        "kernelVersion": "6.1.0-40-amd64",
                        "osImage": "Debian GNU/Linux 12 (bookworm)",
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kubeProxyVersion": "v1.33.5+k3s1",
                        "machineID": uuid.uuid4().hex,
                        "systemUUID": str(uuid.uuid4()),
                        "bootID": str(uuid.uuid4()),
                    },
                },
            },
        )

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        resource = next(r for r in RESOURCES if r.kind == kind)
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (qualified, ns, _), obj in sorted(self.objects.items())
                if qualified == resource.qualified and (namespace is None or ns == namespace)
            ]

    def _scan(self, kind: str, namespace: str) -> list[Obj]:
        """The stored objects themselves, for controllers that copy before they change one."""
        qualified = next(r for r in RESOURCES if r.kind == kind).qualified
        return [obj for (q, ns, _), obj in sorted(self.objects.items()) if q == qualified and ns == namespace]

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        resource = next(r for r in RESOURCES if r.kind == kind)
        with self._lock:
            found = self.objects.get((resource.qualified, namespace, name))
            return copy.deepcopy(found) if found else None

    def reset_request_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- storage

    def _next_rv(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _record(self, kind: str, resource: Resource, obj: Obj, previous: Obj | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.events.append(WatchEvent(rv, kind, resource, copy.deepcopy(obj), previous))
        self._changed.notify_all()

    def _key(self, resource: Resource, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (resource.qualified, namespace or "", name)

    def _create(self, resource: Resource, namespace: str | None, obj: Obj, dry_run: bool = False) -> Obj:
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        name = metadata.get("name", "")
        if not name:
            raise ApiError(
                422,
                "Invalid",
                f'{resource.kind} in version "{resource.version}" cannot be '
                "handled as a " + resource.kind + ": name or generateName is required",
            )
        self._validate(resource, obj)
        if resource.namespaced:
            namespace = namespace or metadata.get("namespace") or "default"
            if metadata.get("namespace", namespace) != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            ns = self.objects.get(("namespaces", "", namespace))
            if ns is None:
                raise not_found(BY_KIND[("v1", "Namespace")], namespace)
            if ns["status"].get("phase") == "Terminating":
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{resource.plural} "{name}" is forbidden: unable to create '
                    f"new content in namespace {namespace} because it is being terminated",
                    {"name": name, "kind": resource.plural},
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        key = self._key(resource, namespace, name)
        if key in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.qualified} "{name}" already exists',
                {"name": name, "group": resource.group, "kind": resource.plural},
            )
        self._kueue_webhooks(resource, obj)
        self._admit(resource, obj)
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=self._next_rv())
        metadata.pop("deletionTimestamp", None)
        if "spec" in obj or resource.kind in ("StatefulSet", "Pod"):
            metadata["generation"] = 1
        self._default(resource, obj)
        self._admission_policies(resource, obj, None)
        if dry_run:
            return copy.deepcopy(obj)
        self.objects[key] = obj
        self._record("ADDED", resource, obj, None)
        return copy.deepcopy(obj)

    def _update(
        self,
        resource: Resource,
        key: tuple[str, str, str],
        new: Obj,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        old = self.objects[key]
        if subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status", {})}
        elif resource.kind != "Namespace" or subresource is None:
            status = old.get("status")
            new = copy.deepcopy(new)
            if status is not None and resource.kind not in ("ConfigMap", "Secret"):
                new["status"] = status
        metadata = new.setdefault("metadata", {})
        for immutable in ("uid", "creationTimestamp", "name", "namespace"):
            if immutable in old["metadata"]:
                metadata[immutable] = old["metadata"][immutable]
        if old["metadata"].get("deletionTimestamp"):
            metadata["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        self._validate(resource, new)
        if resource.kind == "Secret":
            self._fold_string_data(new)
        if resource.kind == "Service":
            self._keep_allocations(old, new)
        if "generation" in old["metadata"]:
            changed_spec = old.get("spec") != new.get("spec")
            metadata["generation"] = old["metadata"]["generation"] + (1 if changed_spec else 0)
        if subresource is None:  # admission runs on an update that changes nothing, too
            self._kueue_webhooks(resource, new)
            self._admission_policies(resource, new, old)
        if self._comparable(old) == self._comparable(new):
            return copy.deepcopy(old)
        metadata["resourceVersion"] = self._next_rv()
        if dry_run:
            return copy.deepcopy(new)
        self.objects[key] = new
        self._record("MODIFIED", resource, new, old)
        return copy.deepcopy(new)

    @staticmethod
    def _comparable(obj: Obj) -> Obj:
        trimmed = copy.deepcopy(obj)
        trimmed["metadata"].pop("resourceVersion", None)
        trimmed["metadata"].pop("managedFields", None)
        return trimmed

    def _delete(self, resource: Resource, key: tuple[str, str, str], orphan: bool = False) -> Obj:
        obj = self.objects[key]
        if resource.kind == "Namespace":
            if obj["status"].get("phase") != "Terminating":
                updated = copy.deepcopy(obj)
                updated["status"]["phase"] = "Terminating"
                updated["metadata"]["deletionTimestamp"] = now()
                updated["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[key] = updated
                self._record("MODIFIED", resource, updated, obj)
                return copy.deepcopy(updated)
            return copy.deepcopy(obj)
        del self.objects[key]
        if resource.kind == "Pod" and self.kubelet is not None:
            self.kubelet.stop(obj)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", resource, gone, obj)
        self._collect_dependents(obj["metadata"]["uid"], orphan)
        if resource.kind == "Secret" and obj.get("type") == SERVICE_ACCOUNT_TOKEN:
            self.tokens = {t: sa for t, sa in self.tokens.items() if t != self._token_of(obj)}
        return gone

    @staticmethod
    def _token_of(secret: Obj) -> str:
        encoded = (secret.get("data") or {}).get("token", "")
        return base64.b64decode(encoded).decode() if encoded else ""

    def _collect_dependents(self, owner_uid: str, orphan: bool = False) -> None:
        """Garbage collection: background propagation deletes what the owner owned; the Orphan
        policy (`kubectl delete --cascade=orphan`) only drops the owner from their references."""
        for key, obj in list(self.objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if key not in self.objects or not any(ref.get("uid") == owner_uid for ref in owners):
                continue
            if orphan:
                kept = copy.deepcopy(obj)
                kept["metadata"]["ownerReferences"] = [r for r in owners if r.get("uid") != owner_uid]
                self._update(self._resource_of_key(key), key, kept)
            else:
                self._delete(self._resource_of_key(key), key)

    @staticmethod
    def _resource_of_key(key: tuple[str, str, str]) -> Resource:
        return next(r for r in RESOURCES if r.qualified == key[0])

    # -- validation, defaulting and admission

    def _validate(self, resource: Resource, obj: Obj) -> None:
        name = obj["metadata"].get("name", "")
        pattern = DNS1123_LABEL if resource.kind in ("Namespace", "Service") else DNS1123_SUBDOMAIN
        limit = 63 if pattern is DNS1123_LABEL else 253
        if resource.kind not in ("Event",) and (not pattern.match(name) or len(name) > limit):
            kind = "RFC 1123 label" if pattern is DNS1123_LABEL else "RFC 1123 subdomain"
            raise invalid(
                resource,
                name,
                [
                    (
                        "metadata.name",
                        name,
                        f"a lowercase {kind} must consist of lower case alphanumeric characters, '-' or '.', "
                        "and must start and end with an alphanumeric character",
                    )
                ],
            )
        if resource.kind == "StatefulSet" and len(name) > 52:
            raise invalid(resource, name, [("metadata.name", name, "must be no more than 52 characters")])
        for label_key, label_value in (obj["metadata"].get("labels") or {}).items():
            if (
                not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", str(label_value))
                or len(str(label_value)) > 63
            ):
                raise invalid(
                    resource,
                    name,
                    [
                        (
                            "metadata.labels",
                            str(label_value),
                            f"a valid label must be an empty string or consist of "
                            f"alphanumeric characters (label {label_key})",
                        )
                    ],
                )
        if resource.kind == "Secret":
            for data_key, data_value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(data_value, validate=True)
                except (ValueError, TypeError):
                    raise invalid(
                        resource, name, [(f"data[{data_key}]", "...", "illegal base64 data")]
                    ) from None
        if resource.kind == "Service":
            spec = obj.get("spec") or {}
            headless = spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [""])[0] == "None"
            if headless and spec.get("type") in ("NodePort", "LoadBalancer"):
                # ValidateService: a headless Service cannot be exposed on nodes or a load balancer.
                raise invalid(
                    resource,
                    name,
                    [
                        (
                            "spec.clusterIPs[0]",
                            "None",
                            f"may not be set to 'None' for {spec['type']} services",
                        )
                    ],
                )
        if resource.kind == "StatefulSet":
            spec = obj.get("spec") or {}
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
                raise invalid(
                    resource,
                    name,
                    [
                        (
                            "spec.template.metadata.labels",
                            str(template_labels),
                            "`selector` does not match template `labels`",
                        )
                    ],
                )
        if resource.kind in ("StatefulSet", "Pod"):
            pod_spec = (
                obj.get("spec", {}).get("template", {}).get("spec")
                if resource.kind == "StatefulSet"
                else obj.get("spec")
            )
            for container in (pod_spec or {}).get("containers") or []:
                for section in ("requests", "limits"):
                    for resource_name, amount in (
                        (container.get("resources") or {}).get(section) or {}
                    ).items():
                        try:
                            quantity(amount)
                        except ValueError as error:
                            raise invalid(
                                resource,
                                name,
                                [
                                    (
                                        f"spec.containers[{container.get('name')}].resources.{section}[{resource_name}]",
                                        str(amount),
                                        str(error),
                                    )
                                ],
                            ) from None

    def _default(self, resource: Resource, obj: Obj) -> None:
        if resource.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif resource.kind == "Secret":
            obj.setdefault("type", "Opaque")
            self._fold_string_data(obj)
        elif resource.kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [""])[0] == "None":
                # Headless: no virtual IP is allocated, and "None" stays in both fields.
                spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
            else:
                self._next_cluster_ip += 1
                spec["clusterIP"] = f"10.43.{self._next_cluster_ip // 250}.{self._next_cluster_ip % 250}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
                if spec["type"] in ("NodePort", "LoadBalancer") and "nodePort" not in port:
                    port["nodePort"] = self._allocate_node_port()
            obj["status"] = {"loadBalancer": {}}
        elif resource.kind == "PersistentVolumeClaim":
            obj["status"] = {"phase": "Pending"}
        elif resource.kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
            obj["spec"].setdefault("restartPolicy", "Always")
        elif resource.kind == "StatefulSet":
            obj["spec"].setdefault("replicas", 1)
            obj["spec"].setdefault("podManagementPolicy", "OrderedReady")
            obj["status"] = {"replicas": 0, "availableReplicas": 0, "currentReplicas": 0}
        elif resource.kind == "ResourceQuota":
            obj["status"] = {"hard": dict(obj.get("spec", {}).get("hard") or {}), "used": {}}

    def _allocate_node_port(self) -> int:
        used = {
            port.get("nodePort")
            for (qualified, _, _), svc in self.objects.items()
            if qualified == "services"
            for port in svc["spec"].get("ports") or []
        }
        while self._next_node_port in used:
            self._next_node_port += 1
        self._next_node_port += 1
        return self._next_node_port - 1

    def _keep_allocations(self, old: Obj, new: Obj) -> None:
        spec = new.setdefault("spec", {})
        spec["clusterIP"], spec["clusterIPs"] = old["spec"]["clusterIP"], old["spec"]["clusterIPs"]
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        old_ports = {p.get("name") or p.get("port"): p for p in old["spec"].get("ports") or []}
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            previous = old_ports.get(port.get("name") or port.get("port"), {})
            if spec["type"] in ("NodePort", "LoadBalancer") and "nodePort" not in port:
                port["nodePort"] = previous.get("nodePort") or self._allocate_node_port()

    @staticmethod
    def _fold_string_data(obj: Obj) -> None:
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()

    def _kueue_webhooks(self, resource: Resource, obj: Obj) -> None:
        """Kueue's mutating webhooks, which run before the validating admission below."""
        if not self.kueue:
            return
        if resource.kind == "StatefulSet":
            kueue.mutate_statefulset(obj)
        elif resource.kind == "Pod" and "uid" not in obj["metadata"]:
            kueue.mutate_pod(obj)

    def _admit(self, resource: Resource, obj: Obj) -> None:
        """Admission in kube-apiserver's order: LimitRanger, PodSecurity, then ResourceQuota."""
        if resource.kind == "Pod":
            self._limit_ranger(obj)
            self._pod_security(obj)
        self._resource_quota(resource, obj)

    def _admission_policies(
        self, resource: Resource, obj: Obj, old: Obj | None, subresource: str | None = None
    ) -> None:
        """ValidatingAdmissionPolicy (tests/standins/admission_policy.py), after defaulting. A
        subresource's request (`statefulsets/scale`) carries that subresource's object (a Scale),
        and only rules naming the subresource match it."""
        policies = self.list("ValidatingAdmissionPolicy")
        if not policies:
            return
        metadata = obj["metadata"]
        request = admission_policy.Request(
            operation="CREATE" if old is None else "UPDATE",
            group=resource.group,
            version=resource.version,
            resource=f"{resource.plural}/{subresource}" if subresource else resource.plural,
            kind="Scale" if subresource == "scale" else resource.kind,
            namespace=metadata.get("namespace", "") if resource.namespaced else "",
            name=metadata["name"],
            user=self._requester,
            groups=groups_of(self._requester),
        )
        denied = admission_policy.admit(
            request, obj, old, policies, self.list("ValidatingAdmissionPolicyBinding"),
            lambda kind, name, namespace: self.objects.get(
                (next(r for r in RESOURCES if r.kind == kind).qualified, namespace, name)
            ),
        )  # fmt: skip
        if denied:
            raise ApiError(
                denied.code,
                denied.reason,
                denied.message,
                {"name": metadata["name"], "kind": resource.plural},
            )

    def _limit_ranger(self, pod: Obj) -> None:
        """LimitRanger's defaults for containers: `default` fills unset limits, `defaultRequest`
        unset requests (a request left unset beside a set limit takes the limit, as API
        defaulting does first). Max, min and PVC ranges are not modelled."""
        for limit_range in self.list("LimitRange", pod["metadata"]["namespace"]):
            for item in (limit_range.get("spec") or {}).get("limits") or []:
                if item.get("type") != "Container":
                    continue
                for container in pod.get("spec", {}).get("containers") or []:
                    resources = container.setdefault("resources", {})
                    limits, requests = (
                        resources.setdefault("limits", {}),
                        resources.setdefault("requests", {}),
                    )
                    for name, amount in (item.get("defaultRequest") or item.get("default") or {}).items():
                        requests.setdefault(name, limits.get(name, amount))
                    for name, amount in (item.get("default") or {}).items():
                        limits.setdefault(name, amount)

    def _pod_security(self, pod: Obj) -> None:
        """PodSecurity's enforce mode (tests/standins/pod_security.py): the namespace's
        `pod-security.kubernetes.io/enforce` label, else the configured default, except in the
        exempt namespaces."""
        namespace = pod["metadata"]["namespace"]
        labels = (self.objects[("namespaces", "", namespace)]["metadata"].get("labels")) or {}
        level = labels.get("pod-security.kubernetes.io/enforce")
        if level is None:
            if namespace in self.pod_security_exempt_namespaces:
                return
            level = self.pod_security_default
        message = pod_security.violation(pod, level)
        if message:
            name = pod["metadata"]["name"]
            raise ApiError(
                403, "Forbidden", f'pods "{name}" is forbidden: {message}', {"name": name, "kind": "pods"}
            )

    def _resource_quota(self, resource: Resource, obj: Obj) -> None:
        """ResourceQuota admission, for what the quota controller counts."""
        if resource.kind not in QUOTA_KINDS:
            return
        namespace = obj["metadata"]["namespace"]
        for quota in self.list("ResourceQuota", namespace):
            hard = quota["spec"].get("hard") or {}
            used = self._quota_usage(namespace, hard)
            wanted = self._usage_of(resource.kind, obj, hard)
            for name, amount in wanted.items():
                if amount and used.get(name, Fraction(0)) + amount > quantity(hard[name]):
                    requested = ",".join(f"{n}={format_quantity(a, n)}" for n, a in wanted.items() if a)
                    used_text = ",".join(
                        f"{n}={format_quantity(used.get(n, Fraction(0)), n)}" for n in wanted
                    )
                    limited = ",".join(f"{n}={hard[n]}" for n in wanted)
                    what = f'{resource.plural} "{obj["metadata"]["name"]}"'
                    raise ApiError(
                        403,
                        "Forbidden",
                        f"{what} is forbidden: exceeded quota: "
                        f"{quota['metadata']['name']}, requested: {requested}, used: {used_text}, "
                        f"limited: {limited}",
                        {"name": obj["metadata"]["name"], "kind": resource.plural},
                    )

    @staticmethod
    def _container_amounts(pod: Obj, section: str) -> dict[str, Fraction]:
        totals: dict[str, Fraction] = {}
        for container in pod.get("spec", {}).get("containers") or []:
            resources = container.get("resources") or {}
            amounts = dict(resources.get("limits") or {}) if section == "requests" else {}
            # Extended resources and unset requests default to the limits, as the API server does.
            amounts = {
                k: v for k, v in amounts.items() if "/" in k or k not in (resources.get("requests") or {})
            }
            amounts.update(resources.get(section) or {})
            for name, amount in amounts.items():
                totals[name] = totals.get(name, Fraction(0)) + quantity(amount)
        return totals

    def _usage_of(self, kind: str, obj: Obj, hard: dict[str, str]) -> dict[str, Fraction]:
        usage: dict[str, Fraction] = {}
        counted = next(r for r in RESOURCES if r.kind == kind).qualified
        for name in hard:
            # Object counts (pkg/quota/v1/generic: `count/RESOURCE.GROUP`, core resources bare).
            if name == f"count/{counted}":
                usage[name] = Fraction(1)
            elif kind == "Pod":
                if name == "pods":
                    usage[name] = Fraction(1)
                elif name.startswith("limits."):
                    usage[name] = self._container_amounts(obj, "limits").get(name[7:], Fraction(0))
                elif name.startswith("requests.") and name != "requests.storage":
                    usage[name] = self._container_amounts(obj, "requests").get(name[9:], Fraction(0))
                elif name in ("cpu", "memory"):
                    usage[name] = self._container_amounts(obj, "requests").get(name, Fraction(0))
            elif kind == "Service":
                # pkg/quota/v1/evaluator/core/services.go: a NodePort or LoadBalancer Service
                # counts a node port per port; a LoadBalancer one also counts as a load balancer.
                spec = obj.get("spec") or {}
                exposed = spec.get("type") in ("NodePort", "LoadBalancer")
                if name == "services":
                    usage[name] = Fraction(1)
                elif name == "services.nodeports":
                    usage[name] = Fraction(len(spec.get("ports") or []) if exposed else 0)
                elif name == "services.loadbalancers":
                    usage[name] = Fraction(1 if spec.get("type") == "LoadBalancer" else 0)
            elif kind == "PersistentVolumeClaim":
                if name == "persistentvolumeclaims":
                    usage[name] = Fraction(1)
                elif name == "requests.storage":
                    storage = obj.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "0")
                    usage[name] = quantity(storage)
        return usage

    def _quota_usage(self, namespace: str, hard: dict[str, str]) -> dict[str, Fraction]:
        used: dict[str, Fraction] = {}
        for kind in QUOTA_KINDS:
            for obj in self.list(kind, namespace):
                if kind == "Pod" and obj["status"].get("phase") in ("Succeeded", "Failed"):
                    continue
                for name, amount in self._usage_of(kind, obj, hard).items():
                    used[name] = used.get(name, Fraction(0)) + amount
        return used

    # -- authentication and RBAC

    def authenticate(self, header: str | None) -> str | None:
        # The scheme in any case, as kube-apiserver's bearer-token authenticator takes it (RFC 7235):
        # the client's in-cluster loader sends "bearer".
        if not header or header[:7].lower() != "bearer ":
            return None
        token = header[7:].strip()
        if token == self.admin_token:
            return "system:admin"
        with self._lock:
            account = self.tokens.get(token)
        return f"system:serviceaccount:{account[0]}:{account[1]}" if account else None

    def authorize(
        self,
        user: str,
        verb: str,
        resource: Resource,
        subresource: str | None,
        namespace: str | None,
        name: str | None,
    ) -> None:
        if user == "system:admin":
            return
        wanted = f"{resource.plural}/{subresource}" if subresource else resource.plural
        with self._lock:
            for rules in self._rules_for(user, namespace):
                for rule in rules:
                    if (
                        ({"*", verb} & set(rule.get("verbs") or []))
                        and ({"*", resource.group} & set(rule.get("apiGroups") or []))
                        and ({"*", wanted} & set(rule.get("resources") or []))
                        and (not rule.get("resourceNames") or name in rule["resourceNames"])
                    ):
                        return
        scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        group = f'"{resource.group}"' if resource.group else '""'
        raise ApiError(
            403,
            "Forbidden",
            f"{resource.qualified}{' ' + repr(name).replace(chr(39), chr(34)) if name else ''}"
            f' is forbidden: User "{user}" cannot {verb} resource "{wanted}" in API group {group}{scope}',
            {"name": name or "", "group": resource.group, "kind": resource.plural},
        )

    def _rules_for(self, user: str, namespace: str | None) -> Iterator[list[Obj]]:
        def subject_matches(binding: Obj) -> bool:
            for subject in binding.get("subjects") or []:
                if subject.get("kind") == "ServiceAccount" and user == (
                    f"system:serviceaccount:{subject.get('namespace')}:{subject.get('name')}"
                ):
                    return True
                if subject.get("kind") == "User" and subject.get("name") == user:
                    return True
            return False

        def role_rules(ref: Obj, binding_namespace: str) -> list[Obj]:
            if ref.get("kind") == "ClusterRole":
                role = self.objects.get(("clusterroles.rbac.authorization.k8s.io", "", ref.get("name", "")))
            else:
                role = self.objects.get(
                    ("roles.rbac.authorization.k8s.io", binding_namespace, ref.get("name", ""))
                )
            return (role or {}).get("rules") or []

        for binding in self.list("ClusterRoleBinding"):
            if subject_matches(binding):
                yield role_rules(binding["roleRef"], "")
        if namespace:
            for binding in self.list("RoleBinding", namespace):
                if subject_matches(binding):
                    yield role_rules(binding["roleRef"], namespace)

    # -- request handling

    def handle(self, request: Request) -> tuple[int, Obj]:
        """The HTTP status and body of one request that is not a watch, made as its user; what
        the controllers do in between is made as CONTROLLER."""
        with self._changed:
            self._requester = request.user
            try:
                return self._handle(request)
            finally:
                self._requester = CONTROLLER

    def _handle(self, request: Request) -> tuple[int, Obj]:
        resource = request.resource
        assert resource is not None
        with self._changed:
            key = self._key(resource, request.namespace, request.name or "")
            dry_run = request.query.get("dryRun") == "All"
            if request.method == "GET":
                if request.name is None:
                    return 200, self._list(resource, request)
                if request.subresource == "pendingworkloads":
                    return 200, self._pending_workloads(resource, request)
                if key not in self.objects:
                    raise not_found(resource, request.name)
                if request.subresource == "scale":
                    return 200, self._scale_of(self.objects[key])
                return 200, copy.deepcopy(self.objects[key])
            if request.method == "POST":
                if request.name is not None:
                    raise ApiError(
                        405,
                        "MethodNotAllowed",
                        "the server does not allow this method on the requested resource",
                    )
                obj = self._decode(request, resource)
                return (200 if dry_run else 201), self._create(resource, request.namespace, obj, dry_run)
            if request.method == "PUT":
                obj = self._decode(request, resource)
                if key not in self.objects:
                    raise not_found(resource, request.name or "")
                if request.subresource == "scale":
                    return 200, self._set_scale(resource, key, obj)
                self._check_name(resource, request, obj)
                expected = obj.get("metadata", {}).get("resourceVersion")
                if expected and expected != self.objects[key]["metadata"]["resourceVersion"]:
                    raise self._conflict(resource, request.name or "")
                return 200, self._update(resource, key, obj, request.subresource, dry_run)
            if request.method == "PATCH":
                created = key not in self.objects
                return (201 if created else 200), self._patch(resource, key, request, dry_run)
            if request.method == "DELETE":
                if request.name is None:
                    doomed = self._list(resource, request)["items"]
                    for item in doomed:
                        self._delete(
                            resource,
                            self._key(resource, item["metadata"].get("namespace"), item["metadata"]["name"]),
                        )
                    return 200, {
                        "kind": f"{resource.kind}List",
                        "apiVersion": resource.api_version,
                        "metadata": {"resourceVersion": str(self._resource_version)},
                        "items": doomed,
                    }
                if key not in self.objects:
                    raise not_found(resource, request.name)
                options = json.loads(request.body) if request.body.strip() else {}
                precondition = (options.get("preconditions") or {}).get("resourceVersion")
                if precondition and precondition != self.objects[key]["metadata"]["resourceVersion"]:
                    raise self._conflict(resource, request.name)
                policy = options.get("propagationPolicy")
                orphan = policy == "Orphan" or options.get("orphanDependents") is True
                gone = self._delete(resource, key, orphan)
                if resource.kind == "Namespace":
                    return 200, gone
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": request.name,
                        "group": resource.group,
                        "kind": resource.plural,
                        "uid": gone["metadata"]["uid"],
                    },
                }
        raise ApiError(405, "MethodNotAllowed", f"method {request.method} is not allowed")

    def _pending_workloads(self, resource: Resource, request: Request) -> Obj:
        """Kueue's visibility API (an aggregated API server in a real cluster)."""
        workloads, local_queues = self.list("Workload"), self.list("LocalQueue")
        if resource.kind == "ClusterQueue":
            if (f"clusterqueues.{kueue.GROUP}", "", request.name or "") not in self.objects:
                raise not_found(resource, request.name or "")
            return kueue.pending_summary(workloads, local_queues, request.name or "")
        local_queue = self.objects.get(
            (f"localqueues.{kueue.GROUP}", request.namespace or "", request.name or "")
        )
        if local_queue is None:
            raise not_found(resource, request.name or "")
        return kueue.pending_summary(
            workloads, local_queues, local_queue["spec"]["clusterQueue"], request.namespace, request.name
        )

    @staticmethod
    def _conflict(resource: Resource, name: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {resource.qualified} "{name}": the '
            "object has been modified; please apply your changes to the latest version and try again",
            {"name": name, "group": resource.group, "kind": resource.plural},
        )

    @staticmethod
    def _check_name(resource: Resource, request: Request, obj: Obj) -> None:
        body_name = obj.get("metadata", {}).get("name")
        if body_name and body_name != request.name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({body_name}) does not match the name on the URL ({request.name})",
            )

    @staticmethod
    def _decode(request: Request, resource: Resource) -> Obj:
        try:
            obj = yaml.safe_load(request.body) if "yaml" in request.content_type else json.loads(request.body)
        except (ValueError, yaml.YAMLError) as error:
            raise ApiError(400, "BadRequest", f"the request body could not be decoded: {error}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        if request.subresource == "scale":
            return obj
        if obj.get("kind", resource.kind) != resource.kind or obj.get(
            "apiVersion", resource.api_version
        ) not in (resource.api_version,):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not "
                f"match the expected API version ({resource.api_version})",
            )
        obj.setdefault("kind", resource.kind)
        obj.setdefault("apiVersion", resource.api_version)
        return obj

    def _patch(self, resource: Resource, key: tuple[str, str, str], request: Request, dry_run: bool) -> Obj:
        content_type = request.content_type.split(";")[0].strip()
        name = request.name or ""
        if content_type == "application/apply-patch+yaml":
            if not request.query.get("fieldManager"):
                raise ApiError(
                    400, "BadRequest", "PATCH, application/apply-patch+yaml requires a non-empty fieldManager"
                )
            applied = self._decode(request, resource)
            self._check_name(resource, request, applied)
            applied.setdefault("metadata", {})["name"] = name
            manager = {
                "manager": request.query["fieldManager"],
                "operation": "Apply",
                "apiVersion": resource.api_version,
                "time": now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
            if key not in self.objects:
                if request.subresource:
                    raise not_found(resource, name)
                if request.namespace:
                    applied["metadata"].setdefault("namespace", request.namespace)
                self.authorize(request.user, "create", resource, None, request.namespace, name)
                applied["metadata"]["managedFields"] = [manager]
                return self._create(resource, request.namespace, applied, dry_run)
            existing = self.objects[key]
            merged = merge_patch(existing, applied)
            merged["metadata"]["managedFields"] = [
                *[
                    m
                    for m in existing["metadata"].get("managedFields") or []
                    if m["manager"] != manager["manager"]
                ],
                manager,
            ]
            if request.subresource == "scale":
                return self._set_scale(resource, key, merged)
            return self._update(resource, key, merged, request.subresource, dry_run)
        if key not in self.objects:
            raise not_found(resource, name)
        try:
            patch = json.loads(request.body)
        except ValueError as error:
            raise ApiError(400, "BadRequest", f"the request body could not be decoded: {error}") from None
        target = self._scale_of(self.objects[key]) if request.subresource == "scale" else self.objects[key]
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            patched = json_patch(target, patch)
        elif content_type == "application/merge-patch+json":
            patched = merge_patch(target, patch)
        elif content_type == "application/strategic-merge-patch+json":
            patched = merge_patch(target, patch, by_name=True)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json-patch+json, "
                "application/merge-patch+json, application/apply-patch+yaml, "
                "application/strategic-merge-patch+json",
            )
        if request.subresource == "scale":
            return self._set_scale(resource, key, patched)
        expected = patch.get("metadata", {}).get("resourceVersion") if isinstance(patch, dict) else None
        if expected and expected != self.objects[key]["metadata"]["resourceVersion"]:
            raise self._conflict(resource, name)
        return self._update(resource, key, patched, request.subresource, dry_run)

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                key: obj["metadata"][key]
                for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": selector},
        }

    def _set_scale(self, resource: Resource, key: tuple[str, str, str], scale: Obj) -> Obj:
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(
                resource, key[2], [("spec.replicas", str(replicas), "must be greater than or equal to 0")]
            )
        expected = scale.get("metadata", {}).get("resourceVersion")
        if expected and expected != self.objects[key]["metadata"]["resourceVersion"]:
            raise self._conflict(resource, key[2])
        updated = copy.deepcopy(self.objects[key])
        updated["spec"]["replicas"] = replicas
        before, after = self._scale_of(self.objects[key]), self._scale_of(updated)
        self._admission_policies(resource, after, before, "scale")
        return self._scale_of(self._update(resource, key, updated, "scale"))

    def _matching(self, resource: Resource, request: Request) -> Callable[[Obj], bool]:
        labels = label_matcher(request.query["labelSelector"]) if request.query.get("labelSelector") else None
        fields = field_matcher(request.query["fieldSelector"]) if request.query.get("fieldSelector") else None

        def matches(obj: Obj) -> bool:
            if request.namespace and obj["metadata"].get("namespace") != request.namespace:
                return False
            if labels and not labels(obj["metadata"].get("labels") or {}):
                return False
            return not (fields and not fields(obj))

        return matches

    def _list(self, resource: Resource, request: Request) -> Obj:
        matches = self._matching(resource, request)
        # Stored objects are replaced on every change, never edited in place, so a list can hand
        # them out without copying (a thousand deep copies would dominate a list's time).
        items = [
            obj
            for (qualified, _, _), obj in sorted(self.objects.items())
            if qualified == resource.qualified and matches(obj)
        ]
        metadata: Obj = {"resourceVersion": str(self._resource_version)}
        start = (
            int(base64.b64decode(request.query["continue"]).decode()) if request.query.get("continue") else 0
        )
        limit = int(request.query.get("limit") or 0)
        if limit and start + limit < len(items):
            metadata["continue"] = base64.b64encode(str(start + limit).encode()).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
            items = items[start : start + limit]
        else:
            items = items[start:]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": items,
        }

    def watch(self, resource: Resource, request: Request) -> Iterator[Obj]:
        """The events of a watch, until its timeout, the server's stop, or the client's leaving."""
        matches = self._matching(resource, request)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        start_rv = request.query.get("resourceVersion", "")
        initial = query_bool(request.query.get("sendInitialEvents"))
        with self._changed:
            cursor = len(self.events)
            pending: list[Obj] = []
            if initial or start_rv in ("", "0"):
                for (qualified, _, _), obj in sorted(self.objects.items()):
                    if qualified == resource.qualified and matches(obj):
                        pending.append({"type": "ADDED", "object": copy.deepcopy(obj)})
                if initial:
                    pending.append(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": resource.kind,
                                "apiVersion": resource.api_version,
                                "metadata": {
                                    "resourceVersion": str(self._resource_version),
                                    "annotations": {INITIAL_EVENTS_END: "true"},
                                },
                            },
                        }
                    )
            else:
                cursor = next(
                    (i for i, e in enumerate(self.events) if e.resource_version > int(start_rv)),
                    len(self.events),
                )
        yield from pending
        while not self._stopping.is_set():
            with self._changed:
                while cursor >= len(self.events) and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(min(remaining, 1.0))
                batch, cursor = self.events[cursor:], len(self.events)
            for event in batch:
                if event.resource is not resource:
                    continue
                now_matches = matches(event.obj)
                was_matching = event.previous is not None and matches(event.previous)
                if event.type == "DELETED":
                    if was_matching:
                        yield {"type": "DELETED", "object": event.obj}
                elif now_matches:
                    yield {"type": "MODIFIED" if was_matching else "ADDED", "object": event.obj}
                elif was_matching:
                    yield {"type": "DELETED", "object": event.obj}

    # -- controllers

    def _controllers(self) -> None:
        """Reconcile the namespaces that changed, and those with pods still on their way."""
        cursor = 0
        while not self._stopping.is_set():
            with self._changed:
                if cursor >= len(self.events):
                    self._changed.wait(0.05)
                changed = {event.obj["metadata"].get("namespace", "") for event in self.events[cursor:]}
                cursor = len(self.events)
                if "" in changed:  # nodes, classes, namespaces: anything may be affected
                    changed |= {ns["metadata"]["name"] for ns in self.list("Namespace")}
                self._reconcile(changed | self._unsettled)

    def _reconcile(self, namespaces: set[str]) -> None:
        self._unsettled = set()
        self._finish_namespaces()
        for namespace in sorted(namespaces - {""}):
            if ("namespaces", "", namespace) not in self.objects:
                continue
            self._fill_tokens(namespace)
            self._bind_claims(namespace)
            self._balance_services(namespace)
            owned = self._owned_pods(namespace)
            for sts in self._scan("StatefulSet", namespace):
                self._reconcile_statefulset(sts, owned.get(sts["metadata"]["uid"], []))
            if self.kueue:
                self._reconcile_kueue(namespace)
            secrets_by_name = {s["metadata"]["name"]: s for s in self._scan("Secret", namespace)}
            for pod in self.list("Pod", namespace):
                self._run_pod(pod)
                if self.kubelet is not None:
                    self.kubelet.refresh(pod, secrets_by_name)
                current = self.objects.get(("pods", namespace, pod["metadata"]["name"]), {})
                # A pod behind scheduling gates waits for a change, which comes as an event.
                gated = bool((current.get("spec") or {}).get("schedulingGates"))
                if current.get("status", {}).get("phase") == "Pending" and not gated:
                    self._unsettled.add(namespace)
            owned = self._owned_pods(namespace)
            for sts in self._scan("StatefulSet", namespace):
                self._statefulset_status(sts, owned.get(sts["metadata"]["uid"], []))
            quotas = BY_KIND[("v1", "ResourceQuota")]
            for quota in self.list("ResourceQuota", namespace):
                used = self._quota_usage(namespace, quota["spec"].get("hard") or {})
                status = {
                    "hard": dict(quota["spec"].get("hard") or {}),
                    "used": {n: format_quantity(a, n) for n, a in used.items()},
                }
                if quota.get("status") != status:
                    quota["status"] = status
                    self._update(
                        quotas, self._key(quotas, namespace, quota["metadata"]["name"]), quota, "status"
                    )
        if self.kueue:
            self._admit_workloads()
        if self.kubelet is not None and namespaces:
            # The cluster's network policy controller follows every pod's address.
            self.kubelet.sync_network(self.list("Pod"), self.list("Namespace"), self.list("NetworkPolicy"))

    def _admit_workloads(self) -> None:
        """Kueue's scheduler: one pass over every ClusterQueue's pending workloads, once per round
        of the controllers; a workload it admits has its pods ungated in the next round."""
        workloads_resource = BY_KIND[(f"{kueue.GROUP}/{kueue.VERSION}", "Workload")]
        admission = kueue.Admission(
            self.list("ClusterQueue"),
            self.list("LocalQueue"),
            self.list("ResourceFlavor"),
            {ns["metadata"]["name"]: ns["metadata"].get("labels") or {} for ns in self.list("Namespace")},
            lambda pod: self._container_amounts(pod, "requests"),
            quantity,
            self.kueue_excluded_prefixes,
        )
        for workload in admission.run(self.list("Workload"), now()):
            key = self._key(
                workloads_resource, workload["metadata"]["namespace"], workload["metadata"]["name"]
            )
            self._update(workloads_resource, key, workload, "status")

    def _reconcile_kueue(self, namespace: str) -> None:
        """Kueue's controllers in one namespace: a workload per queued StatefulSet, held while it
        is scaled to zero, and the pods of admitted workloads ungated."""
        workloads_resource = BY_KIND[(f"{kueue.GROUP}/{kueue.VERSION}", "Workload")]
        pods = BY_KIND[("v1", "Pod")]
        owned = self._owned_pods(namespace)
        workloads = {
            ref.get("uid"): w
            for w in self._scan("Workload", namespace)
            for ref in w["metadata"].get("ownerReferences") or []
            if ref.get("kind") == "StatefulSet"
        }
        for sts in self._scan("StatefulSet", namespace):
            metadata = sts["metadata"]
            if not kueue.managed(namespace, metadata.get("labels") or {}):
                continue
            replicas = int(sts["spec"].get("replicas", 1))
            workload = workloads.get(metadata["uid"])
            if workload is None:
                self._create(workloads_resource, namespace, kueue.new_workload(sts))
                continue
            updated = copy.deepcopy(workload)
            if replicas == 0 and not kueue.on_hold(workload):
                kueue.hold(updated, now())
            elif replicas > 0 and kueue.on_hold(workload):
                kueue.release_hold(updated, replicas, now())
            if updated != workload:
                key = self._key(workloads_resource, namespace, workload["metadata"]["name"])
                self._update(workloads_resource, key, updated)
                self._update(workloads_resource, key, updated, "status")
        flavors = {f["metadata"]["name"]: f for f in self.list("ResourceFlavor")}
        for workload in self._scan("Workload", namespace):
            owner = next(iter(workload["metadata"].get("ownerReferences") or []), {})
            count = int(workload["spec"]["podSets"][0].get("count", 1))
            for pod in owned.get(owner.get("uid", ""), []):
                changed = copy.deepcopy(pod)
                labelled = kueue.label_pod(changed, workload, count)
                ungated = kueue.admitted(workload) and kueue.ungate(changed, workload, flavors)
                if labelled or ungated:
                    self._update(pods, self._key(pods, namespace, pod["metadata"]["name"]), changed)

    def _finish_namespaces(self) -> None:
        for ns in self.list("Namespace"):
            if ns["status"].get("phase") != "Terminating":
                continue
            name = ns["metadata"]["name"]
            for key in [k for k in self.objects if k[1] == name]:
                if key in self.objects:
                    self._delete(self._resource_of_key(key), key)
            namespaces = BY_KIND[("v1", "Namespace")]
            key = self._key(namespaces, None, name)
            obj = self.objects.pop(key)
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = self._next_rv()
            self._record("DELETED", namespaces, gone, obj)

    def _fill_tokens(self, namespace: str) -> None:
        secrets_resource = BY_KIND[("v1", "Secret")]
        for secret in self.list("Secret", namespace):
            account = (secret["metadata"].get("annotations") or {}).get("kubernetes.io/service-account.name")
            if (
                secret.get("type") != SERVICE_ACCOUNT_TOKEN
                or not account
                or (secret.get("data") or {}).get("token")
            ):
                continue
            if not self.objects.get(("serviceaccounts", namespace, account)):
                continue
            token = secrets.token_urlsafe(32)
            self.tokens[token] = (namespace, account)
            secret["data"] = {
                **(secret.get("data") or {}),
                "token": base64.b64encode(token.encode()).decode(),
                "ca.crt": base64.b64encode(self.ca_pem).decode(),
                "namespace": base64.b64encode(namespace.encode()).decode(),
            }
            self._update(
                secrets_resource, self._key(secrets_resource, namespace, secret["metadata"]["name"]), secret
            )

    def _bind_to_named_volume(self, pvc: Obj) -> None:
        """A claim that names its volume (static provisioning), as the PV controller binds it
        (pkg/controller/volume/persistentvolume/pv_controller.go, syncUnboundClaim with
        spec.volumeName): a free volume (no claimRef) binds only when checkVolumeSatisfyClaim
        passes (at least the storage asked, the same class, "" for none, every access mode asked,
        the same volume mode), else a VolumeMismatch event; a volume reserved for this claim
        (IsVolumeBoundToClaim: claimRef's namespace and name, and uid when set) binds with no
        check at all, "finishing the binding"; one claimed by another claim, or missing, leaves
        the claim Pending."""
        volumes = BY_KIND[("v1", "PersistentVolume")]
        key = self._key(volumes, "", pvc["spec"]["volumeName"])
        pv = self.objects.get(key)
        if pv is None:
            return
        meta, claim_spec, pv_spec = pvc["metadata"], pvc["spec"], pv.get("spec") or {}
        reserved = pv_spec.get("claimRef")
        if reserved:
            mine = (reserved.get("namespace"), reserved.get("name")) == (meta["namespace"], meta["name"])
            if not mine or reserved.get("uid") not in (None, "", meta["uid"]):
                return
        else:
            asked = quantity(claim_spec["resources"]["requests"]["storage"])
            fits = (
                quantity((pv_spec.get("capacity") or {}).get("storage", "0")) >= asked
                and (claim_spec.get("storageClassName") or "") == (pv_spec.get("storageClassName") or "")
                and set(claim_spec.get("accessModes") or []) <= set(pv_spec.get("accessModes") or [])
                and claim_spec.get("volumeMode", "Filesystem") == pv_spec.get("volumeMode", "Filesystem")
            )
            if not fits:
                why = "Volume's size is smaller than requested or StorageClass or access modes do not match"
                self._event(pvc, "Warning", "VolumeMismatch", why, "persistentvolume-controller")
                return
        pv = copy.deepcopy(pv)
        pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                                  "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1"}  # fmt: skip
        pv["status"] = {"phase": "Bound"}
        self._update(volumes, key, pv)
        self._update(volumes, key, pv, "status")
        claims = BY_KIND[("v1", "PersistentVolumeClaim")]
        claim_key = self._key(claims, meta["namespace"], meta["name"])
        pvc["status"] = {
            "phase": "Bound",
            "accessModes": pv_spec.get("accessModes", []),
            "capacity": {"storage": (pv_spec.get("capacity") or {}).get("storage", "0")},
        }
        self._update(claims, claim_key, pvc, "status")

    def _bind_claims(self, namespace: str) -> None:
        claims = BY_KIND[("v1", "PersistentVolumeClaim")]
        for pvc in self.list("PersistentVolumeClaim", namespace):
            if pvc["status"].get("phase") != "Pending":
                continue
            if pvc["spec"].get("volumeName"):
                self._bind_to_named_volume(pvc)
                continue
            class_name = pvc["spec"].get("storageClassName")
            known = class_name and self.objects.get(("storageclasses.storage.k8s.io", "", class_name))
            if known and not self.behaviour.provisioner_stuck:
                pvc["spec"]["volumeName"] = f"pvc-{pvc['metadata']['uid']}"
                pvc["status"] = {
                    "phase": "Bound",
                    "accessModes": pvc["spec"].get("accessModes", []),
                    "capacity": {"storage": pvc["spec"]["resources"]["requests"]["storage"]},
                }
                key = self._key(claims, pvc["metadata"]["namespace"], pvc["metadata"]["name"])
                self._update(claims, key, pvc)
                self._update(claims, key, pvc, "status")
                self._event(
                    pvc,
                    "Normal",
                    "ProvisioningSucceeded",
                    f"Successfully provisioned volume {pvc['spec']['volumeName']}",
                    "persistentvolume-controller",
                )
            elif not known:
                self._event(
                    pvc,
                    "Warning",
                    "ProvisioningFailed",
                    f'storageclass.storage.k8s.io "{class_name}" not found',
                    "persistentvolume-controller",
                )
            else:
                self._event(
                    pvc,
                    "Normal",
                    "ExternalProvisioning",
                    "Waiting for a volume to be created either by "
                    f"the external provisioner '{known['provisioner']}' or manually by the system "
                    "administrator",
                    "persistentvolume-controller",
                )

    def _balance_services(self, namespace: str) -> None:
        """k3s's ServiceLB: a LoadBalancer Service gets the first node's address as its ingress."""
        services = BY_KIND[("v1", "Service")]
        nodes = self._scan("Node", "")
        address = next(
            (
                a["address"]
                for n in nodes
                for a in n["status"].get("addresses", [])
                if a["type"] == "InternalIP"
            ),
            None,
        )
        for service in self._scan("Service", namespace):
            if service["spec"].get("type") != "LoadBalancer" or service["status"]["loadBalancer"].get(
                "ingress"
            ):
                continue
            if address:
                key = self._key(services, namespace, service["metadata"]["name"])
                self._update(
                    services, key, {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}, "status"
                )

    def _event(self, obj: Obj, event_type: str, reason: str, message: str, component: str) -> None:
        """Record an Event once per object and reason, counting repeats as the real recorder does."""
        namespace = obj["metadata"].get("namespace") or "default"
        events = BY_KIND[("v1", "Event")]
        for existing in self.list("Event", namespace):
            involved = existing["involvedObject"]
            if involved.get("uid") == obj["metadata"]["uid"] and existing["reason"] == reason:
                if existing["message"] == message:
                    return
                existing.update(message=message, count=existing["count"] + 1, lastTimestamp=now())
                self._update(events, self._key(events, namespace, existing["metadata"]["name"]), existing)
                return
        self._create(
            events,
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{obj['metadata']['name']}.{secrets.token_hex(8)}",
                    "namespace": namespace,
                },
                "involvedObject": {
                    "kind": obj["kind"],
                    "apiVersion": obj["apiVersion"],
                    "name": obj["metadata"]["name"],
                    "namespace": namespace,
                    "uid": obj["metadata"]["uid"],
                    "resourceVersion": obj["metadata"]["resourceVersion"],
                },
                "reason": reason,
                "message": message,
                "type": event_type,
                "count": 1,
                "source": {"component": component},
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "reportingComponent": component,
            },
        )

    def _owned_pods(self, namespace: str) -> dict[str, list[Obj]]:
        """The namespace's pods by their owner's uid."""
        owned: dict[str, list[Obj]] = {}
        for (qualified, ns, _), pod in self.objects.items():
            if qualified == "pods" and ns == namespace:
                for ref in pod["metadata"].get("ownerReferences") or []:
                    owned.setdefault(ref.get("uid", ""), []).append(pod)
        return owned

    def _reconcile_statefulset(self, sts: Obj, pods_owned: list[Obj]) -> None:
        pods = BY_KIND[("v1", "Pod")]
        namespace, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        wanted = sts["spec"].get("replicas", 1)
        owned = {pod["metadata"]["name"]: pod for pod in pods_owned}
        for ordinal in range(wanted):
            pod_name = f"{name}-{ordinal}"
            if pod_name in owned:
                continue
            template = copy.deepcopy(sts["spec"]["template"])
            metadata = template.get("metadata") or {}
            labels = {
                **(metadata.get("labels") or {}),
                "apps.kubernetes.io/pod-index": str(ordinal),
                "statefulset.kubernetes.io/pod-name": pod_name,
            }
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": metadata.get("annotations") or {},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "StatefulSet",
                            "name": name,
                            "uid": sts["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    **template["spec"],
                    "hostname": pod_name,
                    "subdomain": sts["spec"].get("serviceName", ""),
                },
            }
            try:
                self._create(pods, namespace, pod)
            except ApiError as error:
                self._event(
                    sts,
                    "Warning",
                    "FailedCreate",
                    f"create Pod {pod_name} in StatefulSet {name} failed error: {error.message}",
                    "statefulset-controller",
                )
                return
            self._event(
                sts,
                "Normal",
                "SuccessfulCreate",
                f"create Pod {pod_name} in StatefulSet {name} successful",
                "statefulset-controller",
            )
        for pod_name in sorted(owned, reverse=True):
            if int(pod_name.rsplit("-", 1)[1]) >= wanted:
                self._delete(pods, self._key(pods, namespace, pod_name))
                self._event(
                    sts,
                    "Normal",
                    "SuccessfulDelete",
                    f"delete Pod {pod_name} in StatefulSet {name} successful",
                    "statefulset-controller",
                )

    def _statefulset_status(self, sts: Obj, owned: list[Obj]) -> None:
        resource = BY_KIND[("apps/v1", "StatefulSet")]
        ready = sum(1 for pod in owned if self._condition(pod, "Ready") == "True")
        status = {
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": len(owned),
            "readyReplicas": ready,
            "currentReplicas": len(owned),
            "updatedReplicas": len(owned),
            "availableReplicas": ready,
            "collisionCount": 0,
        }
        if sts.get("status") != status:
            key = self._key(resource, sts["metadata"]["namespace"], sts["metadata"]["name"])
            self._update(resource, key, {"status": status}, "status")

    @staticmethod
    def _condition(obj: Obj, kind: str) -> str | None:
        for condition in obj.get("status", {}).get("conditions") or []:
            if condition["type"] == kind:
                return str(condition["status"])
        return None

    def _container_ready(self, pod: Obj) -> bool:
        """With a real kubelet stand-in: start the pod's container, and wait for its readiness probe."""
        namespace = pod["metadata"]["namespace"]
        services = self._scan("Service", namespace)
        secrets_by_name = {s["metadata"]["name"]: s for s in self._scan("Secret", namespace)}
        claims = {c["metadata"]["name"]: c for c in self._scan("PersistentVolumeClaim", namespace)}
        self.kubelet.start(pod, secrets_by_name, claims, services)
        return bool(self.kubelet.ready(pod, services))

    def _free_on(self, node: Obj) -> dict[str, Fraction]:
        free = {name: quantity(amount) for name, amount in node["status"].get("allocatable", {}).items()}
        for pod in self.list("Pod"):
            if pod["spec"].get("nodeName") != node["metadata"]["name"] or pod["status"].get("phase") in (
                "Succeeded",
                "Failed",
            ):
                continue
            for name, amount in self._container_amounts(pod, "requests").items():
                free[name] = free.get(name, Fraction(0)) - amount
        return free

    @staticmethod
    def _affinity_allows(pod: Obj, labels: dict[str, str]) -> bool:
        """requiredDuringSchedulingIgnoredDuringExecution as the scheduler reads it
        (kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/, "Node affinity", and the
        API's NodeSelector and NodeSelectorTerm): the terms are ORed, a term's expressions ANDed, and
        an empty term matches no node. Expressions on labels only (In, NotIn, Exists,
        DoesNotExist); Gt, Lt and matchFields are not modelled and match nothing."""
        required = ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        ) or {}
        terms = required.get("nodeSelectorTerms")
        if not terms:
            return True

        def holds(expression: Obj) -> bool:
            key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
            if operator == "In":
                return labels.get(key) in values
            if operator == "NotIn":
                return labels.get(key) not in values
            if operator == "Exists":
                return key in labels
            if operator == "DoesNotExist":
                return key not in labels
            return False

        return any(
            bool(term.get("matchExpressions"))
            and not term.get("matchFields")
            and all(holds(e) for e in term["matchExpressions"])
            for term in terms
        )

    @staticmethod
    def _selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
        """A metav1.LabelSelector as apimachinery's LabelSelectorAsSelector reads it: a null selector
        selects nothing, an empty one ({}) everything; matchLabels and matchExpressions are ANDed; In,
        NotIn (which a missing key satisfies), Exists and DoesNotExist. An unknown operator, which
        validation would refuse, selects nothing."""
        if selector is None:
            return False
        if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
            return False
        for expression in selector.get("matchExpressions") or []:
            key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
            if operator == "In":
                held = key in labels and labels[key] in values
            elif operator == "NotIn":
                held = key not in labels or labels[key] not in values
            elif operator == "Exists":
                held = key in labels
            elif operator == "DoesNotExist":
                held = key not in labels
            else:
                held = False
            if not held:
                return False
        return True

    def _term_matches(self, term: Obj, owner: Obj, pod: Obj) -> bool:
        """Whether `pod` is one of the pods a PodAffinityTerm of `owner` selects (the API's
        PodAffinityTerm, and the scheduler's AffinityTerm.Matches): its labels match `labelSelector`,
        and its namespace is listed in `namespaces` or its namespace's labels match
        `namespaceSelector`; neither of the two means the owner's own namespace, and an empty
        namespaceSelector ({}) means every namespace. `matchLabelKeys` and `mismatchLabelKeys`, which
        kube-apiserver folds into the selector when it creates the pod, are not modelled."""
        namespace = pod["metadata"].get("namespace", "")
        listed = term.get("namespaces") or []
        namespace_selector = term.get("namespaceSelector")
        if not listed and namespace_selector is None:
            in_scope = namespace == owner["metadata"].get("namespace", "")
        else:
            labels = ((self.objects.get(("namespaces", "", namespace)) or {}).get("metadata") or {}).get(
                "labels"
            ) or {}
            in_scope = namespace in listed or self._selector_matches(namespace_selector, labels)
        return in_scope and self._selector_matches(
            term.get("labelSelector"), pod["metadata"].get("labels") or {}
        )

    @staticmethod
    def _pod_affinity_terms(pod: Obj, kind: str, when: str) -> list[tuple[Obj, int]]:
        """A pod's PodAffinityTerms of `kind` (podAffinity, podAntiAffinity) and `when` (required,
        preferred), each with its weight (a required term's is 1, the scheduler's default
        hardPodAffinityWeight, which only scoring reads)."""
        rules = ((pod["spec"].get("affinity") or {}).get(kind) or {}).get(
            f"{when}DuringSchedulingIgnoredDuringExecution"
        ) or []
        if when == "required":
            return [(term, 1) for term in rules]
        return [(rule.get("podAffinityTerm") or {}, int(rule.get("weight", 0))) for rule in rules]

    def _scheduled_pods(self) -> list[tuple[Obj, dict[str, str]]]:
        """The pods the scheduler's cache holds, each with its node's labels: bound to a node that
        exists, and not Succeeded or Failed (the scheduler watches pods with that field selector).
        A pod scheduled earlier in this round counts, since _run_pod stores its nodeName at once."""
        nodes = {
            name: node["metadata"].get("labels") or {}
            for (q, _, name), node in self.objects.items()
            if q == "nodes"
        }
        return [
            (pod, nodes[pod["spec"]["nodeName"]])
            for (q, _, _), pod in self.objects.items()
            if q == "pods"
            and pod["spec"].get("nodeName") in nodes
            and pod["status"].get("phase") not in ("Succeeded", "Failed")
        ]

    def _inter_pod_affinity(
        self, pod: Obj
    ) -> tuple[Callable[[dict[str, str]], str | None], Callable[[dict[str, str]], int]]:
        """kube-scheduler's InterPodAffinity plugin, as its filter and its score for a node's labels
        (kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/, "Inter-pod affinity and
        anti-affinity"; the API's PodAffinity, PodAntiAffinity and WeightedPodAffinityTerm; the
        plugin's filtering.go and scoring.go). A topology domain is a (topologyKey, value) pair of a
        node's labels; an existing pod counts in the domains of the node it is bound to.

        The filter refuses a node, in upstream's order and with its reasons:
        - "node(s) didn't match pod affinity rules": for the pod's required podAffinity terms, the node
          lacks a term's topologyKey, or some term's domain holds no existing pod that matches all
          the terms; except that when no existing pod anywhere matches all of them and the pod
          matches them itself, it passes (the first pod of a group with affinity to itself);
        - "node(s) didn't match pod anti-affinity rules": for a required podAntiAffinity term of the
          pod, the node's domain holds a pod the term matches (a node without the topologyKey label
          cannot violate the term, so it passes);
        - "node(s) didn't satisfy existing pods anti-affinity rules": an existing pod's required
          podAntiAffinity term matches this pod, and the node shares that term's domain with it.

        The score sums over existing pods, in the domains of their nodes: + weight for each preferred
        podAffinity term of the pod that matches the existing pod, - weight for each preferred
        podAntiAffinity term; and symmetrically + 1 (hardPodAffinityWeight) for each required, and
        + or - weight for each preferred, podAffinity or podAntiAffinity term of the existing pod that
        matches this pod. A node without a term's topologyKey label gets nothing from it. Upstream
        then normalises the scores to 0-100 and adds the other score plugins' (resources, topology
        spread with its system defaults, image locality...); the stand-in compares the raw sums and
        models no other score, so the first feasible node in name order wins a tie."""
        existing = self._scheduled_pods()
        affinity_terms = [term for term, _ in self._pod_affinity_terms(pod, "podAffinity", "required")]
        anti_terms = [term for term, _ in self._pod_affinity_terms(pod, "podAntiAffinity", "required")]
        affinity_counts: dict[tuple[str, str], int] = {}
        anti_counts: dict[tuple[str, str], int] = {}
        existing_anti_counts: dict[tuple[str, str], int] = {}
        scores: dict[tuple[str, str], int] = {}

        def add(counts: dict[tuple[str, str], int], term: Obj, labels: dict[str, str], amount: int) -> None:
            key = term.get("topologyKey", "")
            if key in labels:
                counts[(key, labels[key])] = counts.get((key, labels[key]), 0) + amount

        for other, labels in existing:
            if affinity_terms and all(self._term_matches(t, pod, other) for t in affinity_terms):
                for term in affinity_terms:
                    add(affinity_counts, term, labels, 1)
            for term in anti_terms:
                if self._term_matches(term, pod, other):
                    add(anti_counts, term, labels, 1)
            for term, _ in self._pod_affinity_terms(other, "podAntiAffinity", "required"):
                if self._term_matches(term, other, pod):
                    add(existing_anti_counts, term, labels, 1)
            for owner, candidate, sign, kind, when in (
                (pod, other, 1, "podAffinity", "preferred"),
                (pod, other, -1, "podAntiAffinity", "preferred"),
                (other, pod, 1, "podAffinity", "required"),
                (other, pod, 1, "podAffinity", "preferred"),
                (other, pod, -1, "podAntiAffinity", "preferred"),
            ):
                for term, weight in self._pod_affinity_terms(owner, kind, when):
                    if self._term_matches(term, owner, candidate):
                        add(scores, term, labels, sign * weight)
        first_of_group = not affinity_counts and all(self._term_matches(t, pod, pod) for t in affinity_terms)

        def refusal(labels: dict[str, str]) -> str | None:
            if affinity_terms:
                if any(t.get("topologyKey", "") not in labels for t in affinity_terms):
                    return "node(s) didn't match pod affinity rules"
                domains = [(t["topologyKey"], labels[t["topologyKey"]]) for t in affinity_terms]
                if not all(affinity_counts.get(d, 0) > 0 for d in domains) and not first_of_group:
                    return "node(s) didn't match pod affinity rules"
            for term in anti_terms:
                key = term.get("topologyKey", "")
                if key in labels and anti_counts.get((key, labels[key]), 0) > 0:
                    return "node(s) didn't match pod anti-affinity rules"
            if any(existing_anti_counts.get(domain, 0) > 0 for domain in labels.items()):
                return "node(s) didn't satisfy existing pods anti-affinity rules"
            return None

        def score(labels: dict[str, str]) -> int:
            return sum(scores.get(domain, 0) for domain in labels.items())

        return refusal, score

    def _schedule(self, pod: Obj) -> tuple[str | None, str]:
        """One scheduling cycle for `pod`: the filters in kube-scheduler's order (NodeUnschedulable,
        NodeAffinity with the nodeSelector, NodeResourcesFit, then InterPodAffinity), then among the
        nodes that pass, the one with the highest InterPodAffinity score, the first in name order on
        a tie. The FailedScheduling message counts each node under the first filter that refused it."""
        nodes = self.list("Node")
        requests = self._container_amounts(pod, "requests")
        selector = pod["spec"].get("nodeSelector") or {}
        reasons: dict[str, int] = {}
        for claim in [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v
        ]:
            pvc = self.objects.get(("persistentvolumeclaims", pod["metadata"]["namespace"], claim))
            if pvc is None:
                return None, f'0/{len(nodes)} nodes are available: persistentvolumeclaim "{claim}" not found.'
            if pvc["status"].get("phase") != "Bound":
                return None, (
                    f"0/{len(nodes)} nodes are available: pod has unbound immediate "
                    "PersistentVolumeClaims. preemption: 0/{0} nodes are available: "
                    "0 Preemption is not helpful for scheduling.".replace("{0}", str(len(nodes)))
                )
        refusal, score = self._inter_pod_affinity(pod)
        feasible: list[tuple[int, str]] = []
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            if node["spec"].get("unschedulable"):
                reasons["node(s) were unschedulable"] = reasons.get("node(s) were unschedulable", 0) + 1
                continue
            if any(labels.get(k) != v for k, v in selector.items()) or not self._affinity_allows(pod, labels):
                reason = "node(s) didn't match Pod's node affinity/selector"
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            free = self._free_on(node)
            short = [name for name, amount in requests.items() if amount > free.get(name, Fraction(0))]
            if short:
                for name in short:
                    reasons[f"Insufficient {name}"] = reasons.get(f"Insufficient {name}", 0) + 1
                continue
            refused = refusal(labels)
            if refused:
                reasons[refused] = reasons.get(refused, 0) + 1
                continue
            if not self.behaviour.unschedulable:
                feasible.append((score(labels), node["metadata"]["name"]))
        if feasible:
            best = max(points for points, _ in feasible)
            return next(name for points, name in feasible if points == best), ""
        if self.behaviour.unschedulable and not reasons:
            reasons["Insufficient nvidia.com/gpu"] = len(nodes)
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return None, f"0/{len(nodes)} nodes are available: {detail}."

    def _run_pod(self, pod: Obj) -> None:
        """The scheduler and the kubelet, one step at a time."""
        pods = BY_KIND[("v1", "Pod")]
        key = self._key(pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
        status = pod["status"]
        if not pod["spec"].get("nodeName") and pod["spec"].get("schedulingGates"):
            if self._condition(pod, "PodScheduled") is None:
                status["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "SchedulingGated",
                        "message": kueue.GATED_MESSAGE,
                        "lastTransitionTime": now(),
                        "lastProbeTime": None,
                    }
                ]
                self._update(pods, key, pod, "status")
            return
        if not pod["spec"].get("nodeName"):
            node, message = self._schedule(pod)
            if node is None:
                condition = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": now(),
                    "lastProbeTime": None,
                }
                previous = next(
                    (c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"), {}
                )
                if (previous.get("status"), previous.get("message")) != ("False", message):
                    status["conditions"] = [condition]
                    self._update(pods, key, pod, "status")
                self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
                return
            pod["spec"]["nodeName"] = node
            self._update(pods, key, pod)
            pod = copy.deepcopy(self.objects[key])
            pod["status"]["conditions"] = [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now(), "lastProbeTime": None}
            ]
            self._update(pods, key, pod, "status")
            self._event(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {key[1]}/{key[2]} to {node}",
                "default-scheduler",
            )
            self._pod_started[pod["metadata"]["uid"]] = time.monotonic()
            return
        if status.get("phase") != "Pending":
            return
        containers = pod["spec"]["containers"]
        if self.behaviour.image_pull_backoff:
            image = containers[0].get("image", "")
            status.update(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastTransitionTime": now(),
                        "lastProbeTime": None,
                    },
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ContainersNotReady",
                        "message": f"containers with unready status: [{containers[0]['name']}]",
                        "lastTransitionTime": now(),
                        "lastProbeTime": None,
                    },
                ],
                containerStatuses=[
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{image}"',
                            }
                        },
                    }
                    for c in containers
                ],
            )
            if self.objects[key]["status"] != status:
                self._update(pods, key, pod, "status")
                self._event(
                    pod,
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: code = '
                    "NotFound desc = failed to pull and unpack image: not found",
                    "kubelet",
                )
                self._event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet")
            return
        started = self._pod_started.setdefault(pod["metadata"]["uid"], time.monotonic())
        if time.monotonic() - started < self.behaviour.pod_start_delay:
            return
        if self.kubelet is not None and not self._container_ready(pod):
            failed = self.kubelet.failed(pod)
            if failed:
                self._crash_looping(pod, failed)
            return
        node_ip = next(
            (
                a["address"]
                for a in (self.objects.get(("nodes", "", pod["spec"]["nodeName"])) or {})
                .get("status", {})
                .get("addresses", [])
                if a["type"] == "InternalIP"
            ),
            "10.0.0.1",
        )
        pod_ip = self.kubelet.pod_ip(pod) if self.kubelet is not None else None
        status.update(
            phase="Running",
            hostIP=node_ip,
            podIP=pod_ip or self._allocate_pod_ip(),
            startTime=now(),
            conditions=[
                {"type": kind, "status": "True", "lastTransitionTime": now(), "lastProbeTime": None}
                for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            containerStatuses=[
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": f"sha256:{'0' * 64}",
                    "containerID": f"containerd://{secrets.token_hex(32)}",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now()}},
                }
                for c in containers
            ],
        )
        if pod["spec"].get("restartPolicy") == "Never" and self.kubelet is None:
            self._complete(pod)
        self._update(pods, key, pod, "status")
        for container in containers:
            self._event(pod, "Normal", "Started", f"Started container {container['name']}", "kubelet")

    def _allocate_pod_ip(self) -> str:
        """A pod's own address in k3s's cluster CIDR (10.42.0.0/16), one per pod started: pods that
        start in the same round do not share one."""
        self._next_pod_ip += 1
        return f"10.42.{self._next_pod_ip // 250}.{self._next_pod_ip % 250 + 2}"

    def _crash_looping(self, pod: Obj, failed: Obj) -> None:
        """A container that exited with an error, as the kubelet reports it between restarts: waiting
        in CrashLoopBackOff, with how it ended as its last state; the pod Pending while an init
        container fails, its app containers not yet created."""
        pods = BY_KIND[("v1", "Pod")]
        key = self._key(pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
        name = failed["name"]
        crashed = {
            "name": name,
            "ready": False,
            "restartCount": 1,
            "started": False,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": (
                f"back-off 10s restarting failed container={name} pod={pod['metadata']['name']}_"
                f"{pod['metadata']['namespace']}({pod['metadata']['uid']})")}},
            "lastState": {"terminated": {"exitCode": failed["exitCode"], "reason": "Error",
                                         "message": failed["message"],
                                         "startedAt": now(), "finishedAt": now()}},
        }  # fmt: skip
        status = pod["status"]
        if failed["init"]:
            status["initContainerStatuses"] = [crashed]
        else:
            status["containerStatuses"] = [crashed]
        if self.objects[key]["status"] != status:
            self._update(pods, key, pod, "status")
            self._event(pod, "Warning", "BackOff", "Back-off restarting failed container", "kubelet")

    def _complete(self, pod: Obj) -> None:
        """A run-to-completion pod's container exits: 0 for a command the behaviour knows, else 127."""
        succeeded = command_line(pod) in self.behaviour.command_output
        status = pod["status"]
        status["phase"] = "Succeeded" if succeeded else "Failed"
        for condition in status["conditions"]:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="False", reason="PodCompleted" if succeeded else "PodFailed")
        for container in status["containerStatuses"]:
            container.update(ready=False, started=False, state={"terminated": {
                "exitCode": 0 if succeeded else 127, "reason": "Completed" if succeeded else "Error",
                "startedAt": now(), "finishedAt": now()}})  # fmt: skip


# --- HTTP -----------------------------------------------------------------------------------


def discovery_resources(group: str, version: str) -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            entry
            for r in RESOURCES
            if r.group == group and r.version == version
            for entry in [
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": [
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                    **({"shortNames": list(r.short_names)} if r.short_names else {}),
                },
                *[
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": "Scale" if sub == "scale" else r.kind,
                        **({"group": "autoscaling", "version": "v1"} if sub == "scale" else {}),
                        "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                    }
                    for sub in r.subresources
                ],
            ]
        ],
    }


def served_groups(kueue_installed: bool) -> dict[str, str]:
    """Each API group served, with its one version."""
    return {
        r.group: r.version for r in RESOURCES if r.group and (kueue_installed or r.group not in KUEUE_GROUPS)
    }


def discovery_groups(kueue_installed: bool) -> Obj:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
            }
            for group, version in sorted(served_groups(kueue_installed).items())
        ],
    }


def openapi_v3_index(kueue_installed: bool) -> Obj:
    paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=standin"}}
    for group, version in sorted(served_groups(kueue_installed).items()):
        paths[f"apis/{group}/{version}"] = {
            "serverRelativeURL": f"/openapi/v3/apis/{group}/{version}?hash=standin"
        }
    return {"paths": paths}


def openapi_v3_document(group_version: str) -> Obj:
    """Only what kubectl reads to learn that the server validates fields itself."""
    parameter = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    paths = {}
    for r in RESOURCES:
        if (f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}") != group_version:
            continue
        prefix = f"/{group_version}/" + ("namespaces/{namespace}/" if r.namespaced else "")
        operations = {
            "parameters": [parameter],
            "responses": {},
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        }
        paths[prefix + r.plural] = {"post": operations}
        paths[prefix + r.plural + "/{name}"] = {"put": operations, "patch": operations}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (stand-in)", "version": VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeApiServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm each response would wait
    # for the client's delayed ACK (40 ms), which no real API server does.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the request log instead."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _send(self, code: int, body: Obj) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self, method: str) -> None:
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with state._lock:
            state.requests.append((method, self.path))
        if state.behaviour.latency:
            time.sleep(state.behaviour.latency)
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            user = state.authenticate(self.headers.get("Authorization"))
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            static = self._static(url.path)
            if static is not None:
                self._send(200, static)
                return
            proxied = PODS_PROXY.fullmatch(url.path)
            if proxied:
                self._send_proxied(user, *proxied.groups())
                return
            request = self._route(method, url.path, query, body, user)
            if request.subresource == "log":
                self._send_log(request)
                return
            verb = self._verb(request)
            state.authorize(
                user,
                verb,
                request.resource,
                request.subresource,
                request.namespace,  # type: ignore[arg-type]
                request.name,
            )
            if verb == "watch":
                self._stream(request)
                return
            code, result = state.handle(request)
            self._send(code, result)
        except ApiError as error:
            self._send(error.code, error.status())

    @staticmethod
    def _verb(request: Request) -> str:
        if request.method == "GET":
            if query_bool(request.query.get("watch")):
                return "watch"
            return "get" if request.name else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if request.name else "deletecollection",
        }[request.method]

    def _static(self, path: str) -> Obj | None:
        path = path.rstrip("/") or "/"
        if path == "/version":
            return VERSION
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server_state.port}"}
                ],
            }
        if path == "/api/v1":
            return discovery_resources("", "v1")
        if path == "/apis":
            return discovery_groups(self.server_state.kueue)
        if path == "/openapi/v3":
            return openapi_v3_index(self.server_state.kueue)
        if path.startswith("/openapi/v3/"):
            return openapi_v3_document(path[len("/openapi/v3/") :])
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "apis":
            if served_groups(self.server_state.kueue).get(parts[1]) != parts[2]:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return discovery_resources(parts[1], parts[2])
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes, user: str) -> Request:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if group in KUEUE_GROUPS and not self.server_state.kueue:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PATH:
            namespace, rest = rest[1], rest[2:]
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None or len(rest) > 3 or (namespace and not resource.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else None
        if subresource and subresource not in resource.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        content_type = self.headers.get("Content-Type") or "application/json"
        return Request(method, resource, namespace, name, subresource, query, content_type, body, user)

    def _send_proxied(self, user: str, namespace: str, name: str, port: str, path: str) -> None:
        """GET pods/NAME:PORT/proxy/PATH: RBAC's get on pods/proxy, then the pod's answer as it is;
        503 when the pod does not run or nothing answers there, as the API server's proxy says."""
        state = self.server_state
        pods = BY_KIND[("v1", "Pod")]
        state.authorize(user, "get", pods, "proxy", namespace, name)
        pod = state.get("Pod", name, namespace)
        if pod is None:
            raise not_found(pods, name)
        answer = state.proxied.get((namespace, name, int(port or 80)))
        if (pod.get("status") or {}).get("phase") != "Running" or answer is None:
            raise ApiError(
                503, "ServiceUnavailable",
                f"error trying to reach service: dial tcp {name}:{port}: connect: connection refused",
            )  # fmt: skip
        payload = answer(f"/{path}").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_log(self, request: Request) -> None:
        pod = self.server_state.get("Pod", request.name or "", request.namespace or "")
        if pod is None:
            raise not_found(BY_KIND[("v1", "Pod")], request.name or "")
        output = self.server_state.behaviour.command_output.get(command_line(pod))
        text = (
            output
            if output is not None
            else f"stand-in log of {request.name}: the fake API server runs no containers\n"
        )
        payload = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, request: Request) -> None:
        assert request.resource is not None
        events = self.server_state.watch(request.resource, request)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.wfile.flush()
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client closed the watch (TLS EOF, reset, broken pipe)
            pass
        self.close_connection = True


def main() -> None:
    """Run standalone, for trying kubectl against it by hand."""
    import argparse

    parser = argparse.ArgumentParser(description="Stand-in Kubernetes API server (tests only).")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the admin kubeconfig")
    parser.add_argument("--gpu-nodes", type=int, default=1)
    args = parser.parse_args()
    with FakeApiServer() as server:
        for index in range(args.gpu_nodes):
            server.add_gpu_node(f"gpu-{index + 1}")
        server.kubeconfig(args.kubeconfig)
        print(f"stand-in API server at {server.url}; kubeconfig {args.kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
