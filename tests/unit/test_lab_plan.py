from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from pathlib import Path
from typing import cast

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


def test_the_nfd_standin_chart_is_sent_as_an_air_gapped_sites_pinned_archive(tmp_path: Path) -> None:
    settings = lab_standins.nfd_standin_settings(tmp_path, "v0.18.3")
    archive = Path(str(settings["node_feature_discovery_chart_archive"]))
    assert archive.name == "node-feature-discovery-chart-0.18.3.tgz"
    pins = cast(dict[str, str], settings["node_feature_discovery_chart_checksums"])
    assert pins == {"0.18.3": hashlib.sha256(archive.read_bytes()).hexdigest()}
    # The same bytes every time, so a lab brought up again keeps its pin.
    assert lab_standins.nfd_standin_chart("v0.18.3") == archive.read_bytes()
    with tarfile.open(archive) as chart:
        (member,) = chart.getmembers()
        extracted = chart.extractfile(member)
        assert extracted is not None
        chart_yaml = yaml.safe_load(extracted.read())
    assert member.name == "node-feature-discovery/Chart.yaml"
    assert (chart_yaml["name"], chart_yaml["version"]) == ("node-feature-discovery", "0.18.3")
    assert "STAND-IN" in chart_yaml["description"]
    (note,) = cast(list[str], settings["toolkit_standins"])
    assert note.startswith("Node Feature Discovery's chart is a stand-in")


def test_the_nfd_standin_is_the_one_the_role_deploys_and_its_molecule_scenario_sends() -> None:
    version = lab_standins.nfd_version(PROJECT)
    scenario = PROJECT / "roles" / "node_feature_discovery" / "molecule" / "default" / "files"
    assert (scenario / f"node-feature-discovery-chart-{version[1:]}.tgz").read_bytes() == (
        lab_standins.nfd_standin_chart(version)
    )
    assert lab_standins.nfd_chart_url(version) == (
        f"https://github.com/kubernetes-sigs/node-feature-discovery/releases/download/{version}/"
        f"node-feature-discovery-chart-{version[1:]}.tgz"
    )


def test_every_standin_keeps_its_note_when_the_lab_needs_several(tmp_path: Path) -> None:
    standins: dict[str, object] = {}
    lab._add_standin(standins, lab_standins.k3s_standin_settings(PROJECT, tmp_path / "k3s", "v1.33.5+k3s1"))
    lab._add_standin(standins, lab_standins.nfd_standin_settings(tmp_path / "nfd", "v0.18.3"))
    notes = cast(list[str], standins["toolkit_standins"])
    assert [note.split(" ")[0] for note in notes] == ["k3s", "Node"]
    assert standins["k3s_install_source"] == "airgap" and "node_feature_discovery_chart_archive" in standins


def test_the_toolkit_never_imports_or_runs_test_material() -> None:
    pattern = re.compile(r"^\s*(from|import) tests\b|[\"']tests[\"']|[\"']tests/", re.MULTILINE)
    offenders = [
        str(path.relative_to(PROJECT))
        for path in sorted((PROJECT / "toolkit").rglob("*.py"))
        if pattern.search(path.read_text())
    ]
    assert offenders == []
