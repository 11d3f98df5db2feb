"""The foundation end to end: a real two-host lab, `cluster up` twice, failures, teardown.

The tests run in file order on one lab, like an operator's session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import PROJECT, toolkit

pytestmark = pytest.mark.lab


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


# The k3s token the runs below pass as an operator would, with -e @FILE: a sentinel that no file
# a run leaves behind may hold. The runs up to the plan pass it, since each must see the token the
# one before it set to change nothing; later runs read the first server's, as without a token.
SENTINEL_TOKEN = "sentinel-lab-k3s-token-6b2e0f"


def run_artifacts(output: str) -> Path:
    """ansible-runner's artifacts of the run, named in its output."""
    match = re.search(r"full log: (\S+)/stdout", output)
    assert match, output
    return Path(match.group(1))


def final_stats(output: str) -> dict[str, dict[str, int]]:
    """Ansible's own recap of the run, read from ansible-runner's artifacts named in the output."""
    events = sorted(
        (run_artifacts(output) / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-")[0])
    )
    stats = next(json.loads(p.read_text()) for p in reversed(events) if "playbook_on_stats" in p.read_text())[
        "event_data"
    ]
    return {key: stats[key] for key in ("ok", "changed", "failures", "dark")}


def files_holding(output: str, secret: str) -> list[str]:
    """The files of the run's whole directory under .cache/runs (env/, artifacts/, ...) holding `secret`."""
    run_dir = run_artifacts(output).parents[1]
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any(path.parent.name == "env" for path in files), files
    return [str(path) for path in files if secret.encode() in path.read_bytes()]


@pytest.fixture(scope="module")
def secret_vars(tmp_path_factory: pytest.TempPathFactory) -> str:
    """-e @FILE of a vars file that sets k3s_token to the sentinel."""
    path = tmp_path_factory.mktemp("secrets") / "secrets.yml"
    path.write_text(f"k3s_token: {SENTINEL_TOKEN}\n")
    return f"@{path}"


@pytest.fixture(scope="module")
def lab(lab_image: str) -> None:
    existing = podman("ps", "--all", "--filter", "label=io.toolkit.lab", "--format", "{{.Names}}").split()
    if existing:
        pytest.fail(f"a lab is already running ({', '.join(existing)}): run `toolkit lab down` first")
    result = toolkit("lab", "up", "--hosts", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    yield
    toolkit("lab", "down")


def test_lab_up_starts_two_reachable_hosts(lab: None) -> None:
    status = toolkit("lab", "status")
    assert status.returncode == 0, status.stderr
    rows = [line for line in status.stdout.splitlines() if "toolkit-lab-" in line]
    assert len(rows) == 2
    assert all("running" in row and "yes" in row for row in rows)
    assert (PROJECT / "inventory" / "lab" / "hosts.yml").is_file()


def test_cluster_up_converges_the_lab(lab: None, secret_vars: str) -> None:
    result = toolkit("cluster", "up", "-i", "inventory/lab", "-e", secret_vars)
    assert result.returncode == 0, result.stdout + result.stderr
    # The token reached the hosts, and no output or file of the run holds it.
    config = yaml.safe_load(podman("exec", "toolkit-lab-agent-1", "cat", "/etc/rancher/k3s/config.yaml"))
    assert config["token"] == SENTINEL_TOKEN
    assert SENTINEL_TOKEN not in result.stdout + result.stderr
    assert files_holding(result.stdout, SENTINEL_TOKEN) == []
    stats = final_stats(result.stdout)
    assert set(stats["ok"]) == {"lab-server-1", "lab-agent-1"}
    assert not stats["failures"] and not stats["dark"]
    assert "PLAY Prepare every cluster host" in result.stdout
    assert "note: kernel has no loadable-module support" in result.stdout
    # The lab's agents are its GPU nodes; with no GPU on their PCI bus the NVIDIA roles skip them.
    assert "PLAY NVIDIA driver and container toolkit" in result.stdout
    assert result.stdout.count("note: no NVIDIA GPU on the PCI bus") == 2
    # No k3s release is reachable here: the lab installs the stand-in and the run says so once.
    assert result.stdout.count("note: k3s is the stand-in binary") == 1
    assert result.stdout.count("note: Node Feature Discovery's chart is a stand-in") == 1
    assert "PLAY K3s servers and agents" in result.stdout
    assert "PLAY GPU stack and the shells' platform on Kubernetes" in result.stdout
    assert result.stdout.count("note: WekaFS is off (wekafs_enabled: false)") == 1


def test_second_cluster_up_changes_nothing(lab: None, secret_vars: str) -> None:
    result = toolkit("cluster", "up", "-i", "inventory/lab", "-e", secret_vars)
    assert result.returncode == 0, result.stdout + result.stderr
    assert files_holding(result.stdout, SENTINEL_TOKEN) == []
    stats = final_stats(result.stdout)
    assert set(stats["ok"]) == {"lab-server-1", "lab-agent-1"}
    assert stats["changed"] == {}, f"second run changed: {stats['changed']}"
    # The facts ansible.cfg caches for a day, where every run finds them (not in one run's artifacts).
    assert {"lab-server-1", "lab-agent-1"} <= set(lab_facts())


def lab_facts() -> list[str]:
    """The lab hosts whose facts are cached, as ansible-core names their files (s1_lab-server-1)."""
    facts = PROJECT / ".cache" / "facts"
    return [p.name.partition("_")[2] or p.name for p in facts.iterdir()] if facts.is_dir() else []


def test_plan_reports_and_changes_nothing(lab: None, secret_vars: str) -> None:
    podman("exec", "toolkit-lab-agent-1", "rm", "/etc/modules-load.d/toolkit-kubernetes.conf")
    result = toolkit("cluster", "plan", "-i", "inventory/lab", "--limit", "lab-agent-1", "-e", secret_vars)
    assert result.returncode == 0, result.stdout + result.stderr
    assert final_stats(result.stdout)["changed"] == {"lab-agent-1": 1}
    gone = subprocess.run(
        [
            "podman",
            "exec",
            "toolkit-lab-agent-1",
            "test",
            "-e",
            "/etc/modules-load.d/toolkit-kubernetes.conf",
        ],
        check=False,
    )
    assert gone.returncode == 1, "check mode must not write the file"
    restored = toolkit("cluster", "up", "-i", "inventory/lab", "--limit", "lab-agent-1", "-e", secret_vars)
    assert restored.returncode == 0, restored.stdout + restored.stderr


def test_kubeconfig_is_written_private_and_points_at_the_endpoint(lab: None, tmp_path: Path) -> None:
    target = tmp_path / "lab.yaml"
    result = toolkit("cluster", "kubeconfig", "-i", "inventory/lab", "--output", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert "server: https://10.213.77.11:6443" in target.read_text()
    assert "127.0.0.1" not in target.read_text()


def test_kubeconfig_merges_beside_existing_contexts(lab: None, tmp_path: Path) -> None:
    existing = tmp_path / "config"
    existing.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: other, cluster: {server: 'https://other:6443'}}]\n"
        "users: [{name: other, user: {token: x}}]\n"
        "contexts: [{name: other, context: {cluster: other, user: other}}]\ncurrent-context: other\n"
    )
    result = toolkit(
        "cluster", "kubeconfig", "-i", "inventory/lab", "--kubeconfig", str(existing), "--context", "lab"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    merged = yaml.safe_load(existing.read_text())
    assert [c["name"] for c in merged["contexts"]] == ["other", "lab"]
    assert merged["current-context"] == "lab"
    assert oct(existing.stat().st_mode & 0o777) == "0o600"


def test_upgrade_to_the_running_version_changes_nothing(lab: None) -> None:
    result = toolkit("cluster", "upgrade", "-i", "inventory/lab")
    assert result.returncode == 0, result.stdout + result.stderr
    assert final_stats(result.stdout)["changed"] == {}


def test_reset_without_yes_and_without_a_terminal_refuses(lab: None) -> None:
    result = toolkit("cluster", "reset", "-i", "inventory/lab")
    assert result.returncode == 3
    assert "refusing to reset without --yes" in result.stderr
    assert podman("exec", "toolkit-lab-server-1", "systemctl", "is-active", "k3s").strip() == "active"


def test_missing_inventory_is_exit_3_in_one_line(lab: None) -> None:
    result = toolkit("cluster", "up", "-i", "inventory/nowhere")
    assert result.returncode == 3
    assert result.stderr.strip() == "error: inventory inventory/nowhere does not exist"
    assert "Traceback" not in result.stderr


def test_rejected_variable_is_exit_3_and_names_it(lab: None) -> None:
    result = toolkit("cluster", "up", "-i", "inventory/lab", "-e", "common_swap_disable=maybe")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "bad-input: lab-server-1" in result.stdout
    assert "common_swap_disable" in result.stdout


def test_extra_vars_of_one_run_do_not_reach_the_next(lab: None) -> None:
    # Regression: ansible-runner replays a private data dir's saved command line.
    result = toolkit("cluster", "up", "-i", "inventory/lab")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "common_swap_disable" not in result.stdout


def test_host_stopped_mid_run_is_exit_2_and_named(lab: None) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "cluster", "up", "-i", "inventory/lab"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "TASK Read the host's packages" in line:
            # A power loss: killed at once, the host can't tell ssh how the module ended, so
            # Ansible sees the connection drop. A graceful stop races: when systemd's SIGTERM
            # reaches the module before sshd goes, ssh returns the shell's 143 and Ansible
            # reports the task failed, not the host unreachable.
            podman("kill", "toolkit-lab-agent-1")
            break
    lines += process.stdout.readlines()
    output = "".join(lines)
    try:
        assert process.wait(timeout=300) == 2, output
        assert re.search(r"unreachable: lab-agent-1: ", output), output
        assert "lab-server-1" not in final_stats(output)["dark"]
    finally:
        podman("start", "toolkit-lab-agent-1")
        time.sleep(1)


def lab_inventory_copy(tmp_path: Path, known_hosts: Path | None = None, extra_agent: str = "") -> Path:
    """inventory/lab copied, optionally with its own known_hosts or one more agent."""
    text = (PROJECT / "inventory" / "lab" / "hosts.yml").read_text()
    if known_hosts is not None:
        text = text.replace(str(PROJECT / ".cache" / "lab" / "known_hosts"), str(known_hosts))
    if extra_agent:
        text = text.replace(
            "    k3s_agents:\n      hosts:\n", "    k3s_agents:\n      hosts:\n" + extra_agent
        )
    target = tmp_path / "inventory"
    target.mkdir()
    (target / "hosts.yml").write_text(text)
    return target


def test_doctor_checks_every_lab_host(lab: None) -> None:
    result = toolkit("doctor", "-i", "inventory/lab", "--output", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {report["host"]: report for report in json.loads(result.stdout)}
    assert set(reports) == {"lab-server-1", "lab-agent-1"}
    for report in reports.values():
        assert report["reachable"] is True
        assert report["checks"]["os"] == {"status": "pass", "detail": "debian 12"}
        assert report["checks"]["sudo"]["status"] == "pass"
    assert reports["lab-agent-1"]["checks"]["gpus"] == {
        "status": "warn",
        "detail": "0 on a host in gpu_nodes",
    }


def test_doctor_reports_a_host_that_does_not_answer_as_a_row(lab: None, tmp_path: Path) -> None:
    ghost = "        lab-ghost:\n          ansible_host: 10.213.77.250\n"
    result = toolkit("doctor", "-i", str(lab_inventory_copy(tmp_path, extra_agent=ghost)), "--timeout", "2")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ lab-")}
    assert set(rows) == {"lab-ghost", "lab-server-1", "lab-agent-1"}
    assert "debian 12" in rows["lab-server-1"]
    assert "debian 12" not in rows["lab-ghost"]


def test_doctor_refuses_unknown_host_keys_unless_told_to_accept_new_ones(lab: None, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    inventory_dir = lab_inventory_copy(tmp_path, known_hosts=known_hosts)
    strict = toolkit("doctor", "-i", str(inventory_dir), "--output", "json")
    assert strict.returncode == 2
    assert all("unknown host key" in report["error"] for report in json.loads(strict.stdout))
    accepted = toolkit("doctor", "-i", str(inventory_dir), "--accept-new", "--output", "json")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert len(known_hosts.read_text().splitlines()) == 2
    again = toolkit("doctor", "-i", str(inventory_dir), "--output", "json")
    assert again.returncode == 0


def test_node_drain_and_uncordon_run_kubectl_on_the_first_server(lab: None) -> None:
    for action in ("drain", "uncordon"):
        result = toolkit("node", action, "lab-agent-1", "-i", "inventory/lab")
        assert result.returncode == 0, result.stdout + result.stderr
    log = podman(
        "exec", "toolkit-lab-server-1", "cat", "/var/lib/rancher/k3s/standin-kubectl.log"
    ).splitlines()
    assert [line.split()[:2] for line in log[-2:]] == [["drain", "lab-agent-1"], ["uncordon", "lab-agent-1"]]


def test_node_commands_refuse_a_host_not_in_the_inventory(lab: None) -> None:
    result = toolkit("node", "add", "lab-agent-9", "-i", "inventory/lab")
    assert result.returncode == 3
    assert "lab-agent-9 is not a k3s server or agent" in result.stderr


def test_node_add_grows_the_lab_from_2_to_3_hosts(lab: None) -> None:
    grown = toolkit("lab", "up", "--hosts", "3")
    assert grown.returncode == 0, grown.stderr
    result = toolkit("node", "add", "lab-agent-2", "-i", "inventory/lab")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(final_stats(result.stdout)["ok"]) == {"lab-server-1", "lab-agent-2"}
    assert podman("exec", "toolkit-lab-agent-2", "systemctl", "is-active", "k3s-agent").strip() == "active"
    token = podman("exec", "toolkit-lab-server-1", "cat", "/var/lib/rancher/k3s/server/node-token").strip()
    config = yaml.safe_load(podman("exec", "toolkit-lab-agent-2", "cat", "/etc/rancher/k3s/config.yaml"))
    assert config["token"] == token


def test_verify_passes_what_the_lab_can_do_and_skips_the_rest_with_reasons(lab: None) -> None:
    result = toolkit("cluster", "verify", "-i", "inventory/lab", "--output", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {(c["check"], c["host"]): (c["status"], c["detail"]) for c in json.loads(result.stdout)}
    hosts = ("lab-server-1", "lab-agent-1", "lab-agent-2")
    for host in hosts:
        assert checks[("k3s service", host)][0] == "pass"
        assert checks[("nvidia-smi", host)] == ("skip", "no NVIDIA GPU on the PCI bus")
        assert checks[("fabric manager", host)] == ("skip", "no NVSwitch on the PCI bus")
        assert checks[("weka mount", host)] == ("skip", "wekafs_enabled is false")
    standin = "k3s here is the stand-in (images/lab-host/standins/k3s): it serves no Kubernetes API"
    for check in ("nodes ready",):
        assert checks[(check, "lab-server-1")] == ("skip", standin)
    for check in ("gpu allocatable", "cuda smoke pod", "shell over ssh"):
        assert checks[(check, "-")] == ("skip", standin)
    assert checks[("shells volume", "lab-server-1")] == ("skip", standin)
    assert not [c for c, (status, _) in checks.items() if status == "fail"]


def test_verify_fails_when_a_service_is_down(lab: None) -> None:
    podman("exec", "toolkit-lab-agent-2", "systemctl", "stop", "k3s-agent")
    try:
        result = toolkit("cluster", "verify", "-i", "inventory/lab")
        assert result.returncode == 1, result.stdout + result.stderr
        assert re.search(r"k3s service\s+│\s+lab-agent-2\s+│\s+fail", result.stdout), result.stdout
    finally:
        podman("exec", "toolkit-lab-agent-2", "systemctl", "start", "k3s-agent")


def test_lab_down_leaves_no_container_network_or_inventory(lab: None) -> None:
    result = toolkit("lab", "down")
    assert result.returncode == 0, result.stderr
    assert podman("ps", "--all", "--filter", "label=io.toolkit.lab", "--format", "{{.Names}}").strip() == ""
    assert "toolkit-lab" not in podman("network", "ls", "--format", "{{.Name}}").split()
    assert not (PROJECT / "inventory" / "lab" / "hosts.yml").exists()
    assert not (PROJECT / ".cache" / "lab").exists()
    assert [host for host in lab_facts() if host.startswith("lab-")] == []
    assert (PROJECT / "inventory" / "lab" / "group_vars" / "all.yml").is_file()
