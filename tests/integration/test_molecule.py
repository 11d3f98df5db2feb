"""Every role's molecule scenarios: converge, idempotence and verify on the lab image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import PROJECT

# Passwords the scenarios set; the roles must never let them reach any output.
SENTINEL_SECRETS = ("sentinel-weka-password-91c2", "not-a-real-password")

SCENARIOS = sorted(
    (path.parents[2].name, path.parent.name) for path in PROJECT.glob("roles/*/molecule/*/molecule.yml")
)


@pytest.mark.molecule
@pytest.mark.parametrize(("role", "scenario"), SCENARIOS, ids=[f"{r}-{s}" for r, s in SCENARIOS])
def test_molecule_scenario_passes(role: str, scenario: str, lab_image: str) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    result = subprocess.run(
        ["molecule", "test", "--scenario-name", scenario],
        cwd=PROJECT / "roles" / role,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "idempotence" in result.stdout + result.stderr
    for secret in SENTINEL_SECRETS:
        assert secret not in result.stdout + result.stderr, (
            f"{secret!r} appeared in the output of {role}/{scenario}"
        )
