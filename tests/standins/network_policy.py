"""STAND-IN for a NetworkPolicy controller: the role k3s's embedded kube-router network-policy
controller plays on a real cluster, for pods that tests/standins/podman_kubelet.py runs as podman
containers on one podman bridge network.

Two halves. `allowed` (with `allowed_traffic`) is the evaluator: pure, no side effects.
`NetworkPolicyEnforcer` programs iptables so that traffic between the containers obeys it.

The evaluator follows the upstream documentation point by point (kubernetes.io/docs/concepts/
services-networking/network-policies/, and the API reference, kubernetes.io/docs/reference/
kubernetes-api/policy-resources/network-policy-v1/):

- a policy selects pods of its own namespace by `spec.podSelector` (matchLabels; matchExpressions
  In, NotIn, Exists, DoesNotExist); an empty selector selects every pod of the namespace;
- `policyTypes`, when absent, is `Ingress`, plus `Egress` when the policy has egress rules
  (`len(spec.egress) != 0`, kubernetes' pkg/apis/networking/v1/defaults.go);
- by default a pod is non-isolated, in each direction; it is isolated for ingress (egress) when
  some policy that selects it has Ingress (Egress) in its policyTypes, and then accepts only what
  the ingress (egress) rules of those policies allow: policies "are additive" (the union of their
  rules), rules are ORed, and a policy with no rules of that type only isolates;
- each rule "allows traffic which matches both the `from` and `ports` sections"; the peers of
  `from`/`to` are ORed, the entries of `ports` too; an empty or absent `from`/`to` matches every
  address, an empty or absent `ports` every port of every protocol;
- peers: `podSelector` alone selects pods of the policy's namespace; `namespaceSelector` alone
  every pod of the namespaces it selects (by the namespace's labels, which always include the
  immutable `kubernetes.io/metadata.name`, as the control plane sets it); both together "selects
  particular Pods within particular namespaces"; `ipBlock` the addresses in `cidr` that are in
  none of `except`;
- ports: `protocol` defaults to TCP; a `port` absent matches every port of the protocol; a number,
  with `endPort` the inclusive range port..endPort; a named port resolves against the destination
  pod's containers' ports of that name and protocol (for an ingress rule the selected pod, for an
  egress rule the peer), and matches nothing where no such port exists;
- "For a network flow between two pods to be allowed, both the egress policy on the source pod
  and the ingress policy on the destination pod need to allow the traffic";
- "a pod cannot block access to itself", and traffic to and from the pod's node is always
  allowed (an Endpoint with `node=True`).

Where upstream leaves the choice to the implementation: an `ipBlock` is matched against the
address, whoever holds it, pod or not ("These should be cluster-external IPs, since Pod IPs are
ephemeral and unpredictable" does not say what happens if they are not; kube-router, like this
stand-in, matches ipBlocks as sets of addresses: its evalIPBlockPeer, pkg/controllers/netpol).

The enforcer, `NetworkPolicyEnforcer.sync(pods, namespaces, policies)`, renders the evaluator's
answer for every pair of pods with a podIP (and the ipBlocks and match-all peers of isolated pods,
for addresses that are not pods) into one iptables chain, `STANDIN-NETPOL` unless told otherwise,
jumped to from the top of FORWARD (with br_netfilter, traffic between containers on one podman
bridge passes FORWARD). The chain only ever refuses: what policy allows RETURNs to FORWARD, where
podman's own rules decide as before; what it does not is refused as kube-router refuses it, with
`REJECT --reject-with icmp-port-unreachable` (its "rule to REJECT traffic destined for POD ..."),
so a refused TCP connect fails at once with "connection refused"; replies of allowed connections
pass (conntrack ESTABLISHED,RELATED), as kube-router lets them. The chain is replaced whole with one
`iptables-restore --noflush`, only when the rendered rules change; `close()` removes the jump and
the chain.

It does not model: IPv6 (only IPv4 addresses are programmed; IPv6 ones are skipped), hostNetwork
pods (their podIP is the node's), traffic from the node to its pods (it does not pass FORWARD, so
it is allowed, as upstream allows it), Services (a connection to a ClusterIP or a published port
is judged, if at all, on the addresses it reaches the bridge with), policy validation (a policy is
taken as the API server admitted it), AdminNetworkPolicy, logging, or named ports on egress to
non-pod addresses (nothing to resolve them against: they match nothing).
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

CHAIN = "STANDIN-NETPOL"
# kube-router refuses actively: "-j REJECT --reject-with icmp-port-unreachable" ends each pod's
# firewall chain, so a refused TCP connect fails at once (connection refused), not by a timeout.
REFUSE = ("-j", "REJECT", "--reject-with", "icmp-port-unreachable")
_JUMP_COMMENT = "STAND-IN NetworkPolicy controller (tests/standins/network_policy.py)"


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (`namespace` set) or another address (`namespace` None)."""

    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()  # the pod's containers' named ports
    node: bool = False  # the pod's node: always allowed

    @classmethod
    def from_pod(cls, pod: Obj) -> Endpoint | None:
        """The pod as the API server stores it, or None where policy does not act on it: no address
        yet, or terminated (Succeeded, Failed), as kube-router's isNetPolActionable leaves them."""
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            return None
        spec = pod.get("spec") or {}
        return cls(
            ip=ip,
            namespace=pod["metadata"]["namespace"],
            labels=dict(pod["metadata"].get("labels") or {}),
            ports=tuple(
                ContainerPort(port["name"], int(port["containerPort"]), port.get("protocol", "TCP"))
                for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                for port in container.get("ports") or []
                if port.get("name")
            ),
        )


