"""A thin layer over the official `kubernetes` client: plain dicts in and out, one-line errors.

The toolkit's objects are rendered as manifests (dicts), so it talks to the API through the
client's ApiClient (authentication, TLS, kubeconfig handling) without the typed models.

Of the ApiClient it uses only what every major version of the client has kept: the
Configuration's `host` and `auth_settings()` (the bearer token, refreshed by the kubeconfig
loader's hook) and `rest_client.pool_manager`, the urllib3 pool built from the kubeconfig's TLS,
proxy and retry settings. The rest is urllib3's own documented API. `call_api`,
`update_params_for_auth`, the REST client's `request` and `RESTResponse` all changed shape at
version 37 (the OpenAPI generator's new Python template), so the toolkit calls none of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from toolkit.errors import BadInputError, ToolkitError, UnreachableError

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

FIELD_MANAGER = "toolkit"
Manifest = dict[str, Any]
# Where Kubernetes mounts a pod's service account: its token, the cluster's CA and its namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        prefix = f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            prefix += f"/namespaces/{quote(namespace)}"
        path = f"{prefix}/{self.plural}"
        if name:
            path += f"/{quote(name)}"
        if subresource:
            path += f"/{subresource}"
        return path


KINDS = {
    "Namespace": Kind("v1", "namespaces", False),
    "Node": Kind("v1", "nodes", False),
    "Pod": Kind("v1", "pods", True),
    "Service": Kind("v1", "services", True),
    "Secret": Kind("v1", "secrets", True),
    "ConfigMap": Kind("v1", "configmaps", True),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims", True),
    "PersistentVolume": Kind("v1", "persistentvolumes", False),
    "ServiceAccount": Kind("v1", "serviceaccounts", True),
    "ResourceQuota": Kind("v1", "resourcequotas", True),
    "LimitRange": Kind("v1", "limitranges", True),
    "Event": Kind("v1", "events", True),
    "StatefulSet": Kind("apps/v1", "statefulsets", True),
    "Role": Kind("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": Kind("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "NetworkPolicy": Kind("networking.k8s.io/v1", "networkpolicies", True),
    "Ingress": Kind("networking.k8s.io/v1", "ingresses", True),
    "StorageClass": Kind("storage.k8s.io/v1", "storageclasses", False),
    "RuntimeClass": Kind("node.k8s.io/v1", "runtimeclasses", False),
    # Kueue's (toolkit/gpu_queue.py), where the cluster runs it.
    "Workload": Kind("kueue.x-k8s.io/v1beta2", "workloads", True),
    "LocalQueue": Kind("kueue.x-k8s.io/v1beta2", "localqueues", True),
    "ClusterQueue": Kind("kueue.x-k8s.io/v1beta2", "clusterqueues", False),
    "ResourceFlavor": Kind("kueue.x-k8s.io/v1beta2", "resourceflavors", False),
}


class ApiError(ToolkitError):
    """The API server refused a request; the message is its Status message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


