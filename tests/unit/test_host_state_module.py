"""The toolkit.cluster.host_state module: what common's converge decides on, read in one run."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
MODULE = PROJECT / "collections" / "ansible_collections" / "toolkit" / "cluster" / "plugins" / "modules"
sys.path[:0] = [str(MODULE)]

import host_state  # noqa: E402


def test_live_sysctls_are_read_from_proc_sys_and_missing_keys_left_out(tmp_path: Path) -> None:
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "ip_forward").write_text("1\n")
    (tmp_path / "net" / "ipv4" / "tcp_rmem").write_text("4096\t131072\t6291456\n")
    found = host_state.live_sysctls(
        ["net.ipv4.ip_forward", "net.ipv4.tcp_rmem", "net.bridge.absent"], root=str(tmp_path)
    )
    assert found == {"net.ipv4.ip_forward": "1", "net.ipv4.tcp_rmem": "4096\t131072\t6291456"}


def test_only_swap_entries_not_commented_out_are_counted(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "UUID=1 / ext4 defaults 0 1\n"
        "/swapfile none swap sw 0 0\n"
        "# /old none swap sw 0 0\n"
        "  /dev/sdb2 none swap sw 0 0\n"
        "# /swapfile none swap sw 0 0  # disabled by toolkit: the kubelet needs swap off\n"
    )
    assert host_state.swap_entries(str(fstab)) == 2
    assert host_state.swap_entries("") == 0 and host_state.swap_entries(str(tmp_path / "none")) == 0


def test_loaded_modules_or_none_where_the_kernel_loads_none(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.write_text("overlay 151552 0 - Live 0x0\nbr_netfilter 32768 0 - Live 0x0\n")
    assert host_state.loaded_modules(str(modules)) == ["overlay", "br_netfilter"]
    assert host_state.loaded_modules(str(tmp_path / "absent")) is None


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="a Debian host's dpkg")
def test_installed_packages_are_dpkgs_and_unknown_ones_are_left_out() -> None:
    found, held = host_state.installed_packages(["dpkg", "toolkit-surely-not-a-package"])
    assert list(found) == ["dpkg"] and found["dpkg"][0].isdigit() and held == []
    assert host_state.installed_packages([]) == ({}, [])


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemd's systemctl")
def test_an_unknown_unit_is_neither_enabled_nor_active() -> None:
    assert host_state.unit_states(["toolkit-surely-not-a-unit"]) == {
        "toolkit-surely-not-a-unit": {"enabled": False, "active": False, "need_daemon_reload": False}
    }


@pytest.mark.parametrize(
    ("entry", "missing"),
    [
        ("chrony", False),
        ("chrony=4.3-2+deb12u1", False),
        ("chrony=4.3-*", False),
        ("chrony:amd64", False),
        ("chrony=4.5-1", True),
        ("absent-package", True),
        ("absent-package=1.0", True),
    ],
)
def test_a_package_is_missing_when_absent_or_at_another_version(entry: str, missing: bool) -> None:
    installed = {"chrony": "4.3-2+deb12u1"}
    assert host_state.missing_packages([entry], installed) == ([entry] if missing else [])


def test_active_swap_is_read_from_proc_swaps(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
    assert host_state.swap_active(str(swaps)) is False
    swaps.write_text(
        swaps.read_text() + "/swapfile                               file\t\t2097148\t\t0\t\t-2\n"
    )
    assert host_state.swap_active(str(swaps)) is True
    assert host_state.swap_active(str(tmp_path / "none")) is False


def test_modules_built_into_the_kernel_count_as_loaded(tmp_path: Path) -> None:
    (tmp_path / "modules").write_text("overlay 151552 0 - Live 0x0\n")
    release = tmp_path / "lib" / os.uname().release
    release.mkdir(parents=True)
    (release / "modules.builtin").write_text("kernel/net/bridge/br_netfilter.ko\nkernel/fs/ext4/ext4.ko\n")
    found = host_state.loaded_modules(str(tmp_path / "modules"), str(tmp_path / "lib"))
    assert found == ["overlay", "br_netfilter", "ext4"]


def test_paths_and_checksums_are_read_and_missing_files_are_null(tmp_path: Path) -> None:
    (tmp_path / "k3s").write_bytes(b"binary")
    (tmp_path / "k3s").chmod(0o755)
    found = host_state.read(
        {
            "packages": [],
            "services": [],
            "sysctls": [],
            "fstab": "",
            "paths": [str(tmp_path / "k3s"), str(tmp_path / "node-token")],
            "checksums": [str(tmp_path / "k3s"), str(tmp_path / "absent")],
            "secrets": [],
        }
    )
    assert found["paths"] == {str(tmp_path / "k3s"): True, str(tmp_path / "node-token"): False}
    assert found["checksums"] == {
        str(tmp_path / "k3s"): {
            "sha256": hashlib.sha256(b"binary").hexdigest(),
            "mode": "0755",
            "uid": os.getuid(),
            "gid": os.getgid(),
        },
        str(tmp_path / "absent"): None,
    }


def test_secrets_are_read_stripped_and_missing_ones_are_null(tmp_path: Path) -> None:
    (tmp_path / "node-token").write_text("K10abc::server:def\n")
    found = host_state.read(
        {
            "packages": [],
            "services": [],
            "sysctls": [],
            "fstab": "",
            "paths": [],
            "checksums": [],
            "secrets": [str(tmp_path / "node-token"), str(tmp_path / "not-yet")],
        }
    )
    assert found["secrets"] == {
        str(tmp_path / "node-token"): "K10abc::server:def",
        str(tmp_path / "not-yet"): None,
    }
