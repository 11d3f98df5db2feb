"""The toolkit.cluster.files module: a role's files converged in one module run, only what
differs written, atomically, and contents never shown."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2]
COLLECTIONS = PROJECT / "collections"
MODULE = COLLECTIONS / "ansible_collections" / "toolkit" / "cluster" / "plugins" / "modules"
sys.path[:0] = [str(MODULE)]

import files  # noqa: E402


def params(
    directories: list[dict[str, Any]] | None = None, entries: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    owned = {"owner": "root", "group": "root"}
    return {
        "directories": [{**owned, **d} for d in directories or []],
        "files": [
            {"state": "present", "unless_exists": "", "content": "", "secret_content": None, "mode": "0600"}
            | owned
            | f
            for f in entries or []
        ],
    }


def mode_of(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("the module sets owners: root only")


def test_a_new_directory_and_files_are_written_then_a_second_run_changes_nothing(tmp_path: Path) -> None:
    manifests = tmp_path / "server" / "manifests"
    wanted = params(
        [{"path": str(manifests), "mode": "0700"}],
        [
            {"path": str(manifests / "a.yaml"), "content": "a: 1\n"},
            {"path": str(manifests / "b.yaml"), "content": "b\n"},
        ],
    )
    done = files.converge(wanted, check=False)
    assert done == {
        "written": [str(manifests / "a.yaml"), str(manifests / "b.yaml")],
        "updated": [],
        "created": [str(manifests)],
        "removed": [],
    }
    assert mode_of(manifests) == "0o700" and mode_of(manifests / "a.yaml") == "0o600"
    assert (manifests / "a.yaml").read_text() == "a: 1\n"
    assert files.converge(wanted, check=False) == {"written": [], "updated": [], "created": [], "removed": []}
    assert sorted(p.name for p in manifests.iterdir()) == ["a.yaml", "b.yaml"]  # no temporary left


def test_only_what_differs_is_changed_and_absent_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "same.yaml").write_text("same\n")
    (tmp_path / "same.yaml").chmod(0o600)
    (tmp_path / "loose.yaml").write_text("loose\n")
    (tmp_path / "loose.yaml").chmod(0o644)
    (tmp_path / "old.yaml").write_text("old\n")
    (tmp_path / "off.yaml").write_text("off\n")
    inode = (tmp_path / "same.yaml").stat().st_ino
    done = files.converge(
        params(
            [{"path": str(tmp_path), "mode": oct(stat.S_IMODE(tmp_path.stat().st_mode))[2:]}],
            [
                {"path": str(tmp_path / "same.yaml"), "content": "same\n"},
                {"path": str(tmp_path / "loose.yaml"), "content": "loose\n"},
                {"path": str(tmp_path / "old.yaml"), "content": "new\n"},
                {"path": str(tmp_path / "off.yaml"), "state": "absent"},
                {"path": str(tmp_path / "never.yaml"), "state": "absent"},
            ],
        ),
        check=False,
    )
    assert done == {
        "written": [str(tmp_path / "old.yaml")],
        "updated": [str(tmp_path / "loose.yaml")],
        "created": [],
        "removed": [str(tmp_path / "off.yaml")],
    }
    assert (tmp_path / "same.yaml").stat().st_ino == inode  # untouched, not rewritten
    assert mode_of(tmp_path / "loose.yaml") == "0o600" and (tmp_path / "old.yaml").read_text() == "new\n"
    assert not (tmp_path / "off.yaml").exists()


def test_check_mode_reports_and_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text("old\n")
    wanted = params(
        [{"path": str(tmp_path / "new-dir"), "mode": "0700"}],
        [
            {"path": str(tmp_path / "old.yaml"), "content": "new\n"},
            {"path": str(tmp_path / "old.yaml"), "state": "absent"},
        ],
    )
    done = files.converge(wanted, check=True)
    assert done["created"] == [str(tmp_path / "new-dir")] and done["written"] == [str(tmp_path / "old.yaml")]
    assert not (tmp_path / "new-dir").exists() and (tmp_path / "old.yaml").read_text() == "old\n"


def test_links_and_directories_in_a_files_place_are_refused(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("elsewhere\n")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "target")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ValueError, match="is not a regular file"):
        files.converge(params(entries=[{"path": str(tmp_path / "link.yaml"), "content": "x"}]), check=False)
    with pytest.raises(ValueError, match="only files are removed"):
        files.converge(params(entries=[{"path": str(tmp_path / "dir.yaml"), "state": "absent"}]), check=False)
    assert (tmp_path / "target").read_text() == "elsewhere\n"


def test_a_run_through_ansible_names_the_paths_and_never_shows_a_content(tmp_path: Path) -> None:
    secret = "sentinel-token-5e1f"
    arguments = {
        "directories": [{"path": str(tmp_path / "etc"), "mode": "0755"}],
        "files": [
            {
                "path": str(tmp_path / "etc" / "config.yaml"),
                "secret_content": f"token: {secret}\n",
                "mode": "0600",
            },
            {
                "path": str(tmp_path / "etc" / "unit"),
                "content": "[Unit]\nDescription=shown\n",
                "mode": "0644",
            },
        ],
    }
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-vvv", "--diff",
         "-m", "toolkit.cluster.files", "-a", json.dumps(arguments)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert secret not in run.stdout + run.stderr
    assert str(tmp_path / "etc" / "config.yaml") in run.stdout and "CHANGED" in run.stdout
    # A file that is not secret is shown in the diff, as a template task's would be.
    assert "+Description=shown" in run.stdout
    assert (tmp_path / "etc" / "config.yaml").read_text() == f"token: {secret}\n"
    assert mode_of(tmp_path / "etc" / "config.yaml") == "0o600"


def test_a_diff_shows_changed_contents_but_never_a_secrets(tmp_path: Path) -> None:
    (tmp_path / "unit").write_text("old unit\n")
    (tmp_path / "config.yaml").write_text("token: old-token\n")
    (tmp_path / "gone").write_text("gone\n")
    diffs: list[dict[str, str]] = []
    files.converge(
        params(
            entries=[
                {"path": str(tmp_path / "unit"), "content": "new unit\n"},
                {"path": str(tmp_path / "config.yaml"), "secret_content": "token: new-token\n"},
                {"path": str(tmp_path / "gone"), "state": "absent"},
                {"path": str(tmp_path / "same"), "state": "absent"},
            ]
        ),
        check=True,
        diffs=diffs,
    )
    assert diffs[0] == {
        "before_header": str(tmp_path / "unit"),
        "after_header": str(tmp_path / "unit"),
        "before": "old unit\n",
        "after": "new unit\n",
    }
    assert "token" not in str(diffs[1]) and diffs[1]["after"] == "(secret: content not shown)\n"
    # What a removed file held is not known to be harmless: it is not shown either.
    assert diffs[2]["after_header"] == "(absent)" and diffs[2]["before"] == "(secret: content not shown)\n"
    assert len(diffs) == 3


def test_an_integer_mode_is_the_modes_own_value_and_set_id_bits_survive_the_owner(tmp_path: Path) -> None:
    done = files.converge(
        params(entries=[{"path": str(tmp_path / "a"), "content": "a\n", "mode": 0o644}]), check=False
    )
    assert done["written"] == [str(tmp_path / "a")] and mode_of(tmp_path / "a") == "0o644"
    files.converge(
        params(entries=[{"path": str(tmp_path / "b"), "content": "b\n", "mode": "2755"}]), check=False
    )
    assert mode_of(tmp_path / "b") == "0o2755"
    again = files.converge(
        params(entries=[{"path": str(tmp_path / "b"), "content": "b\n", "mode": "2755"}]), check=False
    )
    assert not any(again.values())


def test_a_directory_reached_through_a_link_is_judged_by_the_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "real").chmod(0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    done = files.converge(params([{"path": str(tmp_path / "link"), "mode": "0700"}]), check=False)
    assert not any(done.values())


def test_a_file_whose_directory_is_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{tmp_path}/none/a: its directory does not exist"):
        files.converge(params(entries=[{"path": str(tmp_path / "none" / "a"), "content": "a"}]), check=False)


def test_a_file_unless_another_exists_is_written_where_it_is_missing_and_removed_where_it_appears(
    tmp_path: Path,
) -> None:
    ours, theirs = tmp_path / "nvidia-runtimeclass.yaml", tmp_path / "runtimes.yaml"
    wanted = params(entries=[{"path": str(ours), "content": "ours\n", "unless_exists": str(theirs)}])
    assert files.converge(wanted, check=False)["written"] == [str(ours)]
    assert ours.read_text() == "ours\n"
    theirs.write_text("k3s's\n")
    assert files.converge(wanted, check=True)["removed"] == [str(ours)] and ours.exists()
    assert files.converge(wanted, check=False)["removed"] == [str(ours)]
    assert not ours.exists() and theirs.read_text() == "k3s's\n"
    assert files.converge(wanted, check=False) == {"written": [], "updated": [], "created": [], "removed": []}
