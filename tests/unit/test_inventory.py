from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from toolkit import inventory
from toolkit.errors import BadInputError

PROJECT = Path(__file__).resolve().parents[2]

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
    loaded, _ = inventory.load_and_check(write(tmp_path, COMPLETE))
    assert loaded.hosts("k3s_servers") == ["srv1"]
    assert loaded.hosts("gpu_nodes") == ["gpu1"]
    assert loaded.hosts("cluster") == ["gpu1", "srv1"]
    assert loaded.hosts("weka_clients") == []


def test_ini_inventory_loads(tmp_path: Path) -> None:
    text = (
        "[k3s_servers]\nsrv1\n[k3s_agents]\n[gpu_nodes]\n[weka_clients]\n"
        "[cluster:children]\nk3s_servers\nk3s_agents\ngpu_nodes\nweka_clients\n"
    )
    loaded, _ = inventory.load_and_check(write(tmp_path, text, "hosts.ini"))
    assert loaded.hosts("cluster") == ["srv1"]


def test_example_inventory_is_complete() -> None:
    example = Path(__file__).resolve().parents[2] / "inventory" / "example"
    loaded, _ = inventory.load_and_check(example)
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


def site(
    tmp_path: Path,
    servers: int = 1,
    settings: str = "",
    agents: str = "        gpu1: {ansible_host: 192.0.2.21}\n",
) -> Path:
    server_lines = "".join(f"        srv{i}: {{ansible_host: 192.0.2.1{i}}}\n" for i in range(servers))
    text = (
        "cluster:\n  children:\n    k3s_servers:\n      hosts:\n"
        + server_lines
        + "    k3s_agents:\n      hosts:\n"
        + agents
        + "    gpu_nodes: {}\n    weka_clients:\n      hosts:\n        gpu1:\n"
        + "  vars:\n    wekafs_client_backends: [192.0.2.100]\n"
        + settings
    )
    return write(tmp_path, text)


def findings(path: Path) -> inventory.Findings:
    return inventory.check(inventory.load(path))


def test_a_valid_site_has_no_findings(tmp_path: Path) -> None:
    assert findings(site(tmp_path)) == inventory.Findings(errors=[], warnings=[])


def test_even_number_of_servers_is_an_error(tmp_path: Path) -> None:
    errors = findings(site(tmp_path, servers=2, settings="    k3s_api_endpoint: k3s.local\n")).errors
    assert errors == ["k3s_servers has 2 hosts: embedded etcd needs an odd number (1, 3, 5)"]


def test_the_k3s_preflight_asserts_the_same_odd_server_rule() -> None:
    preflight = yaml.safe_load((PROJECT / "roles" / "k3s" / "tasks" / "preflight.yml").read_text())
    (task,) = [task for task in preflight if task["name"] == "Assert an odd number of servers"]
    assert task["ansible.builtin.assert"]["that"] == "_k3s_servers | length % 2 == 1"
    assert inventory.ODD_SERVERS_REASON in " ".join(task["ansible.builtin.assert"]["fail_msg"].split())
    assert [n for n in range(-1, 8) if inventory.is_odd_server_count(n)] == [1, 3, 5, 7]


def test_ha_without_api_endpoint_is_an_error(tmp_path: Path) -> None:
    (error,) = findings(site(tmp_path, servers=3)).errors
    assert error.startswith("k3s_api_endpoint is not set: with 3 servers")


def test_plain_text_token_is_a_warning(tmp_path: Path) -> None:
    result = findings(site(tmp_path, settings="    k3s_token: hunter2\n"))
    assert result.errors == []
    assert result.warnings == ["k3s_token is plain text in the inventory: keep it in ansible-vault"]


def test_token_from_a_vault_variable_is_fine(tmp_path: Path) -> None:
    assert findings(site(tmp_path, settings="    k3s_token: '{{ vault_k3s_token }}'\n")).warnings == []


def test_inline_vault_token_is_fine(tmp_path: Path) -> None:
    vaulted = (
        "    k3s_token: !vault |\n"
        "      $ANSIBLE_VAULT;1.1;AES256\n"
        "      62313365396662343061393464336163383764373764613633653634306231386433626436623361\n"
    )
    assert findings(site(tmp_path, settings=vaulted)).warnings == []


def test_floating_version_is_an_error(tmp_path: Path) -> None:
    errors = findings(site(tmp_path, settings="    k3s_version: latest\n")).errors
    assert len(errors) == 1 and errors[0].startswith("k3s_version is 'latest' for ")


def test_weka_client_without_backends_is_an_error_unless_weka_is_off(tmp_path: Path) -> None:
    text = (
        site(tmp_path)
        .joinpath("hosts.yml")
        .read_text()
        .replace("    wekafs_client_backends: [192.0.2.100]\n", "")
    )
    (tmp_path / "hosts.yml").write_text(text)
    assert findings(tmp_path).errors == [
        "wekafs_client_backends is not set for Weka client 'gpu1' (or set wekafs_enabled: false)"
    ]
    (tmp_path / "hosts.yml").write_text(text + "    wekafs_enabled: false\n")
    assert findings(tmp_path).errors == []


