"""The STAND-IN NetworkPolicy controller (tests/standins/network_policy.py): its evaluator, case by
case against upstream's documented semantics, and the iptables rules it renders (no iptables run:
`sync` and `close` are checked against stand-in iptables programs that record their calls)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.standins.network_policy import (
    REFUSE,
    ContainerPort,
    Endpoint,
    NetworkPolicyEnforcer,
    allowed,
    allowed_traffic,
    render_rules,
)

Obj = dict[str, Any]


def pod(
    namespace: str, name: str, ip: str | None, labels: dict[str, str] | None = None, **status: Any
) -> Obj:
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "x"}]},
        "status": {"podIP": ip, "phase": "Running", **status},
    }


def namespace(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": labels}}


def policy(namespace: str, spec: Obj, name: str = "p") -> Obj:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


ALICE_A = Endpoint("10.0.0.2", "u-alice", {"app": "a"})
ALICE_B = Endpoint("10.0.0.3", "u-alice", {"app": "b"})
BOB = Endpoint("10.0.0.4", "u-bob", {"app": "a"})
OUTSIDE = Endpoint("192.168.1.7")
NAMESPACES = {"u-alice": namespace("u-alice", team="x"), "u-bob": namespace("u-bob", team="y")}
DENY_INGRESS = policy("u-alice", {"podSelector": {}, "policyTypes": ["Ingress"]})


def test_without_a_policy_every_connection_is_allowed() -> None:
    assert allowed([], NAMESPACES, BOB, ALICE_A, 1234)
    assert allowed([], NAMESPACES, OUTSIDE, ALICE_A, 53, "UDP")
    # A policy elsewhere does not isolate these pods.
    assert allowed([policy("u-other", {"podSelector": {}})], NAMESPACES, BOB, ALICE_A, 1234)


def test_a_policy_with_an_empty_pod_selector_and_no_rules_isolates_every_pod_of_its_namespace() -> None:
    assert not allowed([DENY_INGRESS], NAMESPACES, BOB, ALICE_A, 1234)
    assert not allowed([DENY_INGRESS], NAMESPACES, ALICE_B, ALICE_A, 1234)
    assert not allowed([DENY_INGRESS], NAMESPACES, OUTSIDE, ALICE_B, 80)
    # Only ingress, and only in u-alice: alice's pods still reach out, and bob's pod is not isolated.
    assert allowed([DENY_INGRESS], NAMESPACES, ALICE_A, BOB, 1234)


def test_a_pod_selector_picks_the_pods_a_policy_isolates() -> None:
    only_a = policy("u-alice", {"podSelector": {"matchLabels": {"app": "a"}}})
    assert not allowed([only_a], NAMESPACES, BOB, ALICE_A, 80)
    assert allowed([only_a], NAMESPACES, BOB, ALICE_B, 80)


def test_match_expressions_in_not_in_exists_and_does_not_exist() -> None:
    def isolates(expression: Obj, labels: dict[str, str]) -> bool:
        isolating = policy("u-alice", {"podSelector": {"matchExpressions": [expression]}})
        return not allowed([isolating], NAMESPACES, BOB, Endpoint("10.0.0.9", "u-alice", labels), 80)

    assert isolates({"key": "app", "operator": "In", "values": ["a", "b"]}, {"app": "b"})
    assert not isolates({"key": "app", "operator": "In", "values": ["a"]}, {"app": "b"})
    assert not isolates({"key": "app", "operator": "In", "values": ["a"]}, {})
    assert isolates({"key": "app", "operator": "NotIn", "values": ["a"]}, {"app": "b"})
    assert isolates({"key": "app", "operator": "NotIn", "values": ["a"]}, {})
    assert not isolates({"key": "app", "operator": "NotIn", "values": ["a"]}, {"app": "a"})
    assert isolates({"key": "app", "operator": "Exists"}, {"app": ""})
    assert not isolates({"key": "app", "operator": "Exists"}, {})
    assert isolates({"key": "app", "operator": "DoesNotExist"}, {})
    assert not isolates({"key": "app", "operator": "DoesNotExist"}, {"app": "a"})


def test_a_pod_selector_peer_allows_pods_of_the_policys_own_namespace_only() -> None:
    same_namespace = policy("u-alice", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    assert allowed([same_namespace], NAMESPACES, ALICE_B, ALICE_A, 1234)
    assert not allowed([same_namespace], NAMESPACES, BOB, ALICE_A, 1234)  # bob's pod has the same labels
    assert not allowed([same_namespace], NAMESPACES, OUTSIDE, ALICE_A, 1234)
    labelled = policy(
        "u-alice",
        {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]},
    )
    assert allowed([labelled], NAMESPACES, ALICE_B, ALICE_A, 1234)
    assert not allowed([labelled], NAMESPACES, ALICE_A, ALICE_B, 1234)


def test_a_namespace_selector_by_metadata_name_allows_every_pod_of_that_namespace() -> None:
    from_bob = policy(
        "u-alice",
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "u-bob"}}}]}
            ],
        },
    )
    assert allowed([from_bob], NAMESPACES, BOB, ALICE_A, 1234)
    # The label is there even where the namespace object does not carry it (the control plane sets it).
    assert allowed([from_bob], {}, BOB, ALICE_A, 1234)
    assert not allowed([from_bob], NAMESPACES, ALICE_B, ALICE_A, 1234)
    assert not allowed([from_bob], NAMESPACES, Endpoint("10.0.0.5", "u-carol"), ALICE_A, 1234)
    by_team = policy(
        "u-alice",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]},
    )
    assert allowed([by_team], NAMESPACES, BOB, ALICE_A, 1234)
    assert not allowed([by_team], NAMESPACES, ALICE_B, ALICE_A, 1234)


def test_namespace_and_pod_selectors_in_one_peer_are_anded_and_in_two_peers_ored() -> None:
    bob_namespace = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "u-bob"}}}
    app_b = {"podSelector": {"matchLabels": {"app": "b"}}}
    bob_b = Endpoint("10.0.0.6", "u-bob", {"app": "b"})
    anded = policy("u-alice", {"podSelector": {}, "ingress": [{"from": [{**bob_namespace, **app_b}]}]})
    assert allowed([anded], NAMESPACES, bob_b, ALICE_A, 80)
    assert not allowed([anded], NAMESPACES, BOB, ALICE_A, 80)  # u-bob, but app=a
    assert not allowed([anded], NAMESPACES, ALICE_B, ALICE_A, 80)  # app=b, but u-alice
    ored = policy("u-alice", {"podSelector": {}, "ingress": [{"from": [bob_namespace, app_b]}]})
    assert allowed([ored], NAMESPACES, BOB, ALICE_A, 80)
    assert allowed([ored], NAMESPACES, ALICE_B, ALICE_A, 80)
    assert not allowed([ored], NAMESPACES, Endpoint("10.0.0.7", "u-alice", {"app": "c"}), ALICE_A, 80)


def test_ports_restrict_by_number_and_the_protocol_defaults_to_tcp() -> None:
    ssh_only = policy("u-alice", {"podSelector": {}, "ingress": [{"ports": [{"port": 22}]}]})
    assert allowed([ssh_only], NAMESPACES, BOB, ALICE_A, 22)
    assert allowed([ssh_only], NAMESPACES, BOB, ALICE_A, 22, "TCP")
    assert not allowed([ssh_only], NAMESPACES, BOB, ALICE_A, 22, "UDP")
    assert not allowed([ssh_only], NAMESPACES, BOB, ALICE_A, 23)
    dns = policy("u-alice", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 53}]}]})
    assert allowed([dns], NAMESPACES, BOB, ALICE_A, 53, "UDP")
    assert not allowed([dns], NAMESPACES, BOB, ALICE_A, 53, "TCP")
    any_udp = policy("u-alice", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]})
    assert allowed([any_udp], NAMESPACES, BOB, ALICE_A, 4000, "UDP")
    assert not allowed([any_udp], NAMESPACES, BOB, ALICE_A, 4000, "TCP")


def test_end_port_allows_an_inclusive_range() -> None:
    ranged = policy(
        "u-alice", {"podSelector": {}, "ingress": [{"ports": [{"port": 32000, "endPort": 32010}]}]}
    )
    assert [
        port for port in range(31990, 32020) if allowed([ranged], NAMESPACES, BOB, ALICE_A, port)
    ] == list(range(32000, 32011))


def test_a_named_port_resolves_against_the_destination_pods_container_ports() -> None:
    named = policy("u-alice", {"podSelector": {}, "ingress": [{"ports": [{"port": "ssh"}]}]})
    sshd = Endpoint("10.0.0.8", "u-alice", {}, (ContainerPort("ssh", 2222), ContainerPort("dns", 53, "UDP")))
    assert allowed([named], NAMESPACES, BOB, sshd, 2222)
    assert not allowed([named], NAMESPACES, BOB, sshd, 22)
    assert not allowed([named], NAMESPACES, BOB, ALICE_A, 2222)  # no port of that name
    udp = policy("u-alice", {"podSelector": {}, "ingress": [{"ports": [{"port": "dns"}]}]})
    assert not allowed([udp], NAMESPACES, BOB, sshd, 53, "UDP")  # the port is UDP, the rule's TCP
    assert not allowed([udp], NAMESPACES, BOB, sshd, 53, "TCP")
    udp = policy("u-alice", {"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]})
    assert allowed([udp], NAMESPACES, BOB, sshd, 53, "UDP")
    from_pod = Endpoint.from_pod(
        {
            "metadata": {"namespace": "u-alice", "name": "s"},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "ssh", "containerPort": 2222}]}]},
            "status": {"podIP": "10.0.0.8"},
        }
    )
    assert from_pod is not None and allowed([named], NAMESPACES, BOB, from_pod, 2222)


def test_egress_is_isolated_when_policy_types_say_so_or_by_default_when_there_are_egress_rules() -> None:
    deny_egress = policy("u-alice", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert not allowed([deny_egress], NAMESPACES, ALICE_A, BOB, 80)
    assert not allowed([deny_egress], NAMESPACES, ALICE_A, OUTSIDE, 80)
    assert allowed([deny_egress], NAMESPACES, BOB, ALICE_A, 80)  # ingress untouched
    # Without policyTypes: Ingress always, Egress only with egress rules.
    ingress_only = policy("u-alice", {"podSelector": {}, "egress": []})
    assert allowed([ingress_only], NAMESPACES, ALICE_A, BOB, 80)
    assert not allowed([ingress_only], NAMESPACES, BOB, ALICE_A, 80)
    dns_out = policy("u-alice", {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert allowed([dns_out], NAMESPACES, ALICE_A, OUTSIDE, 53, "UDP")
    assert not allowed([dns_out], NAMESPACES, ALICE_A, OUTSIDE, 443)
    assert not allowed([dns_out], NAMESPACES, BOB, ALICE_A, 53, "UDP")  # and ingress is isolated too


def test_a_connection_needs_both_the_sources_egress_and_the_destinations_ingress() -> None:
    alice_out_to_bob = policy(
        "u-alice",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 80}, {"port": 443}]}],
        },
    )
    bob_in_443 = policy("u-bob", {"podSelector": {}, "ingress": [{"ports": [{"port": 443}, {"port": 8080}]}]})
    both = [alice_out_to_bob, bob_in_443]
    assert allowed(both, NAMESPACES, ALICE_A, BOB, 443)
    assert not allowed(both, NAMESPACES, ALICE_A, BOB, 80)  # bob's ingress refuses
    assert not allowed(both, NAMESPACES, ALICE_A, BOB, 8080)  # alice's egress refuses
    assert allowed_traffic(both, NAMESPACES, ALICE_A, BOB).merged() == [("TCP", 443, 443)]


def test_an_ip_block_allows_its_cidr_except_the_excepted_ranges() -> None:
    block = policy(
        "u-alice",
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}],
        },
    )
    assert allowed([block], NAMESPACES, Endpoint("192.168.2.9"), ALICE_A, 80)
    assert not allowed([block], NAMESPACES, Endpoint("192.168.1.9"), ALICE_A, 80)
    assert not allowed([block], NAMESPACES, Endpoint("10.9.9.9"), ALICE_A, 80)
    # Matched by address, whoever holds it: a pod in the block is let in too.
    assert allowed([block], NAMESPACES, Endpoint("192.168.3.3", "u-bob"), ALICE_A, 80)


def test_two_policies_selecting_a_pod_are_additive() -> None:
    from_bob = policy(
        "u-alice",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]},
        "from-bob",
    )
    ssh = policy(
        "u-alice", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"ports": [{"port": 22}]}]}
    )
    both = [from_bob, ssh]
    assert allowed(both, NAMESPACES, BOB, ALICE_A, 1234)  # the first allows it
    assert allowed(both, NAMESPACES, OUTSIDE, ALICE_A, 22)  # the second allows it
    assert not allowed(both, NAMESPACES, OUTSIDE, ALICE_A, 1234)  # neither does
    assert not allowed(both, NAMESPACES, OUTSIDE, ALICE_B, 22)  # the second does not select alice's b


def test_rules_are_ored_and_a_rule_without_from_admits_every_source() -> None:
    lab = policy(
        "u-alice",
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}, {"ports": [{"port": 22, "protocol": "TCP"}]}],
        },
    )
    assert allowed([lab], NAMESPACES, ALICE_B, ALICE_A, 8000)
    assert allowed([lab], NAMESPACES, BOB, ALICE_A, 22)
    assert allowed([lab], NAMESPACES, OUTSIDE, ALICE_A, 22)
    assert not allowed([lab], NAMESPACES, BOB, ALICE_A, 8000)


def test_a_pod_cannot_block_itself_and_its_node_is_always_allowed() -> None:
    assert allowed([DENY_INGRESS], NAMESPACES, ALICE_A, ALICE_A, 8000)
    assert allowed([DENY_INGRESS], NAMESPACES, Endpoint("10.0.0.1", node=True), ALICE_A, 8000)
    assert not allowed([DENY_INGRESS], NAMESPACES, Endpoint("10.0.0.1"), ALICE_A, 8000)


LAB_POLICY = policy(
    "u-alice",
    {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}]}, {"ports": [{"port": 22, "protocol": "TCP"}]}],
    },
)
LAB_PODS = [
    pod("u-alice", "a", "10.89.0.2", {"app": "a"}),
    pod("u-alice", "b", "10.89.0.3", {"app": "b"}),
    pod("u-bob", "c", "10.89.0.4"),
]


def test_render_rules_for_the_lab_policy() -> None:
    chain = "STANDIN-NETPOL"
    assert render_rules(LAB_PODS, [namespace("u-alice"), namespace("u-bob")], [LAB_POLICY]) == [
        ["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
        ["-A", chain, "-s", "10.89.0.2/32", "-d", "10.89.0.3/32", "-j", "RETURN"],
        ["-A", chain, "-s", "10.89.0.3/32", "-d", "10.89.0.2/32", "-j", "RETURN"],
        [
            "-A",
            chain,
            "-s",
            "10.89.0.4/32",
            "-d",
            "10.89.0.2/32",
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "RETURN",
        ],
        ["-A", chain, "-s", "10.89.0.4/32", "-d", "10.89.0.2/32", *REFUSE],
        [
            "-A",
            chain,
            "-s",
            "10.89.0.4/32",
            "-d",
            "10.89.0.3/32",
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "RETURN",
        ],
        ["-A", chain, "-s", "10.89.0.4/32", "-d", "10.89.0.3/32", *REFUSE],
        ["-A", chain, "-d", "10.89.0.2/32", "-p", "tcp", "--dport", "22", "-j", "RETURN"],
        ["-A", chain, "-d", "10.89.0.2/32", *REFUSE],
        ["-A", chain, "-d", "10.89.0.3/32", "-p", "tcp", "--dport", "22", "-j", "RETURN"],
        ["-A", chain, "-d", "10.89.0.3/32", *REFUSE],
    ]
    assert REFUSE == ("-j", "REJECT", "--reject-with", "icmp-port-unreachable")


def test_render_rules_without_isolation_only_pass_replies() -> None:
    assert render_rules(LAB_PODS, [], [], "X") == [
        ["-A", "X", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
    ]


def test_render_rules_turn_an_ip_block_except_into_the_networks_that_remain_and_merge_port_ranges() -> None:
    egress = policy(
        "u-bob",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "192.168.0.0/22", "except": ["192.168.1.0/24"]}}],
                    "ports": [{"port": 80, "endPort": 90}, {"port": 85, "endPort": 100}, {"port": 101}],
                }
            ],
        },
    )
    rules = render_rules([pod("u-bob", "c", "10.89.0.4")], [], [egress], "X")
    assert rules[1:] == [
        ["-A", "X", "-s", "10.89.0.4/32", "-d", network, "-p", "tcp", "--dport", "80:101", "-j", "RETURN"]
        for network in ("192.168.0.0/24", "192.168.2.0/23")
    ] + [["-A", "X", "-s", "10.89.0.4/32", *REFUSE]]


def test_render_rules_leave_out_pods_without_an_address_terminated_or_on_the_host_network() -> None:
    host = pod("u-alice", "h", "10.89.0.9")
    host["spec"]["hostNetwork"] = True
    pods = [pod("u-alice", "a", None), pod("u-alice", "done", "10.89.0.5", phase="Succeeded"), host]
    assert len(render_rules(pods, [], [DENY_INGRESS], "X")) == 1


@pytest.fixture
def fake_iptables(tmp_path: Path) -> tuple[str, Path]:
    """Stand-in `iptables` and `iptables-restore` that log their arguments (and restore's input),
    and keep count of the FORWARD jumps: `-C` finds one while any is left, `-D` removes one."""
    log, jumps = tmp_path / "calls", tmp_path / "jumps"
    script = f"""#!/bin/sh
name=$(basename "$0")
echo "$name $*" >> {log}
if [ "$name" = iptables-restore ]; then cat >> {log}; exit 0; fi
jumps=$(cat {jumps} 2>/dev/null || echo 0)
case "$2" in
  -C) [ "$jumps" -gt 0 ] ;;
  -I) echo $((jumps + 1)) > {jumps} ;;
  -D) [ "$jumps" -gt 0 ] && echo $((jumps - 1)) > {jumps} ;;
