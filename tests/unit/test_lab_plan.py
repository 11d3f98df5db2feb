from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from toolkit import inventory, lab
from toolkit.errors import BadInputError


def test_default_lab_is_one_server_and_two_agents() -> None:
    hosts = lab.plan_hosts(3, 1, lab.DEFAULT_SUBNET)
    assert [(h.name, h.address, h.group) for h in hosts] == [
        ("lab-server-1", "10.213.77.11", "k3s_servers"),
        ("lab-agent-1", "10.213.77.31", "k3s_agents"),
        ("lab-agent-2", "10.213.77.32", "k3s_agents"),
    ]
    assert hosts[0].container == "toolkit-lab-server-1"


@pytest.mark.parametrize(
    ("count", "servers", "subnet", "message"),
    [
        (0, 1, lab.DEFAULT_SUBNET, "--hosts must be between"),
        (lab.MAX_HOSTS + 1, 1, lab.DEFAULT_SUBNET, "--hosts must be between"),
        (4, 2, lab.DEFAULT_SUBNET, "--servers must be odd"),
        (3, 0, lab.DEFAULT_SUBNET, "--servers must be odd"),
        (2, 3, lab.DEFAULT_SUBNET, "cannot exceed"),
        (3, 1, "not-a-net", "is not a network"),
        (3, 1, "10.0.0.0/29", "too small"),
    ],
)
def test_impossible_lab_shapes_are_rejected(count: int, servers: int, subnet: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        lab.plan_hosts(count, servers, subnet)


def test_rendered_lab_inventory_has_a_sites_groups_and_strict_host_keys(tmp_path: Path) -> None:
    paths = lab.LabPaths(inventory_dir=tmp_path / "lab", state_dir=tmp_path / "state")
    hosts = lab.plan_hosts(3, 1, lab.DEFAULT_SUBNET)
    paths.inventory_dir.mkdir()
    paths.hosts_file.write_text(lab.render_inventory(hosts, paths))
    loaded, _ = inventory.load_and_check(paths.inventory_dir)
    assert loaded.hosts("k3s_agents") == ["lab-agent-1", "lab-agent-2"]
    assert loaded.hosts("gpu_nodes") == ["lab-agent-1", "lab-agent-2"]
    settings = yaml.safe_load(paths.hosts_file.read_text())["cluster"]["vars"]
    assert settings["ansible_ssh_private_key_file"] == str(paths.private_key)
    assert "StrictHostKeyChecking=yes" in settings["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={paths.known_hosts}" in settings["ansible_ssh_common_args"]


def test_single_host_lab_still_has_every_group(tmp_path: Path) -> None:
    paths = lab.LabPaths(inventory_dir=tmp_path, state_dir=tmp_path / "state")
    paths.hosts_file.write_text(lab.render_inventory(lab.plan_hosts(1, 1, lab.DEFAULT_SUBNET), paths))
    assert inventory.load_and_check(tmp_path)[0].hosts("k3s_agents") == []


def test_missing_podman_is_one_line_naming_the_package(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        lab.MissingToolError, match=r"podman is not installed: run `apt-get install -y podman"
    ):
        lab.status()
