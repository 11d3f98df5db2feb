"""The command tree as the root builds it: each group's commands become click's only when the group
runs, so the root's help must still list every group, and every command must still be reachable,
with its help and its usage errors, through the root."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

import toolkit.cli.main
from toolkit.cli.main import GROUPS, app
from toolkit.errors import BadInputError

WIDE = {"COLUMNS": "400"}


def invoke(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, list(args), env=WIDE)
    return result.exit_code, result.output, result.exception


def group_commands(name: str) -> list[str]:
    """The commands of a group, read from the Typer app itself rather than the root."""
    return list(typer.main.get_group(GROUPS[name]).commands)


def test_the_roots_help_lists_every_group_with_its_help_and_builds_only_the_group_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[typer.Typer] = []

    def counted(group: typer.Typer) -> typer.core.TyperGroup:
        built.append(group)
        return typer.main.get_group(group)

    monkeypatch.setattr(toolkit.cli.main, "get_group", counted)
    code, output, _ = invoke("--help")
    assert code == 0
    assert "doctor" in output
    for name, group in GROUPS.items():
        first_words = " ".join(str(group.info.help).split()[:4])
        assert f"{name} " in output and first_words in " ".join(output.split()), name
    assert built == []
    code, _, _ = invoke("shell", "list", "--help")
    assert code == 0
    assert built == [GROUPS["shell"]]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_command_of_a_group_runs_through_the_root(name: str) -> None:
    code, output, _ = invoke(name, "--help")
    assert code == 0, output
    commands = group_commands(name)
    assert commands, name
    for command in commands:
        assert command in output, (name, command)
        code, output_of_command, error = invoke(name, command, "--help")
        assert code == 0, (name, command, error, output_of_command)
        assert f"toolkit {name} {command}" in output_of_command


def test_a_nested_group_and_its_usage_errors_name_their_path() -> None:
    code, output, _ = invoke("shell", "ssh-config", "--help")
    assert code == 0 and "enable" in output and "disable" in output
    _, _, error = invoke("cluster", "upp")
    assert isinstance(error, BadInputError)
    assert (
        str(error)
        == "toolkit cluster: No such command 'upp'. Did you mean 'up'? (see 'toolkit cluster --help')"
    )
    _, _, error = invoke("shel")
    assert isinstance(error, BadInputError)
    assert "Did you mean 'shell'?" in str(error)
