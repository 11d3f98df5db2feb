from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import inventory
from toolkit.errors import BadInputError

COMPLETE = """\
cluster:
  children:
    k3s_servers:
      hosts:
        srv1: {ansible_host: 192.0.2.11}
    k3s_agents:
      hosts:
        gpu1: {ansible_host: 192.0.2.21}
    gpu_nodes:
      hosts:
        gpu1:
    weka_clients: {}
"""


def write(tmp_path: Path, text: str, name: str = "hosts.yml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_complete_inventory_loads_with_group_members(tmp_path: Path) -> None:
    loaded = inventory.load_and_check(write(tmp_path, COMPLETE))
    assert loaded.hosts("k3s_servers") == ["srv1"]
    assert loaded.hosts("gpu_nodes") == ["gpu1"]
    assert loaded.hosts("cluster") == ["gpu1", "srv1"]
    assert loaded.hosts("weka_clients") == []


def test_ini_inventory_loads(tmp_path: Path) -> None:
    text = (
        "[k3s_servers]\nsrv1\n[k3s_agents]\n[gpu_nodes]\n[weka_clients]\n"
        "[cluster:children]\nk3s_servers\nk3s_agents\ngpu_nodes\nweka_clients\n"
    )
    loaded = inventory.load_and_check(write(tmp_path, text, "hosts.ini"))
    assert loaded.hosts("cluster") == ["srv1"]


def test_example_inventory_is_complete() -> None:
    example = Path(__file__).resolve().parents[2] / "inventory" / "example"
    loaded = inventory.load_and_check(example)
    assert loaded.hosts("k3s_servers")
    assert loaded.hosts("gpu_nodes")


def test_missing_inventory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        inventory.load(tmp_path / "nope")


def test_empty_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no hosts file"):
        inventory.load(tmp_path)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"hosts.yml: invalid YAML at line 3"):
        inventory.load(write(tmp_path, "cluster:\n  children: [oops\n"))


def test_each_missing_group_is_one_line(tmp_path: Path) -> None:
    text = "cluster:\n  children:\n    k3s_servers:\n      hosts:\n        a:\n"
    with pytest.raises(BadInputError) as raised:
        inventory.load_and_check(write(tmp_path, text))
    lines = str(raised.value).splitlines()
    assert lines == [
        f"inventory {tmp_path}: missing group 'k3s_agents'",
        f"inventory {tmp_path}: missing group 'gpu_nodes'",
        f"inventory {tmp_path}: missing group 'weka_clients'",
    ]


def test_servers_group_without_hosts_is_rejected(tmp_path: Path) -> None:
    text = COMPLETE.replace("      hosts:\n        srv1: {ansible_host: 192.0.2.11}\n", "      hosts: {}\n")
    with pytest.raises(BadInputError, match="'k3s_servers' has no hosts"):
        inventory.load_and_check(write(tmp_path, text))


def test_host_of_a_group_defined_outside_cluster_is_named(tmp_path: Path) -> None:
    text = COMPLETE.replace("    weka_clients: {}\n", "") + "weka_clients:\n  hosts:\n    stray:\n"
    with pytest.raises(BadInputError, match="host 'stray' of 'weka_clients' is not under 'cluster'"):
        inventory.load_and_check(write(tmp_path, text))
