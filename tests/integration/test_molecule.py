"""Every role's molecule scenarios: converge, idempotence and verify on the lab image."""

from __future__ import annotations

import os
import re
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


def idempotence_recap(output: str, scenario: str) -> dict[str, int]:
    """Each host's changed count in the recap of molecule's idempotence step (its second converge),
    if that step ran and molecule reported it successful; empty otherwise."""
    step = rf"\[{scenario} > idempotence\]"
    found = re.search(rf"{step} Executing\n(.*?)\n\S+\s+{step} Executed: Successful\n", output, re.DOTALL)
    if found is None:
        return {}
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", found[1], re.MULTILINE)
    return {host: int(changed) for host, changed in recap}


@pytest.mark.molecule
@pytest.mark.parametrize(("role", "scenario"), SCENARIOS, ids=[f"{r}-{s}" for r, s in SCENARIOS])
def test_molecule_scenario_passes(role: str, scenario: str, lab_image: str) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ANSIBLE_FORCE_COLOR": "0",
        # The shared platform's name (.config/molecule/config.yml): one container per scenario.
        "TOOLKIT_MOLECULE_INSTANCE": f"{role}-{scenario}".replace("_", "-"),
    }
    result = subprocess.run(
        ["molecule", "test", "--scenario-name", scenario],
        cwd=PROJECT / "roles" / role,
        env=env,
        # One stream: molecule logs its steps on stderr around ansible's output on stdout.
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    recap = idempotence_recap(result.stdout, scenario)
    assert recap, f"{role}/{scenario}: no idempotence step ran"
    assert all(changed == 0 for changed in recap.values()), f"the second converge changed: {recap}"
    for secret in SENTINEL_SECRETS:
        assert secret not in result.stdout, f"{secret!r} appeared in the output of {role}/{scenario}"