esac
"""
    for name in ("iptables", "iptables-restore"):
        (tmp_path / name).write_text(script)
        os.chmod(tmp_path / name, 0o755)
    return str(tmp_path / "iptables"), log


def test_sync_replaces_the_chain_in_one_restore_and_skips_iptables_when_nothing_changed(
    fake_iptables: tuple[str, Path],
) -> None:
    iptables, log = fake_iptables
    enforcer = NetworkPolicyEnforcer("STANDIN-NETPOL-t", iptables)
    namespaces = [namespace("u-alice"), namespace("u-bob")]
    assert enforcer.sync(LAB_PODS, namespaces, [LAB_POLICY])
    calls = log.read_text()
    assert calls.count("iptables-restore --wait --noflush") == 1
    assert "*filter\n:STANDIN-NETPOL-t - [0:0]\n-A STANDIN-NETPOL-t -m conntrack" in calls
    assert (
        "-A STANDIN-NETPOL-t -s 10.89.0.4/32 -d 10.89.0.2/32 -j REJECT --reject-with icmp-port-unreachable\n"
        in calls
    )
    assert calls.count(" -I FORWARD 1 -m comment --comment ") == 1
    assert not enforcer.sync(LAB_PODS, namespaces, [LAB_POLICY])
    assert log.read_text() == calls  # not one call more
    assert enforcer.sync(LAB_PODS, namespaces, [])  # the policy is gone: rewritten, jump kept
    assert log.read_text().count("iptables-restore") == 2
    assert log.read_text().count(" -I FORWARD") == 1


def test_close_removes_the_jump_and_the_chain(fake_iptables: tuple[str, Path]) -> None:
    iptables, log = fake_iptables
    with NetworkPolicyEnforcer("STANDIN-NETPOL-t", iptables) as enforcer:
        enforcer.sync(LAB_PODS, [], [LAB_POLICY])
    calls = log.read_text().splitlines()
    assert any(" -D FORWARD -m comment" in call and call.endswith("-j STANDIN-NETPOL-t") for call in calls)
    assert calls[-2:] == ["iptables --wait -F STANDIN-NETPOL-t", "iptables --wait -X STANDIN-NETPOL-t"]


def test_a_chain_name_iptables_would_refuse_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="28 characters"):
        NetworkPolicyEnforcer("STANDIN-NETPOL-" + "x" * 20)
