from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import BadInputError
from toolkit.runner import RunRequest, build_cmdline, validate_extra_vars


@pytest.mark.parametrize("value", ["a=1", "a=1 b=two", '{"a": [1, 2]}'])
def test_valid_extra_vars_pass(value: str) -> None:
    validate_extra_vars((value,))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("justaword", "expected key=value"),
        ("1abc=2", "expected key=value"),
        ("{not json", "not valid JSON"),
        ("@/no/such/file.yml", "no such file"),
    ],
)
def test_malformed_extra_vars_are_rejected(value: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        validate_extra_vars((value,))


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
