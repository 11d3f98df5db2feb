from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recorded_events() -> Any:
    def load(name: str) -> list[dict[str, Any]]:
        path = FIXTURES / "runner-events" / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    return load
