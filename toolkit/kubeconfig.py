"""Merging a fetched admin kubeconfig into a user's kubeconfig as a named context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import BadInputError
from toolkit.paths import write_private


def _without(entries: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry.get("name") != name]


def merge(existing: dict[str, Any], fetched: dict[str, Any], context: str) -> dict[str, Any]:
    """`existing` with the fetched cluster, user and context under `context`, made current.

    Entries of the same name are replaced; everything else in `existing` is kept.
    """
    try:
        cluster = fetched["clusters"][0]["cluster"]
        user = fetched["users"][0]["user"]
    except (KeyError, IndexError, TypeError):
        raise BadInputError("the fetched kubeconfig has no cluster or user") from None
    merged = {"apiVersion": "v1", "kind": "Config", "preferences": {}, **existing}
    merged["clusters"] = [
        *_without(existing.get("clusters") or [], context),
        {"name": context, "cluster": cluster},
    ]
    merged["users"] = [*_without(existing.get("users") or [], context), {"name": context, "user": user}]
    merged["contexts"] = [
        *_without(existing.get("contexts") or [], context),
        {"name": context, "context": {"cluster": context, "user": context}},
    ]
    merged["current-context"] = context
    return merged


def write_kubeconfig(path: Path, document: dict[str, Any]) -> None:
    """A kubeconfig holds credentials: readable by its owner only."""
    write_private(path, yaml.safe_dump(document, sort_keys=False))


def merge_into(target: Path, fetched_file: Path, context: str) -> None:
    existing = yaml.safe_load(target.read_text()) if target.exists() else {}
    if not isinstance(existing, dict):
        raise BadInputError(f"{target} is not a kubeconfig")
    write_kubeconfig(target, merge(existing, yaml.safe_load(fetched_file.read_text()), context))
