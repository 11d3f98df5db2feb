"""Re-run benchmark: prints, measured in one run (not a timed test), what a no-op `cluster up` costs.

1. The no-op re-run of site.yml (changed=0 everywhere) on 1, 3 and 6 lab hosts, each beside
   `ansible all -m setup` on the same hosts (target at 3 hosts: <= 6x), and the fixed and per-host
   cost (target: <= 2.5 s per host from 3 to 6).
2. The module runs per host on that no-op (target: <= 12 on a server, <= 8 on an agent): tasks
   that ran a module on the host; those on the control node (delegated downloads, chart reads)
   are counted apart.
3. The first converge of the fresh hosts, which the cuts must not slow.
4. `toolkit --help` against a bare typer app with the same rich help (target <= 1.1x), the fastest
   of 20 runs each, taken in turns.

It replaces any running lab with one of each size and removes it at the end.
Run: .venv/bin/python -m bench.rerun
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections import Counter
from pathlib import Path

from bench.foundation import BIN, ENV, PROJECT, print_help_against_bare_typer, wall

# Tasks whose action runs on the control node only, whatever host they are for.
CONTROLLER_ACTIONS = {
    "assert", "debug", "set_fact", "include_tasks", "import_tasks", "include_role", "import_role", "meta",
    "fail", "set_stats", "validate_argument_spec", "add_host", "group_by", "include_vars",
}  # fmt: skip
HOST_COUNTS = (1, 3, 6)
RUNS = 3


def toolkit(*args: str) -> None:
    subprocess.run([str(BIN / "toolkit"), *args], cwd=PROJECT, env=ENV, check=True, capture_output=True)


def fastest(command: list[str]) -> float:
    return min(wall(command, runs=1) for _ in range(RUNS))


def fastest_noop(command: list[str]) -> tuple[float, Counter[str], int, int]:
    """The fastest of RUNS re-runs, the module runs of the last, and the changed results of all."""
    times, changed = [], 0
    for _ in range(RUNS):
        times.append(wall(command, runs=1))
        per_host, on_controller, changed_here = module_runs(latest_run())
        changed += changed_here
    return min(times), per_host, on_controller, changed


def latest_run() -> Path:
    runs = sorted((PROJECT / ".cache" / "runs").glob("*-site"), key=lambda path: path.stat().st_mtime)
    return runs[-1] / "artifacts" / "run" / "job_events"


def module_runs(events: Path) -> tuple[Counter[str], int, int]:
    """Module runs per host, those on the control node, and the changed results, of one run. A loop
    runs its module once per item: its items are counted, not the task."""
    per_host: Counter[str] = Counter()
    on_controller, changed = 0, 0
    looped = set()
    loaded = [json.loads(path.read_text()) for path in events.glob("*.json")]
    for event in loaded:
        if event.get("event") == "runner_item_on_ok":
            looped.add((event["event_data"]["task_uuid"], event["event_data"]["host"]))
    for event in loaded:
        kind = event.get("event")
        if kind not in ("runner_on_ok", "runner_item_on_ok"):
            continue
        key = (event["event_data"]["task_uuid"], event["event_data"]["host"])
        if kind == "runner_on_ok" and key in looped:
            continue
        data = event["event_data"]
        result = data.get("res") or {}
        changed += bool(result.get("changed"))
        if data["resolved_action"].rsplit(".", 1)[-1] in CONTROLLER_ACTIONS:
            continue
        if (result.get("_ansible_delegated_vars") or {}).get("ansible_connection") == "local":
            on_controller += 1
        else:
            per_host[data["host"]] += 1
    return per_host, on_controller, changed


def main() -> None:
    print_help_against_bare_typer()

    up = [str(BIN / "toolkit"), "cluster", "up", "-i", "inventory/lab"]
    setup = [str(BIN / "ansible"), "all", "-i", "inventory/lab", "-m", "setup"]
    noop: dict[int, float] = {}
    try:
        for hosts in HOST_COUNTS:
            subprocess.run(
                [str(BIN / "toolkit"), "lab", "down"], cwd=PROJECT, check=True, capture_output=True
            )
            toolkit("lab", "up", "--hosts", str(hosts))
            converge = wall(up, runs=1)  # the first converge of fresh hosts
            noop[hosts], per_host, on_controller, changed = fastest_noop(up)
            setup_time = fastest(setup)
            print(f"{hosts} host(s): first converge {converge:6.2f}s")
            print(
                f"{hosts} host(s): no-op {noop[hosts]:6.2f}s, ansible -m setup {setup_time:5.2f}s, "
                f"ratio {noop[hosts] / setup_time:5.2f}x (target at 3 hosts <= 6x), "
                f"changed {changed} in {RUNS} runs"
            )
            for host, count in sorted(per_host.items()):
                target = "<= 12 on a server" if "server" in host else "<= 8 on an agent"
                print(f"  {host:16} {count:3} module runs  (target {target})")
            print(f"  {'control node':16} {on_controller:3} module runs")
    finally:
        subprocess.run([str(BIN / "toolkit"), "lab", "down"], cwd=PROJECT, check=False, capture_output=True)
    xs, ys = list(noop), list(noop.values())
    slope = statistics.covariance(xs, ys) / statistics.variance(xs)
    fixed = statistics.fmean(ys) - slope * statistics.fmean(xs)
    print(f"fixed cost {fixed:5.2f}s, per host {slope:5.2f}s (least squares over {', '.join(map(str, xs))})")
    print(f"per host from 3 to 6 hosts {(noop[6] - noop[3]) / 3:5.2f}s  (target <= 2.5s)")


if __name__ == "__main__":
    main()
