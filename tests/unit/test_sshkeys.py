"""Users' SSH keys are checked before anything is created; private keys are refused loudly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from toolkit import sshkeys
from toolkit.errors import BadInputError


@pytest.fixture
def keypair(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(key)], check=True
    )
    return key


@pytest.fixture
def github(github_server: Any, keypair: Path) -> str:
    github_server.published.update(
        alice=keypair.with_suffix(".pub").read_text().rsplit(" ", 1)[0] + "\n", nokeys=""
    )
    return str(github_server.url)


def test_a_real_public_key_file_is_accepted(keypair: Path) -> None:
    keys = sshkeys.keys_from_file(keypair.with_suffix(".pub"))
    assert len(keys) == 1 and keys[0].startswith("ssh-ed25519 AAAA") and keys[0].endswith("alice@laptop")


def test_a_private_key_is_refused_and_named(keypair: Path) -> None:
    with pytest.raises(BadInputError, match="is a PRIVATE key: pass the public key"):
        sshkeys.keys_from_file(keypair)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("hello world\n", "not an OpenSSH public key"),
        ("ssh-ed25519 not-base64!\n", "not valid base64 key data"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGdmZ2dm\n", "is a 'ssh-ed25519' key but the line says 'ssh-rsa'"),
        ("# only a comment\n", "holds no SSH public key"),
    ],
)
def test_broken_key_files_are_refused(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "key.pub"
    path.write_text(text)
    with pytest.raises(BadInputError, match=error):
        sshkeys.keys_from_file(path)


def test_no_keys_at_all_is_refused() -> None:
    with pytest.raises(BadInputError, match="no SSH key given"):
        sshkeys.gather([], [])


def test_github_keys_come_from_the_configured_base_url(github: str, keypair: Path) -> None:
    assert sshkeys.keys_from_github("alice", github) == [
        keypair.with_suffix(".pub").read_text().rsplit(" ", 1)[0]
    ]


def test_github_user_without_keys_or_unknown_is_refused(github: str) -> None:
    with pytest.raises(BadInputError, match="GitHub user 'nokeys' has no SSH keys"):
        sshkeys.keys_from_github("nokeys", github)
    with pytest.raises(BadInputError, match="GitHub user 'ghost' does not exist"):
        sshkeys.keys_from_github("ghost", github)


def test_keys_are_deduplicated_by_key_data(keypair: Path, github: str) -> None:
    assert len(sshkeys.gather([keypair.with_suffix(".pub")], ["alice"], github)) == 1


def test_generated_host_key_is_one_ssh_keygen_reads(tmp_path: Path) -> None:
    host_key = sshkeys.generate_key_pair()
    path = tmp_path / "host"
    path.write_text(host_key.private_openssh)
    path.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == host_key.public.split()[:2]


def test_a_device_a_fifo_a_huge_or_binary_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pub"
    huge.write_text("ssh-ed25519 AAAA\n" * 20000)
    binary = tmp_path / "binary.pub"
    binary.write_bytes(b"\xff\xfe\x00ssh")
    for path, message in (
        (Path("/dev/zero"), "SSH key file /dev/zero is not a regular file"),
        (fifo, f"SSH key file {fifo} is not a regular file"),
        (tmp_path, f"SSH key file {tmp_path} is not a regular file"),
        (huge, f"SSH key file {huge} is larger than 256 KiB"),
        (binary, f"SSH key file {binary} is not text"),
        (tmp_path / "missing.pub", "cannot read SSH key file"),
    ):
        with pytest.raises(BadInputError) as refused:
            sshkeys.keys_from_file(path)
        assert message in str(refused.value) and "\n" not in str(refused.value)
