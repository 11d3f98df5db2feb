"""SSH keys for shells: users' public keys (files or GitHub) and the shells' own host keys."""

from __future__ import annotations

import base64
import binascii
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInputError, ToolkitError

GITHUB_KEYS_URL = "https://github.com"
# An authorized_keys file of a few hundred keys; anything larger is not a list of public keys.
MAX_KEY_FILE_BYTES = 256 * 1024
PUBLIC_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def public_key_line(line: str, source: str) -> str:
    """One OpenSSH public key as `TYPE BASE64 [COMMENT]`, checked; a one-line error otherwise.

    The blob must decode and name the same type as the line, so a truncated or pasted-wrong key
    fails here rather than as a refused login later.
    """
    fields = line.strip().split(None, 2)
    if len(fields) < 2 or fields[0] not in PUBLIC_KEY_TYPES:
        raise BadInputError(
            f"{source}: not an OpenSSH public key (expected 'ssh-ed25519 AAAA...' or similar)"
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + length].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise BadInputError(f"{source}: the {fields[0]} key's data is not valid base64 key data") from None
    if embedded != fields[0]:
        raise BadInputError(f"{source}: the key data is a {embedded!r} key but the line says {fields[0]!r}")
    return " ".join(fields)


def keys_from_text(text: str, source: str) -> list[str]:
    """The public keys in an authorized_keys-style text; refuses private keys outright."""
    if "PRIVATE KEY" in text:
        raise BadInputError(
            f"{source} is a PRIVATE key: pass the public key (the .pub file) instead; nothing was uploaded"
        )
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [public_key_line(line, f"{source} line {number}") for number, line in enumerate(lines, 1)]


def read_small_file(path: Path, what: str, limit: int) -> str:
    """A regular text file of at most `limit` bytes; a one-line error for anything else.

    It is opened without blocking and checked before it is read, so a FIFO, a device such as
    /dev/zero or a huge file is refused instead of hanging or filling memory.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise BadInputError(f"cannot read {what} {path}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise BadInputError(f"{what} {path} is not a regular file")
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BadInputError(f"{what} {path} is larger than {limit // 1024} KiB: is it the right file?")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BadInputError(f"{what} {path} is not text") from None


def keys_from_file(path: Path) -> list[str]:
    text = read_small_file(path, "SSH key file", MAX_KEY_FILE_BYTES)
    keys = keys_from_text(text, str(path))
    if not keys:
        raise BadInputError(f"{path} holds no SSH public key")
    return keys


def keys_from_github(user: str, base_url: str = GITHUB_KEYS_URL, timeout: float = 10) -> list[str]:
    """The public keys GitHub publishes for `user` at BASE/USER.keys."""
    import urllib.error
    import urllib.request

    if not user or not all(c.isalnum() or c == "-" for c in user) or len(user) > 39:
        raise BadInputError(f"{user!r} is not a GitHub user name")
    url = f"{base_url.rstrip('/')}/{user}.keys"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise BadInputError(f"GitHub user {user!r} does not exist ({url})") from None
        raise ToolkitError(f"cannot fetch {url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ToolkitError(f"cannot fetch {url}: {getattr(error, 'reason', error)}") from None
    keys = keys_from_text(text, url)
    if not keys:
        raise BadInputError(f"GitHub user {user!r} has no SSH keys ({url}): add one, or pass --ssh-key")
    return keys


def gather(files: list[Path], github_users: list[str], base_url: str = GITHUB_KEYS_URL) -> list[str]:
    """Every key from the files and GitHub users, deduplicated by key data, in order."""
    keys = [key for path in files for key in keys_from_file(path)]
    keys += [key for user in github_users for key in keys_from_github(user, base_url)]
    if not keys:
        raise BadInputError("no SSH key given: pass --ssh-key FILE or --github USER")
    unique: dict[str, str] = {}
    for key in keys:
        unique.setdefault(key.split()[1], key)
    return list(unique.values())


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair: a shell's host key (the private key for its Secret, the public one for
    known_hosts), or a client key (`toolkit cluster verify` logging in to its test shell)."""

    private_openssh: str
    public: str  # "ssh-ed25519 AAAA..."


def generate_key_pair() -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private_openssh=private, public=public.decode())
