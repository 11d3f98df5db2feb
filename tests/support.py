"""What several test modules share: loading a script that ships outside the package (the image's
agent, the capacity publisher) as a module, and waiting for something that happens in the
background (a shell's agent acting on its Secret)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def eventually(check: Callable[[], bool], timeout: float = 30, every: float = 0.25) -> bool:
    """Whether `check` came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()
