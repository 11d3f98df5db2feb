from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from toolkit import inventory, lab, lab_standins
from toolkit.errors import BadInputError

PROJECT = Path(__file__).resolve().parents[2]


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


def test_the_k3s_standin_is_laid_out_as_a_release_that_reports_its_version(tmp_path: Path) -> None:
    release = lab_standins.lay_out_k3s_standin(PROJECT, tmp_path, "v1.33.5+k3s1")
    assert release == tmp_path / "v1.33.5+k3s1"
    binary = release / "k3s"
    digest, name = (release / "sha256sum-amd64.txt").read_text().split()
    assert (digest, name) == (hashlib.sha256(binary.read_bytes()).hexdigest(), "k3s")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    first_line = version.splitlines()[0]
    assert re.fullmatch(r"k3s version v1\.33\.5\+k3s1 \([0-9a-f]{8}\)", first_line), version


def test_the_k3s_standin_settings_say_what_it_is_through_the_inventory(tmp_path: Path) -> None:
    paths = lab.LabPaths(inventory_dir=tmp_path / "lab", state_dir=tmp_path / "state")
    settings = lab_standins.k3s_standin_settings(PROJECT, paths.k3s_standin_dir, "v1.33.5+k3s1")
    assert settings["k3s_install_source"] == "airgap"
    assert (Path(str(settings["k3s_airgap_dir"])) / "k3s").is_file()
    (note,) = settings["toolkit_standins"]
    assert note.startswith("k3s is the stand-in binary")
    assert str(settings["verify_api_skip_reason"]).endswith("it serves no Kubernetes API")


def test_the_toolkit_never_imports_or_runs_test_material() -> None:
    pattern = re.compile(r"^\s*(from|import) tests\b|[\"']tests[\"']|[\"']tests/", re.MULTILINE)
    offenders = [
        str(path.relative_to(PROJECT))
        for path in sorted((PROJECT / "toolkit").rglob("*.py"))
        if pattern.search(path.read_text())
    ]
    assert offenders == []