@dataclass(frozen=True)
class Traffic:
    """What may pass from one endpoint to another: everything, or some (protocol, first, last)
    port ranges."""

    everything: bool = False
    ranges: frozenset[tuple[str, int, int]] = frozenset()

    def __or__(self, other: Traffic) -> Traffic:
        if self.everything or other.everything:
            return EVERYTHING
        return Traffic(ranges=self.ranges | other.ranges)

    def __and__(self, other: Traffic) -> Traffic:
        if self.everything:
            return other
        if other.everything:
            return self
        return Traffic(
            ranges=frozenset(
                (protocol, max(first, first2), min(last, last2))
                for protocol, first, last in self.ranges
                for protocol2, first2, last2 in other.ranges
                if protocol == protocol2 and max(first, first2) <= min(last, last2)
            )
        )

    def allows(self, port: int, protocol: str = "TCP") -> bool:
        return self.everything or any(
            protocol == p and first <= port <= last for p, first, last in self.ranges
        )

    def merged(self) -> list[tuple[str, int, int]]:
        """The ranges, sorted, with overlapping and adjacent ones joined."""
        out: list[tuple[str, int, int]] = []
        for protocol, first, last in sorted(self.ranges):
            if out and out[-1][0] == protocol and first <= out[-1][2] + 1:
                out[-1] = (protocol, out[-1][1], max(last, out[-1][2]))
            else:
                out.append((protocol, first, last))
        return out


EVERYTHING = Traffic(everything=True)
NOTHING = Traffic()


def selects(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions, ANDed; empty selects everything."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for term in selector.get("matchExpressions") or []:
        key, operator, values = term["key"], term["operator"], term.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def selecting(policies: Iterable[Obj], pod: Endpoint, direction: str) -> list[Obj]:
    """The policies that select the pod and apply to `direction` ("Ingress" or "Egress")."""
    if pod.namespace is None:
        return []
    return [
        policy
        for policy in policies
        if policy["metadata"].get("namespace") == pod.namespace
        and selects((policy.get("spec") or {}).get("podSelector"), pod.labels)
        and direction in policy_types(policy)
    ]


def namespace_labels(namespaces: Mapping[str, Obj], name: str) -> dict[str, str]:
    labels = dict(((namespaces.get(name) or {}).get("metadata") or {}).get("labels") or {})
    labels["kubernetes.io/metadata.name"] = name
    return labels


def in_block(ip: str, block: Obj) -> bool:
    address = ipaddress.ip_address(ip)
    return address in ipaddress.ip_network(block["cidr"], strict=False) and not any(
        address in ipaddress.ip_network(excepted, strict=False) for excepted in block.get("except") or []
    )


def peer_matches(peer: Obj, policy_namespace: str, endpoint: Endpoint, namespaces: Mapping[str, Obj]) -> bool:
    if "ipBlock" in peer:
        return in_block(endpoint.ip, peer["ipBlock"])
    if endpoint.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(namespaces, endpoint.namespace)):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), endpoint.labels)


def rule_ports(ports: list[Obj] | None, destination: Endpoint) -> Traffic:
    """What a rule's `ports` let through to `destination` (which resolves named ports)."""
    if not ports:
        return EVERYTHING
    ranges: set[tuple[str, int, int]] = set()
    for entry in ports:
        protocol = entry.get("protocol") or "TCP"
        port = entry.get("port")
        if port is None:
            ranges.add((protocol, 1, 65535))
        elif isinstance(port, str):
            ranges.update(
                (protocol, named.port, named.port)
                for named in destination.ports
                if named.name == port and named.protocol == protocol
            )
        else:
            ranges.add((protocol, int(port), int(entry.get("endPort") or port)))
    return Traffic(ranges=frozenset(ranges))


