from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from toolkit.errors import BadInputError
from toolkit.kubeconfig import merge, merge_into

FETCHED = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {
            "name": "default",
            "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": "Q0E="},
        }
    ],
    "users": [
        {"name": "default", "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}}
    ],
    "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    "current-context": "default",
}


def test_merge_keeps_other_contexts_and_makes_the_new_one_current() -> None:
    existing = {
        "clusters": [{"name": "other", "cluster": {"server": "https://other:6443"}}],
        "users": [{"name": "other", "user": {"token": "t"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
        "current-context": "other",
    }
    merged = merge(existing, FETCHED, "lab")
    assert [c["name"] for c in merged["contexts"]] == ["other", "lab"]
    assert merged["current-context"] == "lab"
    assert merged["clusters"][1] == {"name": "lab", "cluster": FETCHED["clusters"][0]["cluster"]}
    assert merged["users"][1]["user"]["client-key-data"] == "S0VZ"


def test_merging_twice_replaces_instead_of_duplicating() -> None:
    once = merge({}, FETCHED, "lab")
    twice = merge(once, FETCHED, "lab")
    assert twice == once


def test_merge_rejects_a_kubeconfig_without_cluster() -> None:
    with pytest.raises(BadInputError, match="no cluster or user"):
        merge({}, {"clusters": []}, "lab")


def test_merged_file_is_private(tmp_path: Path) -> None:
    fetched = tmp_path / "admin.yaml"
    fetched.write_text(yaml.safe_dump(FETCHED))
    target = tmp_path / "kube" / "config"
    merge_into(target, fetched, "lab")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert yaml.safe_load(target.read_text())["current-context"] == "lab"


def test_merging_into_a_file_that_is_not_a_kubeconfig_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.write_text("- just\n- a list\n")
    fetched = tmp_path / "admin.yaml"
    fetched.write_text(yaml.safe_dump(FETCHED))
    with pytest.raises(BadInputError, match="is not a kubeconfig"):
        merge_into(target, fetched, "lab")
