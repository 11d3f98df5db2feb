"""STAND-IN for the PodSecurity admission plugin's `baseline` level, used by kube_apiserver.py.

It follows the Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards/)
and their implementation in kubernetes/pod-security-admission (`policy/check_*.go`), point by
point for the baseline level at version `latest`:

- HostProcess (check_windowsHostProcess.go): pod and container `windowsOptions.hostProcess` unset or false;
- Host Namespaces (check_hostNamespaces.go): `hostNetwork`, `hostPID`, `hostIPC` unset or false;
- Privileged Containers (check_privileged.go): `securityContext.privileged` unset or false;
- Capabilities (check_capabilities_baseline.go): `capabilities.add` only from BASELINE_CAPABILITIES;
- HostPath Volumes (check_hostPathVolumes.go): no `hostPath` volume;
- Host Ports (check_hostPorts.go): `hostPort` unset or 0;
- AppArmor (check_appArmorProfile.go): profile type unset, RuntimeDefault or Localhost, and the
  beta annotation unset, `runtime/default` or `localhost/*`;
- SELinux (check_seLinuxOptions.go): type unset or one of SELINUX_TYPES, no user, no role;
- /proc Mount Type (check_procMount_baseline.go): unset or Default (unless `hostUsers: false`);
- Seccomp (check_seccompProfile_baseline.go): never Unconfined;
- Sysctls (check_sysctls.go): only SAFE_SYSCTLS;
- Probe and lifecycle hosts (check_hostProbesAndhostLifecycle.go, 1.34): no `.host`.

Checks run over initContainers, containers and ephemeralContainers (policy/visitor.go). The
message is the plugin's: `violates PodSecurity "baseline:latest": ` and each failing check as
`reason (detail)`, sorted by check ID and joined with ", " (policy/checks.go); the API server
wraps it in a 403 Forbidden for the pod (admission/response.go). As upstream, only pods are
refused: workloads such as StatefulSets are admitted, and their controller's pod create fails.

It does not model: the `restricted` level (no namespace the toolkit makes uses it; asking for it
raises), versions other than latest, warn and audit modes, exemptions by user or RuntimeClass.
"""

from __future__ import annotations

from typing import Any

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
LEVELS = ("privileged", "baseline", "restricted")

Obj = dict[str, Any]


