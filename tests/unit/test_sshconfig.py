"""The toolkit's ssh config: entries replaced in place, host keys pinned, one Include line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolkit import sshconfig
from toolkit.errors import BadInputError


def test_entry_is_written_once_and_replaced_in_place(tmp_path: Path) -> None:
    entry = sshconfig.Entry("alice", "train", "10.0.0.11", 30000, "ssh-ed25519 AAAAone")
    sshconfig.write_entry(entry, tmp_path)
    sshconfig.write_entry(
        sshconfig.Entry("alice", "eval", "10.0.0.12", 30001, "ssh-ed25519 AAAAtwo"), tmp_path
    )
    moved = sshconfig.Entry("alice", "train", "10.0.0.13", 30005, "ssh-ed25519 AAAAthree")
    config = sshconfig.write_entry(moved, tmp_path)
    text = config.read_text()
    assert text.count("Host toolkit-alice-train\n") == 1 and "Port 30005" in text and "Port 30000" not in text
    assert "HostKeyAlias toolkit-alice-train" in text and "StrictHostKeyChecking yes" in text
    assert (tmp_path / "known_hosts").read_text().splitlines() == [
        "toolkit-alice-eval ssh-ed25519 AAAAtwo",
        "toolkit-alice-train ssh-ed25519 AAAAthree",
    ]
    assert oct(config.stat().st_mode & 0o777) == "0o600"


def test_removing_an_entry_leaves_the_others(tmp_path: Path) -> None:
    for name in ("one", "two"):
        sshconfig.write_entry(sshconfig.Entry("bob", name, "h", 1, f"ssh-ed25519 {name}"), tmp_path)
    assert sshconfig.remove_entry("bob", "one", tmp_path) is True
    assert sshconfig.remove_entry("bob", "one", tmp_path) is False
    text = (tmp_path / "ssh_config").read_text()
    assert "toolkit-bob-one" not in text and "Host toolkit-bob-two" in text
    assert (tmp_path / "known_hosts").read_text() == "toolkit-bob-two ssh-ed25519 two\n"


def test_include_line_is_added_at_the_top_once_and_removed(tmp_path: Path) -> None:
    user_config = tmp_path / "ssh" / "config"
    user_config.parent.mkdir()
    user_config.write_text("Host work\n    User me\n")
    assert sshconfig.set_include(True, user_config, tmp_path) is True
    assert sshconfig.set_include(True, user_config, tmp_path) is False
    lines = user_config.read_text().splitlines()
    assert lines[0] == f"Include {tmp_path / 'ssh_config'}" and lines.count(lines[0]) == 1
    assert sshconfig.set_include(False, user_config, tmp_path) is True
    assert user_config.read_text() == "Host work\n    User me\n"
    assert sshconfig.set_include(False, user_config, tmp_path) is False


def test_rewriting_an_entry_can_keep_the_identity_file_create_recorded(tmp_path: Path) -> None:
    with_identity = sshconfig.Entry(
        "alice", "train", "10.0.0.11", 30000, "ssh-ed25519 AAAA", Path("/keys/id")
    )
    sshconfig.write_entry(with_identity, tmp_path)
    moved = sshconfig.Entry("alice", "train", "10.0.0.12", 30000, "ssh-ed25519 AAAA")
    text = sshconfig.write_entry(moved, tmp_path, keep_identity=True).read_text()
    assert "IdentityFile /keys/id" in text and "HostName 10.0.0.12" in text
    assert "IdentityFile" not in sshconfig.write_entry(moved, tmp_path).read_text()


def ssh_resolves(config: Path, host: str, home: Path) -> dict[str, str]:
    """What the real ssh makes of `host` with `config` (ssh -G: its settings, no connection)."""
    result = subprocess.run(
        ["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def test_on_macos_the_config_goes_under_application_support_and_ssh_reads_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "Users" / "alice"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setattr(sshconfig.sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TOOLKIT_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "not-on-macos"))
    directory = sshconfig.config_dir()
    assert directory == home / "Library" / "Application Support" / "toolkit"
    identity = home / "keys 100%" / "id_ed25519"  # a space and a '%', which ssh would expand
    entry = sshconfig.Entry("alice", "train", "10.0.0.11", 30000, "ssh-ed25519 AAAA", identity)
    config = sshconfig.write_entry(entry)
    settings = ssh_resolves(config, "toolkit-alice-train", home)
    assert settings["hostname"] == "10.0.0.11" and settings["port"] == "30000"
    assert settings["userknownhostsfile"] == str(directory / "known_hosts")
    # ssh -G shows IdentityFile before expanding its tokens, where "%%" becomes "%".
    assert settings["identityfile"] == str(identity).replace("%", "%%")
    # The Include line in the user's own ~/.ssh/config finds the entry too, as VS Code's ssh does.
    assert sshconfig.set_include(True)
    assert ssh_resolves(home / ".ssh" / "config", "toolkit-alice-train", home)["hostname"] == "10.0.0.11"
    # A rewrite that keeps the identity reads back the path it wrote.
    moved = sshconfig.Entry("alice", "train", "10.0.0.12", 30000, "ssh-ed25519 AAAA")
    again = sshconfig.write_entry(moved, keep_identity=True)
    assert ssh_resolves(again, "toolkit-alice-train", home)["identityfile"] == settings["identityfile"]
    assert sshconfig.set_include(False) and "Include" not in (home / ".ssh" / "config").read_text()


def test_a_path_ssh_config_cannot_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="would not read this path back as written"):
        sshconfig.check_path(tmp_path / 'say "hi"')
    sshconfig.check_path(tmp_path / "plain")


@pytest.mark.parametrize("name", ["it's", "back\\slash", "${HOME}"])
def test_paths_ssh_would_read_otherwise_are_refused_and_what_ssh_reads_back_is_accepted(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(BadInputError, match="ssh_config would not read this path back as written"):
        sshconfig.check_path(tmp_path / name)
    with pytest.raises(BadInputError):
        sshconfig.check_path(tmp_path / "keys[1]", included=True)  # the Include line globs
    sshconfig.check_path(tmp_path / "keys[1]")
    sshconfig.check_path(tmp_path / "with space" / "and 100%")


def test_a_macos_user_of_an_earlier_version_keeps_their_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sshconfig.sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TOOLKIT_CONFIG_DIR", raising=False)
    (tmp_path / ".config" / "toolkit").mkdir(parents=True)
    assert sshconfig.config_dir() == tmp_path / ".config" / "toolkit"
    (tmp_path / "Library" / "Application Support" / "toolkit").mkdir(parents=True)
    assert sshconfig.config_dir() == tmp_path / "Library" / "Application Support" / "toolkit"