def _direction(
    policies: list[Obj],
    namespaces: Mapping[str, Obj],
    pod: Endpoint,
    peer: Endpoint,
    destination: Endpoint,
    direction: str,
) -> Traffic:
    """What `pod`'s policies of `direction` let pass between it and `peer` (`destination` is
    whichever of the two receives, whose container ports resolve named ports)."""
    applying = selecting(policies, pod, direction)
    if not applying:
        return EVERYTHING  # not isolated in this direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    traffic = NOTHING
    for policy in applying:
        for rule in (policy.get("spec") or {}).get(key) or []:
            peers = rule.get(peers_key) or []
            if peers and not any(
                peer_matches(each, policy["metadata"]["namespace"], peer, namespaces) for each in peers
            ):
                continue
            traffic |= rule_ports(rule.get("ports"), destination)
    return traffic


def allowed_traffic(
    policies: list[Obj], namespaces: Mapping[str, Obj], source: Endpoint, destination: Endpoint
) -> Traffic:
    """Everything that may pass from `source` to `destination`: the source's egress AND the
    destination's ingress."""
    if source.node or destination.node or (source.namespace is not None and source.ip == destination.ip):
        return EVERYTHING
    egress = _direction(policies, namespaces, source, destination, destination, "Egress")
    ingress = _direction(policies, namespaces, destination, source, destination, "Ingress")
    return egress & ingress


