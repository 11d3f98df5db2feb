"""The toolkit.cluster.archive lookup: a chart archive's sha256 and content from one read on the
control node."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleError

PROJECT = Path(__file__).resolve().parents[2]
LOOKUPS = PROJECT / "collections" / "ansible_collections" / "toolkit" / "cluster" / "plugins" / "lookup"
sys.path[:0] = [str(LOOKUPS)]

import archive  # noqa: E402


def test_the_sha256_and_the_content_come_from_one_read(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # binary, over one read block
    (tmp_path / "chart.tgz").write_bytes(data)
    assert archive.read_archive(str(tmp_path / "chart.tgz")) == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "content": base64.b64encode(data).decode(),
    }
    assert archive.read_archive(str(tmp_path / "chart.tgz"), content=False) == {
        "sha256": hashlib.sha256(data).hexdigest()
    }


def test_a_missing_file_is_none_and_home_and_variables_are_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CHARTS", str(tmp_path / "charts"))
    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "kueue.tgz").write_bytes(b"kueue")
    assert archive.read_archive("~/charts/absent.tgz") is None
    wanted = {"sha256": hashlib.sha256(b"kueue").hexdigest(), "content": base64.b64encode(b"kueue").decode()}
    assert archive.read_archive("~/charts/kueue.tgz") == archive.read_archive("$CHARTS/kueue.tgz") == wanted


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match=f"cannot read {tmp_path}: Is a directory"):
        archive.read_archive(str(tmp_path))


def test_a_task_reads_it_through_ansible_with_its_content_option(tmp_path: Path) -> None:
    (tmp_path / "chart.tgz").write_bytes(b"chart")
    expression = f"{{{{ lookup('toolkit.cluster.archive', '{tmp_path}/chart.tgz', content=false) }}}}"
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "ansible.builtin.debug",
         "-a", f"msg={expression}", "-o"],
        cwd=PROJECT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    message = json.loads(shown.split("=>", 1)[1])["msg"]
    assert message == {"sha256": hashlib.sha256(b"chart").hexdigest()}
