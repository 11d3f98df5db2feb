"""RunTracker fed with event streams recorded from real `toolkit cluster up` runs."""

from __future__ import annotations

import pytest

from toolkit.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_TASK_FAILED, EXIT_UNREACHABLE
from toolkit.runner import HostCounts, RunTracker


def replay(events: list[dict[str, object]]) -> RunTracker:
    tracker = RunTracker()
    for event in events:
        assert tracker.handle(event) is True
    return tracker


def test_first_converge_reports_changes_on_every_host(recorded_events) -> None:
    tracker = replay(recorded_events("converge-first"))
    assert tracker.finished
    assert set(tracker.hosts) == {"lab-server-1", "lab-agent-1"}
    for counts in tracker.hosts.values():
        assert counts.changed > 0
        assert counts.failed == counts.unreachable == 0
    assert tracker.exit_code(runner_rc=0) == EXIT_OK


def test_second_converge_recap_has_no_changes(recorded_events) -> None:
    tracker = replay(recorded_events("converge-again"))
    assert all(counts.changed == 0 for counts in tracker.hosts.values())
    assert all(counts.ok > 0 for counts in tracker.hosts.values())
    assert tracker.exit_code(runner_rc=0) == EXIT_OK


def test_recap_numbers_are_ansibles_own_stats(recorded_events) -> None:
    events = recorded_events("converge-first")
    stats = next(e for e in events if e["event"] == "playbook_on_stats")["event_data"]
    tracker = replay(events)
    for host, counts in tracker.hosts.items():
        assert counts.ok == stats["ok"][host]
        assert counts.changed == stats["changed"].get(host, 0)
        assert counts.skipped == stats["skipped"].get(host, 0)


def test_live_counts_before_the_recap_follow_task_events(recorded_events) -> None:
    events = [e for e in recorded_events("converge-first") if e["event"] != "playbook_on_stats"]
    tracker = replay(events)
    assert not tracker.finished
    oks = sum(1 for e in events if e["event"] == "runner_on_ok" and e["event_data"]["host"] == "lab-agent-1")
    assert tracker.hosts["lab-agent-1"].ok == oks


def test_current_play_and_task_follow_the_run(recorded_events) -> None:
    tracker = RunTracker()
    for event in recorded_events("converge-first"):
        tracker.handle(event)
        if event["event"] == "playbook_on_task_start":
            assert tracker.task == event["event_data"]["task"]
    assert tracker.play == "Prepare every cluster host"


def test_stopped_host_is_unreachable_and_named(recorded_events) -> None:
    tracker = replay(recorded_events("host-stopped"))
    assert tracker.unreachable_hosts == ["lab-agent-1"]
    assert tracker.hosts["lab-server-1"].unreachable == 0
    (problem,) = tracker.problems
    assert problem.host == "lab-agent-1"
    assert problem.kind == "unreachable"
    assert "10.213.77.31 port 22" in problem.message
    assert tracker.exit_code(runner_rc=4) == EXIT_UNREACHABLE


def test_variable_rejected_by_argument_spec_is_bad_input(recorded_events) -> None:
    tracker = replay(recorded_events("bad-variable"))
    assert {p.kind for p in tracker.problems} == {"bad-input"}
    assert all("common_swap_disable" in p.message for p in tracker.problems)
    assert tracker.exit_code(runner_rc=2) == EXIT_BAD_INPUT


def test_role_notes_are_collected_once(recorded_events) -> None:
    tracker = replay(recorded_events("converge-first"))
    assert len(tracker.notices) == len(set(tracker.notices))
    assert any("loadable-module support" in note for note in tracker.notices)


def test_a_looped_notes_items_are_each_collected_once() -> None:
    tracker = RunTracker()
    looped = {
        "task_action": "ansible.builtin.debug",
        "host": "h",
        "res": {"results": [{"msg": "NOTE: k3s is the stand-in binary"}, {"msg": "NOTE: no Weka backend"}]},
    }
    for _ in range(2):
        tracker.handle({"event": "runner_on_ok", "event_data": looped})
    assert tracker.notices == ["k3s is the stand-in binary", "no Weka backend"]


def test_ignored_failure_is_not_a_failure() -> None:
    tracker = RunTracker()
    tracker.handle(
        {"event": "runner_on_failed", "event_data": {"host": "h", "ignore_errors": True, "res": {}}}
    )
    assert tracker.hosts["h"] == HostCounts(ignored=1)
    assert tracker.problems == []
    assert tracker.exit_code(runner_rc=0) == EXIT_OK


@pytest.mark.parametrize("runner_rc", [1, 2])
def test_runner_failure_without_events_is_a_failed_run(runner_rc: int) -> None:
    assert RunTracker().exit_code(runner_rc) == EXIT_TASK_FAILED


def test_looped_failure_names_the_failed_item_not_the_loop() -> None:
    tracker = RunTracker()
    result = {
        "msg": "One or more items failed",
        "results": [
            {"failed": False, "msg": "ok"},
            {"failed": True, "msg": "host-b cannot reach the backend\nmore"},
        ],
    }
    tracker.handle({"event": "runner_on_failed", "event_data": {"host": "h", "task": "Reach", "res": result}})
    assert tracker.problems[0].message == "host-b cannot reach the backend"