def allowed(
    policies: list[Obj],
    namespaces: Mapping[str, Obj],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether a connection from `source` to `destination`'s `port`/`protocol` is allowed."""
    return allowed_traffic(policies, namespaces, source, destination).allows(port, protocol)


# ---- enforcement ---------------------------------------------------------------------------------


def _matches(traffic: Traffic) -> list[list[str]]:
    """iptables match arguments, one list per rule, for a Traffic that is not NOTHING."""
    if traffic.everything:
        return [[]]
    return [
        ["-p", protocol.lower(), "--dport", str(first) if first == last else f"{first}:{last}"]
        for protocol, first, last in traffic.merged()
    ]


def _block_networks(block: Obj) -> list[str]:
    """An ipBlock as IPv4 networks: its cidr less its excepts (none for an IPv6 block)."""
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if not isinstance(network, ipaddress.IPv4Network):
        return []
    remaining = [network]
    for excepted in block.get("except") or []:
        cut = ipaddress.ip_network(excepted, strict=False)
        if isinstance(cut, ipaddress.IPv4Network):
            remaining = [piece for whole in remaining for piece in _less(whole, cut)]
    return [str(piece) for piece in sorted(remaining)]


def _less(network: ipaddress.IPv4Network, cut: ipaddress.IPv4Network) -> list[ipaddress.IPv4Network]:
    if cut.subnet_of(network):
        return list(network.address_exclude(cut))
    return [] if network.subnet_of(cut) else [network]


def _non_pod_rules(chain: str, policies: list[Obj], pod: Endpoint, direction: str) -> list[list[str]]:
    """RETURN rules for `pod`'s traffic with addresses that are not pods: its rules' ipBlocks and
    match-all peers."""
    own, other = ("-d", "-s") if direction == "Ingress" else ("-s", "-d")
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    far = Endpoint(ip="0.0.0.0")  # a non-pod destination: named ports resolve to nothing
    rules: list[list[str]] = []
    for policy in selecting(policies, pod, direction):
        for rule in (policy.get("spec") or {}).get(key) or []:
            traffic = rule_ports(rule.get("ports"), pod if direction == "Ingress" else far)
            if not traffic.everything and not traffic.ranges:
                continue
            peers = rule.get(peers_key) or []
            networks: list[str | None] = [None]  # an empty `from`/`to`: every address
            if peers:
                networks = [
                    n for peer in peers if "ipBlock" in peer for n in _block_networks(peer["ipBlock"])
                ]
            for network in networks:
                where = [own, f"{pod.ip}/32", *([other, network] if network else [])]
                rules += [["-A", chain, *where, *match, "-j", "RETURN"] for match in _matches(traffic)]
    return rules


def render_rules(
    pods: Iterable[Obj], namespaces: Iterable[Obj], policies: Iterable[Obj], chain: str = CHAIN
) -> list[list[str]]:
    """The chain's rules, as iptables arguments (`-A CHAIN ...`), for the pods' current state.

    In order: replies of allowed connections; then each pair of pods where either end is isolated,
    decided in full (RETURN what the evaluator allows, REJECT the rest); then, for traffic with an
    address that is not a pod, the isolated pods' ipBlock and match-all rules, and a REJECT for each
    isolated pod's direction; everything else falls off the chain's end (RETURN).
    """
    policies = list(policies)
    by_name = {ns["metadata"]["name"]: ns for ns in namespaces}
    endpoints = sorted(
        {
            endpoint.ip: endpoint
            for pod in pods
            if not (pod.get("spec") or {}).get("hostNetwork")
            and (endpoint := Endpoint.from_pod(pod)) is not None
            and ipaddress.ip_address(endpoint.ip).version == 4
        }.values(),
        key=lambda endpoint: ipaddress.ip_address(endpoint.ip),
    )
    ingress_isolated = [e for e in endpoints if selecting(policies, e, "Ingress")]
    egress_isolated = [e for e in endpoints if selecting(policies, e, "Egress")]
    isolated_sources, isolated_destinations = (
        {e.ip for e in egress_isolated},
        {e.ip for e in ingress_isolated},
    )
    rules = [["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]]
    if not ingress_isolated and not egress_isolated:
        return rules
    for source in endpoints:
        for destination in endpoints:
            if source.ip == destination.ip or (
                source.ip not in isolated_sources and destination.ip not in isolated_destinations
            ):
                continue
            traffic = allowed_traffic(policies, by_name, source, destination)
            pair = ["-s", f"{source.ip}/32", "-d", f"{destination.ip}/32"]
            if traffic.everything:
                rules.append(["-A", chain, *pair, "-j", "RETURN"])
                continue
            rules += [["-A", chain, *pair, *match, "-j", "RETURN"] for match in _matches(traffic)]
            rules.append(["-A", chain, *pair, *REFUSE])
    for pod in ingress_isolated:
        rules += _non_pod_rules(chain, policies, pod, "Ingress")
        rules.append(["-A", chain, "-d", f"{pod.ip}/32", *REFUSE])
    for pod in egress_isolated:
        rules += _non_pod_rules(chain, policies, pod, "Egress")
        rules.append(["-A", chain, "-s", f"{pod.ip}/32", *REFUSE])
    return rules


class NetworkPolicyEnforcer:
    """Keeps the chain `chain` equal to `render_rules(...)` and jumped to from the top of FORWARD.

    Call `sync` whenever pods, namespaces or policies may have changed (every second is fine: it
    runs iptables only when the rules change); `close` removes the jump and the chain.
    """

    def __init__(self, chain: str = CHAIN, iptables: str = "iptables") -> None:
        if len(chain) > 28:
            raise ValueError(f"iptables chain names are at most 28 characters: {chain!r}")
        self.chain = chain
        self.iptables = iptables
        self._applied: list[list[str]] | None = None

    @property
    def _jump(self) -> list[str]:
        return ["FORWARD", "-m", "comment", "--comment", _JUMP_COMMENT, "-j", self.chain]

    def sync(self, pods: Iterable[Obj], namespaces: Iterable[Obj], policies: Iterable[Obj]) -> bool:
        """Program the rules for this state; whether iptables was changed."""
        rules = render_rules(pods, namespaces, policies, self.chain)
        if rules == self._applied:
            return False
        lines = [" ".join(_quote(arg) for arg in rule) for rule in rules]
        table = "\n".join(["*filter", f":{self.chain} - [0:0]", *lines, "COMMIT", ""])
        # --noflush keeps every other chain; declaring ours flushes it, so it is replaced in one go.
        self._run([f"{self.iptables}-restore", "--wait", "--noflush"], table)
        if self._run([self.iptables, "--wait", "-C", *self._jump], check=False) != 0:
            self._run([self.iptables, "--wait", "-I", self._jump[0], "1", *self._jump[1:]])
        self._applied = rules
        return True

    def close(self) -> None:
        """Remove the FORWARD jump and the chain (whatever is left of them)."""
        while self._run([self.iptables, "--wait", "-D", *self._jump], check=False) == 0:
            pass
        self._run([self.iptables, "--wait", "-F", self.chain], check=False)
        self._run([self.iptables, "--wait", "-X", self.chain], check=False)
        self._applied = None

    def __enter__(self) -> NetworkPolicyEnforcer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _run(args: list[str], stdin: str | None = None, check: bool = True) -> int:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.returncode


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c in arg for c in " \"'") else arg