@dataclass
class Kube:
    """A connection to one cluster's API server, as one kubeconfig context describes it."""

    api: Any  # kubernetes.client.ApiClient
    server: str
    namespace: str | None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = 30,
    ) -> Manifest:
        data = self._send(method, path, query, body, content_type, timeout).data
        return json.loads(data) if data else {}

    def text(self, path: str, query: dict[str, Any] | None = None, timeout: float = 30) -> str:
        """A plain-text endpoint, such as a pod's log."""
        return self._send("GET", path, query, None, None, timeout).data.decode(errors="replace")

    def get(self, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", KINDS[kind].path(namespace, name))
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, *, labels: str | None = None, fields: str | None = None
    ) -> Manifest:
        query = {key: value for key, value in (("labelSelector", labels), ("fieldSelector", fields)) if value}
        return self.request("GET", KINDS[kind].path(namespace), query=query)

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply with the toolkit's field manager; creates the object when missing."""
        kind = KINDS[manifest["kind"]]
        metadata = manifest["metadata"]
        return self.request(
            "PATCH",
            kind.path(metadata.get("namespace"), metadata["name"]),
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    def create(self, manifest: Manifest) -> tuple[Manifest, bool]:
        """Create the object; (the object, True), or (the existing one, False) when it was there."""
        kind = KINDS[manifest["kind"]]
        metadata = manifest["metadata"]
        try:
            return self.request("POST", kind.path(metadata.get("namespace")), body=manifest), True
        except ApiError as error:
            if error.reason != "AlreadyExists":
                raise
        existing = self.get(manifest["kind"], metadata["name"], metadata.get("namespace"))
        if existing is None:
            raise ToolkitError(f"{manifest['kind']} {metadata['name']} exists and vanished; try again")
        return existing, False

    def create_if_missing(self, manifest: Manifest) -> bool:
        """Create the object unless one of its name exists: whether it was created. It reads
        first (one request when it exists): admission judges a create before the name is found
        taken, so a POST of an existing object under a full quota fails as over quota."""
        metadata = manifest["metadata"]
        if self.get(manifest["kind"], metadata["name"], metadata.get("namespace")) is not None:
            return False
        return self.create(manifest)[1]

    def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: Manifest, subresource: str | None = None
    ) -> Manifest:
        return self.request(
            "PATCH",
            KINDS[kind].path(namespace, name, subresource),
            query={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            self.request(
                "DELETE",
                KINDS[kind].path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    def watch(
        self,
        kind: str,
        namespace: str | None,
        *,
        fields: str | None = None,
        labels: str | None = None,
        resource_version: str | None = None,
        timeout: float = 300,
    ) -> Iterator[Manifest]:
        """Watch events ({"type", "object"}) until the server closes the watch after `timeout` seconds."""
        query: dict[str, Any] = {"watch": "true", "timeoutSeconds": int(timeout)}
        if fields:
            query["fieldSelector"] = fields
        if labels:
            query["labelSelector"] = labels
        if resource_version:
            query["resourceVersion"] = resource_version
        import urllib3

        response = self._send("GET", KINDS[kind].path(namespace), query, None, None, timeout + 10)
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            # A connection cut mid-watch (the API server restarted, a load balancer's idle cut).
            raise UnreachableError(
                f"lost the Kubernetes API at {self.server} while watching: {_cause(error)}"
            ) from None
        finally:
            response.release_conn()

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | None,
    ) -> BaseHTTPResponse:
        """The response to one request, its body not yet read; ApiError for a status outside 2xx."""
        import urllib3

        configuration = self.api.configuration
        url = configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        for auth in configuration.auth_settings().values():
            if auth["in"] == "header" and auth["value"]:
                headers[auth["key"]] = auth["value"]
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            response: BaseHTTPResponse = self.api.rest_client.pool_manager.request(
                method,
                url,
                body=None if body is None else json.dumps(body),
                headers=headers,
                timeout=urllib3.Timeout(total=timeout) if timeout else None,
                preload_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise UnreachableError(
                f"cannot reach the Kubernetes API at {self.server}: {_cause(error)}"
            ) from None
        if not 200 <= response.status <= 299:
            raise _api_error(response.status, response.data)
        return response


def _cause(error: BaseException) -> str:
    """The human part of a urllib3 error: its reason, without the connection's repr before it."""
    import re

    text = str(getattr(error, "reason", None) or error)
    return re.sub(r"^(\w*Connection\([^)]*\)|<[^>]*>|None): ", "", text)


def _api_error(status: int, data: bytes) -> ApiError:
    try:
        body = json.loads(data)
        message = body.get("message") or f"HTTP {status}"
        reason = body.get("reason") or ""
    except ValueError:
        message, reason = (data.decode(errors="replace").strip() or f"HTTP {status}"), ""
    if status == 401:
        message = "the API server refused the credentials in the kubeconfig (401 Unauthorized)"
    return ApiError(status, reason, message)


def connect(kubeconfig: Path | None = None, context: str | None = None) -> Kube:
    """A client for the kubeconfig's context; a one-line error when there is none or it is broken.

    In a pod (the toolkit's own CronJobs), with no kubeconfig given, in KUBECONFIG or at
    ~/.kube/config, it connects as the pod's service account instead.
    """
    import os

    from_env = os.environ.get("KUBECONFIG")
    path = kubeconfig or Path(os.path.expanduser((from_env or "~/.kube/config").split(os.pathsep)[0]))
    if not path.is_file():
        in_a_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").is_file()
        if kubeconfig is None and not from_env and in_a_pod:
            return _connect_in_cluster()
        raise BadInputError(
            f"no kubeconfig at {path}: pass --kubeconfig, set KUBECONFIG, or get one with "
            "'toolkit cluster kubeconfig' (operators) or from your operator (users)"
        )
    # The client imports every API model (a third of a second): only once there is a kubeconfig.
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=str(path), context=context, client_configuration=configuration)
        contexts, active = config.list_kube_config_contexts(config_file=str(path))
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace")
    except (ConfigException, KeyError, TypeError, ValueError) as error:
        raise BadInputError(f"{path} is not a usable kubeconfig: {error}") from None
    configuration.retries = 1
    api = client.ApiClient(configuration)
    return Kube(api=api, server=configuration.host, namespace=namespace)


def _connect_in_cluster() -> Kube:
    """The pod's service account: its token (read again as the kubelet rotates it), the cluster's
    CA, and the API server's address from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT."""
    from kubernetes import client
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = client.Configuration()
    loader = InClusterConfigLoader(
        token_filename=str(SERVICE_ACCOUNT_DIR / "token"), cert_filename=str(SERVICE_ACCOUNT_DIR / "ca.crt")
    )
    try:
        loader.load_and_set(configuration)
        namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip() or None
    except (ConfigException, OSError) as error:
        raise BadInputError(
            f"cannot use the pod's service account ({SERVICE_ACCOUNT_DIR}): {error}"
        ) from None
    configuration.retries = 1
    return Kube(api=client.ApiClient(configuration), server=configuration.host, namespace=namespace)
