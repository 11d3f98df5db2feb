from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import BadInputError
from toolkit.runner import RunRequest, build_cmdline, validate_extra_vars


@pytest.mark.parametrize(
    "value",
    ["a=1", "a=1 b=two", '{"a": [1, 2]}', "{a: [1, 2]}", "k3s_kubeconfig_dest=/tmp/k", "node_host=keystone-1",
     "passage=1", "compass_mode=on"],
)  # fmt: skip
def test_valid_extra_vars_pass(value: str) -> None:
    validate_extra_vars((value,))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("justaword", "expected key=value"),
        ("1abc=2", "expected key=value"),
        ("{not json", "must be a JSON or YAML mapping"),
        ("a='unclosed", "No closing quotation"),
        ("k3s-token=s3cret", r"^-e k3s-token=\.\.\.: expected key=value"),
        ("ansible_host_key_checking=false", "host-key checking stays on"),
        ("ansible_ssh_common_args='-o StrictHostKeyChecking=no'", "host-key checking stays on"),
        ("@/no/such/file.yml", "no such file"),
    ],
)
def test_malformed_extra_vars_are_rejected(value: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        validate_extra_vars((value,))


@pytest.mark.parametrize(
    "value",
    ["k3s_token=K10abc::server:s3cret", "a=1 wekafs_client_password=hunter2", '{"weka_secret": "x"}',
     "wekafs_csi_api_key=abc", "K3S_TOKEN=x", "{k3s_token: s3cret}", '{"cfg": {"k3s_token": "s3cret"}}',
     "ansible_become_pass=hunter2", "ansible_ssh_pass=hunter2"],
)  # fmt: skip
def test_secrets_on_the_command_line_are_refused_and_pointed_to_a_file(value: str) -> None:
    with pytest.raises(
        BadInputError, match=r"secrets are not taken on the command line.*-e @FILE"
    ) as refused:
        validate_extra_vars((value,))
    assert "hunter2" not in str(refused.value) and "s3cret" not in str(refused.value)


def test_secrets_in_a_vars_file_pass(tmp_path: Path) -> None:
    (tmp_path / "secrets.yml").write_text("k3s_token: K10abc::server:s3cret\n")
    validate_extra_vars((f"@{tmp_path / 'secrets.yml'}",))


def test_cmdline_makes_var_files_absolute_and_adds_check_and_diff(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "vars.yml").write_text("a: 1\n")
    monkeypatch.chdir(tmp_path)
    request = RunRequest(
        playbook=Path("site.yml"),
        inventory=Path("inv"),
        extra_vars=("@vars.yml", "b=2"),
        check=True,
        diff=True,
    )
    assert build_cmdline(request) == f"-e @{tmp_path / 'vars.yml'} -e b=2 --check --diff"
