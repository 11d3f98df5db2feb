"""What a shell's create says when its pod can't start: the phase, and the cause in one line."""

from __future__ import annotations

from typing import Any

from toolkit.shell_wait import pod_phase

SCHEDULED = {"type": "PodScheduled", "status": "True"}


def pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "train-0"}, "spec": {}, "status": {"conditions": [SCHEDULED], **status}}


def crash_looping(name: str, code: int, message: str) -> dict[str, Any]:
    """A container as the kubelet reports it between restarts after it exited with an error."""
    return {
        "name": name,
        "ready": False,
        "restartCount": 2,
        "state": {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 20s restarting failed container={name}",
            }
        },
        "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": message}},
    }


def test_a_container_that_exits_names_its_code_and_the_last_line_it_logged() -> None:
    last = "shell-entrypoint: the image has no /bin/sh, which a shell's logins need"
    log = f"shell-entrypoint: starting\n{last}\n"
    _, cause = pod_phase(pod(containerStatuses=[crash_looping("shell", 64, log)]))
    assert cause == f"container shell exited with code 64: {last}"


def test_a_failed_init_container_is_the_cause_even_before_the_shells_container_exists() -> None:
    full = "cp: cannot create directory '/toolbox/bin': No space left on device"
    _, cause = pod_phase(pod(initContainerStatuses=[crash_looping("toolbox", 1, full)]))
    assert cause == f"container toolbox exited with code 1: {full}"


def test_an_exit_without_a_message_gives_the_kubelets_reason_and_a_finished_init_container_none() -> None:
    silent = {
        "name": "shell",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }
    assert pod_phase(pod(containerStatuses=[silent]))[1] == "container shell exited with code 137 (OOMKilled)"
    copied = {"name": "toolbox", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    running = {"name": "shell", "state": {"running": {"startedAt": "2026-12-04T10:00:00Z"}}}
    assert pod_phase(pod(initContainerStatuses=[copied], containerStatuses=[running])) == ("starting", None)


def test_an_image_that_cannot_be_pulled_still_says_so() -> None:
    pulling = {
        "name": "shell",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
    }
    assert pod_phase(pod(containerStatuses=[pulling]))[1] == "ImagePullBackOff: Back-off pulling image"


def test_an_exit_a_restart_may_mend_waits_for_the_back_off_and_64_fails_at_once() -> None:
    crashed = {
        "name": "shell",
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "oops"}},
    }
    assert pod_phase(pod(containerStatuses=[crashed])) == ("pulling image", None)
    cannot = {
        "name": "shell",
        "state": {"terminated": {"exitCode": 64, "reason": "Error", "message": "bad image"}},
    }
    assert pod_phase(pod(containerStatuses=[cannot]))[1] == "container shell exited with code 64: bad image"


def test_the_images_log_reaches_the_terminal_as_printable_text_only() -> None:
    log = "shell-entrypoint: \x1b]0;pwned\x07no /bin/sh\x1b[2J\n"
    _, cause = pod_phase(pod(containerStatuses=[crash_looping("shell", 64, log)]))
    assert cause == "container shell exited with code 64: shell-entrypoint: ]0;pwnedno /bin/sh[2J"