def _quote(names: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _containers(spec: Obj) -> list[Obj]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def _who(names: list[str]) -> str:
    return f"container {_quote(names)}" if len(names) == 1 else f"containers {_quote(names)}"


def _baseline_checks(pod: Obj) -> dict[str, tuple[str, str]]:
    """Each failing baseline check: check ID -> (reason, detail)."""
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    containers = _containers(spec)
    failed: dict[str, tuple[str, str]] = {}

    def context(container: Obj) -> Obj:
        return container.get("securityContext") or {}

    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    apparmor = [
        name
        for name, value in annotations.items()
        if name.startswith("container.apparmor.security.beta.kubernetes.io/")
        and value != "runtime/default"
        and not str(value).startswith("localhost/")
    ]
    profiles = [pod_context, *(context(c) for c in containers)]
    bad_types = [
        (p.get("appArmorProfile") or {}).get("type")
        for p in profiles
        if (p.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost")
    ]
    if apparmor or bad_types:
        details = [f'must not set AppArmor profile type to "{t}"' for t in sorted(set(bad_types))]
        details += [f"annotation {name}" for name in apparmor]
        failed["appArmorProfile"] = ("forbidden AppArmor profile", "; ".join(details))

    capabilities: dict[str, list[str]] = {}
    for container in containers:
        added = (context(container).get("capabilities") or {}).get("add") or []
        extra = [cap for cap in added if cap not in BASELINE_CAPABILITIES]
        if extra:
            capabilities[container["name"]] = extra
    if capabilities:
        extra = sorted({cap for caps in capabilities.values() for cap in caps})
        where = "in securityContext.capabilities.add"
        failed["capabilities_baseline"] = (
            "non-default capabilities",
            f"{_who(list(capabilities))} must not include {_quote(extra)} {where}",
        )

    namespaces = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    if namespaces:
        failed["hostNamespaces"] = ("host namespaces", ", ".join(namespaces))

    host_paths = [volume["name"] for volume in spec.get("volumes") or [] if "hostPath" in volume]
    if host_paths:
        noun = "volume" if len(host_paths) == 1 else "volumes"
        failed["hostPathVolumes"] = ("hostPath volumes", f"{noun} {_quote(host_paths)}")

    host_ports: dict[str, list[int]] = {}
    for container in containers:
        ports = [int(p["hostPort"]) for p in container.get("ports") or [] if p.get("hostPort")]
        if ports:
            host_ports[container["name"]] = ports
    if host_ports:
        ports = sorted({port for found in host_ports.values() for port in found})
        verb = "uses" if len(host_ports) == 1 else "use"
        noun = "hostPort" if len(ports) == 1 else "hostPorts"
        listed = ", ".join(map(str, ports))
        failed["hostPorts"] = ("hostPort", f"{_who(list(host_ports))} {verb} {noun} {listed}")

    probe_hosts: dict[str, list[str]] = {}
    for container in containers:
        handlers = [container.get(p) or {} for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [h or {} for h in (container.get("lifecycle") or {}).values()]
        hosts = [
            action["host"]
            for handler in handlers
            for action in (handler.get("httpGet") or {}, handler.get("tcpSocket") or {})
            if action.get("host")
        ]
        if hosts:
            probe_hosts[container["name"]] = hosts
    if probe_hosts:
        hosts = sorted({host for found in probe_hosts.values() for host in found})
        failed["hostProbesAndHostLifecycle"] = (
            "probe or lifecycle host",
            f"{_who(list(probe_hosts))} uses probe or lifecycle host {_quote(hosts)}",
        )

    privileged = [c["name"] for c in containers if context(c).get("privileged")]
    if privileged:
        failed["privileged"] = (
            "privileged",
            f"{_who(privileged)} must not set securityContext.privileged=true",
        )

    if spec.get("hostUsers") is not False:
        unmasked = [c["name"] for c in containers if context(c).get("procMount", "Default") != "Default"]
        if unmasked:
            failed["procMount"] = (
                "procMount",
                f"{_who(unmasked)} must not set securityContext.procMount to "
                f'"{context(containers[0]).get("procMount")}"',
            )

    selinux_problems = []
    for options in (p.get("seLinuxOptions") or {} for p in profiles):
        if options.get("type") and options["type"] not in SELINUX_TYPES:
            selinux_problems.append(f'type "{options["type"]}"')
        if options.get("user"):
            selinux_problems.append("user may not be set")
        if options.get("role"):
            selinux_problems.append("role may not be set")
    if selinux_problems:
        failed["seLinuxOptions"] = (
            "seLinuxOptions",
            "pod set forbidden securityContext.seLinuxOptions: " + "; ".join(dict.fromkeys(selinux_problems)),
        )

    unconfined = [p for p in profiles if (p.get("seccompProfile") or {}).get("type") == "Unconfined"]
    if unconfined:
        who = "pod" if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined" else "containers"
        failed["seccompProfile_baseline"] = (
            "seccompProfile",
            f'{who} must not set securityContext.seccompProfile.type to "Unconfined"',
        )

    sysctls = [s["name"] for s in pod_context.get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    if sysctls:
        failed["sysctls"] = ("forbidden sysctls", ", ".join(sysctls))

    host_process = [
        c["name"] for c in containers if (context(c).get("windowsOptions") or {}).get("hostProcess")
    ]
    if host_process or (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        failed["windowsHostProcess"] = (
            "hostProcess",
            f"pod and {_who(host_process or [c['name'] for c in containers])} must not set "
            "securityContext.windowsOptions.hostProcess=true",
        )
    return failed


def violation(pod: Obj, level: str) -> str | None:
    """The plugin's message for a pod that `level` refuses, or None when it is admitted."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}")
    if level == "privileged":
        return None
    if level == "restricted":
        raise NotImplementedError("the stand-in models PodSecurity's baseline level only")
    failed = _baseline_checks(pod)
    if not failed:
        return None
    parts = [f"{reason} ({detail})" if detail else reason for _, (reason, detail) in sorted(failed.items())]
    return f'violates PodSecurity "{level}:latest": ' + ", ".join(parts)