def test_one_machine_under_two_names_is_an_error(tmp_path: Path) -> None:
    agents = "        gpu1: {ansible_host: 192.0.2.21}\n        gpu1-alias: {ansible_host: 192.0.2.21}\n"
    errors = findings(site(tmp_path, agents=agents)).errors
    assert errors == ["hosts gpu1, gpu1-alias are the same machine (192.0.2.21)"]


def test_init_writes_a_skeleton_that_validates_and_refuses_a_used_directory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from toolkit.cli.main import app

    target = tmp_path / "site"
    result = CliRunner().invoke(app, ["inventory", "init", str(target)])
    assert result.exit_code == 0, result.output
    assert findings(target).errors == []
    again = CliRunner().invoke(app, ["inventory", "init", str(target)])
    assert again.exit_code != 0
    assert "exists and is not empty" in str(again.exception)


def test_validate_command_prints_one_line_per_error_and_exits_3(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from toolkit.cli.main import app

    path = site(tmp_path, servers=2, settings="    k3s_version: latest\n")
    result = CliRunner().invoke(app, ["inventory", "validate", "-i", str(path)])
    assert result.exit_code == 3
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 3, result.output
    assert any("k3s_servers has 2 hosts" in line for line in lines)
    assert any("k3s_version is 'latest'" in line for line in lines)


def test_real_host_names_addresses_and_ports_pass(tmp_path: Path) -> None:
    text = COMPLETE.replace(
        "gpu1: {ansible_host: 192.0.2.21}",
        "gpu1: {ansible_host: 'fd00::21', ansible_port: 2222}\n"
        "        gpu_2.rack-3: {ansible_host: node2.example.org}",
    )
    loaded = inventory.load(write(tmp_path, text))
    assert inventory.host_problems(loaded) == []


@pytest.mark.parametrize(
    ("host", "settings", "problem"),
    [
        ("s1;touch x", "{ansible_host: 192.0.2.11}", "host name 's1;touch x' is not a valid host name"),
        ("s1", "{ansible_host: '$(id)'}", "ansible_host '$(id)' of s1 is not a host name or IP address"),
        (
            "s1",
            "{ansible_host: '-oProxyCommand=x'}",
            "ansible_host '-oProxyCommand=x' of s1 is not a host name",
        ),
        ("s1", "{ansible_host: 192.0.2.11, ansible_port: x}", "ansible_port 'x' of s1 is not a port number"),
        ("s1", "{ansible_host: 192.0.2.11, ansible_port: 0}", "ansible_port '0' of s1 is not a port number"),
        (
            "s1",
            "{ansible_host: 192.0.2.11, ansible_port: '²'}",
            "ansible_port '²' of s1 is not a port number",
        ),
        ("s1", '{ansible_host: "192.0.2.11\\n"}', "ansible_host '192.0.2.11\\n' of s1 is not a host name"),
        ("s1", "{ansible_host: 'fe80::1%$(id)'}", "ansible_host 'fe80::1%$(id)' of s1 is not a host name"),
        (
            "s1",
            "{nvidia_driver_expected_gpus: eight}",
            "nvidia_driver_expected_gpus 'eight' of s1 is not a number",
        ),
        ("s1", '{ansible_ssh_common_args: "-o \'Unclosed"}', "ansible_ssh_common_args of s1 can't be read"),
    ],
)
def test_host_names_addresses_and_ports_that_cant_be_real_are_errors(
    tmp_path: Path, host: str, settings: str, problem: str
) -> None:
    text = COMPLETE.replace("srv1: {ansible_host: 192.0.2.11}", f"{host!r}: {settings}")
    with pytest.raises(BadInputError, match=re.escape(problem)):
        inventory.load_and_check(write(tmp_path, text))


def test_an_inventory_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_bytes(COMPLETE.replace("srv1", "srv\xe9").encode("latin-1"))
    with pytest.raises(BadInputError, match=r"hosts.yml: is not UTF-8 \(byte \d+ is 0xe9\)$"):
        inventory.load(tmp_path)


def test_variables_beside_a_hosts_file_in_a_dot_folder_are_checked_for_utf8_too(tmp_path: Path) -> None:
    folder = tmp_path / ".site"
    (folder / "group_vars").mkdir(parents=True)
    write(folder, COMPLETE)
    (folder / "group_vars" / "all.yml").write_bytes("k3s_token: caf\xe9\n".encode("latin-1"))
    with pytest.raises(BadInputError, match=r"group_vars/all.yml: is not UTF-8"):
        inventory.load(folder / "hosts.yml")


def test_a_name_with_a_trailing_newline_is_not_a_name() -> None:
    from toolkit.tenancy import check_user_name

    with pytest.raises(BadInputError, match=re.escape("user name 'alice\\n' is invalid")):
        check_user_name("alice\n")
