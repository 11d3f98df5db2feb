"""`toolkit shell` and `toolkit user` as a user types them, against the STAND-IN API server:
bad input is one line on stderr, exit code 3, and nothing created."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import PROJECT, toolkit
from tests.standins.kube_apiserver import FakeApiServer


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    return tmp_path / "id"


@pytest.fixture
def github(github_server: Any) -> str:
    """'nokeys' publishes no keys; anyone else does not exist."""
    github_server.published["nokeys"] = ""
    return str(github_server.url)


@pytest.fixture
def alice(fake_cluster: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path) -> Path:
    target = tmp_path / "alice.kubeconfig"
    result = toolkit(
        "user", "add", "alice", "--max-gpus", "2", "-o", str(target), "--kubeconfig", str(admin_kubeconfig)
    )
    assert result.returncode == 0, result.stderr
    return target


def objects(server: FakeApiServer) -> set[tuple[str, str, str]]:
    return {key for key in server.objects if key[0] != "events"}


CASES = [
    (["create", "Bad_Name"], "shell name 'Bad_Name' is invalid"),
    (["create", "a" * 41], "is invalid: use 1-40 lowercase letters"),
    (["create", "train", "--ssh-key", "{key}"], "is a PRIVATE key: pass the public key"),
    (["create", "train", "--ssh-key", "{kubeconfig}"], "not an OpenSSH public key"),
    (["create", "train"], "no SSH key given: pass --ssh-key FILE or --github USER"),
    (
        ["create", "train", "--github", "nokeys", "--github-url", "{github}"],
        "GitHub user 'nokeys' has no SSH keys",
    ),
    (
        ["create", "train", "--github", "ghost", "--github-url", "{github}"],
        "GitHub user 'ghost' does not exist",
    ),
    (["create", "train", "--pub", "--gpus", "0"], "--gpus 0: this cluster's shells need a GPU"),
    (["create", "train", "--pub", "--gpus", "9"], "--gpus 9 is more than any node has"),
    (["create", "train", "--pub", "--gpus", "3"], "--gpus 3 is more than alice's quota allows: 2 GPUs"),
    (["create", "train", "--pub", "--hours", "0"], "--hours/--for must be between 5 minutes and 168 hours"),
    (["create", "train", "--pub", "--hours", "500"], "--hours/--for must be between 5 minutes and 168 hours"),
    (
        ["create", "train", "--pub", "--for", "4m"],
        "--hours/--for must be between 5 minutes and 168 hours (this cluster's maximum), not 4m",
    ),
    (["create", "train", "--pub", "--for", "2x"], "--for '2x' is not a duration (examples: 30m, 2h30m, 1d)"),
    (["create", "train", "--pub", "--hours", "1", "--for", "1h"], "give --hours or --for, not both"),
    (["extend", "ghost"], "how much longer? give --hours H or --for DURATION"),
    (["create", "train", "--pub", "--storage-class", "nope"], "StorageClass 'nope' does not exist"),
    (["create", "train", "--pub", "--node-selector", "gpu"], "--node-selector 'gpu' is not KEY=VALUE"),
    (["delete", "ghost", "--yes"], "alice has no shell named 'ghost'"),
    (["extend", "ghost", "--hours", "2"], "alice has no shell named 'ghost'"),
    # The argument parser's own refusals follow the same scheme: one line, exit 3.
    (["create", "train", "--pub", "--gpus", "abc"], "toolkit shell create: Invalid value for '--gpus'"),
    (["create", "train", "--pub", "--expose", "bogus"], "Invalid value for '--expose'"),
    (["create", "train", "--pub", "--frobnicate"], "No such option: --frobnicate"),
    (["extend", "ghost", "--hours", "1.5h"], "--hours '1.5h' is not a number of hours (examples: 8, 1.5)"),
    (["extend", "train", "--hours", "1" + "0" * 30], "--hours/--for must be between 5 minutes and 168 hours"),
    (["create", "train", "--pub", "--shm", "900Ti"], "--shm 900Ti is more than the shell's memory"),
    (["create", "train", "--pub", "--cpu", "1000000000"], "--cpu 1000000000 / --memory 256Gi is more than"),
    (["frobnicate"], "toolkit shell: No such command 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_bad_shell_input_is_one_line_exit_3_and_creates_nothing(
    args: list[str],
    message: str,
    alice: Path,
    keys: Path,
    github: str,
    fake_cluster: FakeApiServer,
    tmp_path: Path,
) -> None:
    values = {"key": str(keys), "kubeconfig": str(alice), "github": github}
    argv = [a.format(**values) for a in args]
    if "--pub" in argv:
        argv[argv.index("--pub") : argv.index("--pub") + 1] = ["--ssh-key", f"{keys}.pub"]
    before = objects(fake_cluster)
    result = toolkit(
        "shell", *argv, "--kubeconfig", str(alice), env={"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert objects(fake_cluster) == before
    assert not (tmp_path / "cfg" / "ssh_config").exists()


def test_duplicate_shell_is_refused(
    alice: Path, keys: Path, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}
    args = ["shell", "create", "train", "--ssh-key", f"{keys}.pub", "--kubeconfig", str(alice)]
    assert toolkit(*args, env=env).returncode == 0
    again = toolkit(*args, env=env)
    assert again.returncode == 3 and "alice already has a shell named 'train'" in again.stderr


def test_no_kubeconfig_and_unreachable_api_server(
    keys: Path, tmp_path: Path, fake_cluster: FakeApiServer
) -> None:
    missing = toolkit("shell", "list", "--kubeconfig", str(tmp_path / "none"))
    assert missing.returncode == 3 and "no kubeconfig at" in missing.stderr
    config = fake_cluster.kubeconfig(tmp_path / "gone.kubeconfig")
    fake_cluster.stop()
    gone = toolkit("shell", "list", "--user", "alice", "--kubeconfig", str(config))
    assert gone.returncode == 2 and gone.stderr.startswith(
        "error: cannot reach the Kubernetes API at https://127.0.0.1"
    )
    assert gone.stderr.count("\n") == 1


def test_bad_user_input(admin_kubeconfig: Path, fake_cluster: FakeApiServer, tmp_path: Path) -> None:
    before = objects(fake_cluster)
    admin = ["--kubeconfig", str(admin_kubeconfig)]
    output = ["-o", str(tmp_path / "k")]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    admin_text = admin_kubeconfig.read_text()
    for args, message in (
        (["add", "Alice", *output], "user name 'Alice' is invalid"),
        (["add", "bob", "--max-gpus", "99", *output], "--max-gpus 99 is more than the cluster's 16 GPUs"),
        (["remove", "nobody", "--yes"], "there is no user 'nobody'"),
        (["add", "bob", "-o", str(admin_kubeconfig)], f"--output {admin_kubeconfig} exists: pass --force"),
        (["add", "bob", "-o", str(a_file / "k")], f"cannot write --output {a_file}/k: Not a directory"),
        (["add", "bob", "-o", "/proc/bob.kubeconfig"], "cannot write --output /proc/bob.kubeconfig"),
        (["add", "bob", "-o", str(tmp_path)], f"--output {tmp_path} is a directory"),
    ):
        result = toolkit("user", *args, *admin)
        assert result.returncode == 3 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert objects(fake_cluster) == before and not (tmp_path / "k").exists()
    assert admin_kubeconfig.read_text() == admin_text and a_file.read_text() == "not a directory\n"


def test_the_flow_through_the_cli(
    alice: Path, keys: Path, admin_kubeconfig: Path, tmp_path: Path, fake_cluster: FakeApiServer
) -> None:
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}
    # What shells_platform's CronJob publishes for users' `shell avail` (test_capacity_publisher.py runs it).
    nodes = {"gpu-1": {"gpus": 8, "held": 1}, "gpu-2": {"gpus": 8, "held": 0}}
    fake_cluster.seed("ConfigMap", {
        "metadata": {"name": "capacity", "namespace": "toolkit-system"},
        "data": {"nodes": json.dumps(nodes), "publishedAt": "2026-12-02T10:00:00Z"},
    })  # fmt: skip
    user = ["--kubeconfig", str(alice)]
    steps = [
        (
            ["shell", "create", "train", "--ssh-key", f"{keys}.pub", "--hours", "1.5", *user],
            "shell train is ready",
        ),
        (["shell", "list", *user], "in 1h 30m"),  # a fresh shell's time left is not rounded down
        (
            ["shell", "show", "train", *user],
            '"vscode": "vscode://vscode-remote/ssh-remote+toolkit-alice-train/home/alice"',
        ),
        (["shell", "show", "train", *user], f'"ssh": "ssh -F {tmp_path}/cfg/ssh_config toolkit-alice-train"'),
        (["shell", "pause", "train", *user], "shell train is paused"),
        (["shell", "list", *user], "paused (by hand)"),
        (["shell", "resume", "train", *user], "shell train is ready"),
        (["shell", "extend", "train", "--for", "2h30m", *user], "now expires"),
        (["shell", "list", *user], "in 4h"),
        (["shell", "avail", *user], "15 GPUs free (as the cluster counted them at 2026-12-02T10:00:00Z)"),
        (
            ["shell", "reap", "-A", "--dry-run", "--kubeconfig", str(admin_kubeconfig)],
            "0 expired shell(s) found",
        ),
        (["shell", "delete", "train", "--yes", *user], "deleted StatefulSet/train"),
        (["user", "list", "--kubeconfig", str(admin_kubeconfig)], "alice"),
    ]
    for args, expected in steps:
        result = toolkit(*args, env=env)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert expected in result.stdout, f"{args}: {result.stdout}"
    assert "toolkit-alice-train" not in (tmp_path / "cfg" / "ssh_config").read_text()


def test_shell_without_keys_uses_the_github_account_the_operator_recorded(
    admin_kubeconfig: Path, github_server: Any, keys: Path, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    github_server.published["bob-gh"] = keys.with_suffix(".pub").read_text()
    bob = tmp_path / "bob.kubeconfig"
    added = toolkit("user", "add", "bob", "--github", "bob-gh", "--github-url", github_server.url,
                    "-o", str(bob), "--kubeconfig", str(admin_kubeconfig))  # fmt: skip
    assert added.returncode == 0, added.stderr
    created = toolkit("shell", "create", "train", "--github-url", github_server.url, "--kubeconfig", str(bob),
                      env={"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")})  # fmt: skip
    assert created.returncode == 0, created.stderr
    secret = fake_cluster.get("Secret", "train-ssh", "user-bob")
    assert secret is not None
    key_data = keys.with_suffix(".pub").read_text().split()[1]
    assert key_data in base64.b64decode(secret["data"]["authorized_keys"]).decode()


def test_ctrl_c_while_a_shell_starts_removes_it_says_what_and_exits_130(
    alice: Path, keys: Path, fake_cluster: FakeApiServer, tmp_path: Path
) -> None:
    before = objects(fake_cluster)
    fake_cluster.behaviour.pod_start_delay = 30
    command = [sys.executable, "-m", "toolkit", "shell", "create", "train", "--ssh-key", f"{keys}.pub"]
    env = {**os.environ, "TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}
    started = subprocess.Popen(
        [*command, "--kubeconfig", str(alice)], cwd=PROJECT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert started.stdout is not None
    for line in started.stdout:  # the phases, one line each without a terminal
        if "pulling image" in line:
            break
    started.send_signal(signal.SIGINT)
    _, stderr = started.communicate(timeout=60)
    assert started.returncode == 130, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: interrupted; removed StatefulSet/train"), (
        stderr
    )
    deadline = time.monotonic() + 5
    while objects(fake_cluster) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert objects(fake_cluster) == before


def test_end_of_input_at_a_question_changes_nothing_and_says_so(
    alice: Path, admin_kubeconfig: Path, fake_cluster: FakeApiServer
) -> None:
    before = objects(fake_cluster)
    result = toolkit("user", "remove", "alice", "--kubeconfig", str(admin_kubeconfig), stdin="")
    assert result.returncode == 130, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == "error: interrupted; nothing was changed"
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr
    assert objects(fake_cluster) == before


def test_connect_refuses_a_paused_shell_with_no_resume_and_leaves_it_paused(
    alice: Path, keys: Path, tmp_path: Path
) -> None:
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}
    user = ["--kubeconfig", str(alice)]
    assert toolkit("shell", "create", "train", "--ssh-key", f"{keys}.pub", *user, env=env).returncode == 0
    assert toolkit("shell", "pause", "train", *user, env=env).returncode == 0
    refused = toolkit("shell", "connect", "train", "--no-resume", *user, env=env)
    assert refused.returncode == 4 and refused.stderr.count("\n") == 1, refused.stderr
    assert (
        "shell train is paused: toolkit shell resume train, or connect without --no-resume" in refused.stderr
    )
    listed = toolkit("shell", "list", "--output", "json", *user, env=env)
    assert json.loads(listed.stdout)[0]["status"] == "paused"


def test_list_watch_redraws_until_ctrl_c_and_shows_a_shell_made_meanwhile(
    alice: Path, keys: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg"), "COLUMNS": "200"}
    watching = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "shell", "list", "--watch", "--kubeconfig", str(alice)],
        cwd=PROJECT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert watching.stdout is not None
    assert watching.stdout.readline().strip() == "no shells"  # the first table, at once
    created = toolkit(
        "shell", "create", "train", "--ssh-key", f"{keys}.pub", "--kubeconfig", str(alice), env=env
    )
    assert created.returncode == 0, created.stderr
    for line in watching.stdout:  # without a terminal, each redraw is printed after the last
        if line.startswith("│ train"):
            break
    watching.send_signal(signal.SIGINT)
    _, stderr = watching.communicate(timeout=30)
    assert watching.returncode == 0 and stderr == "", stderr
    json_watch = toolkit("shell", "list", "--watch", "--output", "json", "--kubeconfig", str(alice))
    assert json_watch.returncode == 3 and "--watch redraws a table" in json_watch.stderr


def test_a_gpu_type_as_people_say_it_places_the_shell_on_that_product(
    alice: Path, keys: Path, tmp_path: Path, fake_cluster: FakeApiServer
) -> None:
    env = {"TOOLKIT_CONFIG_DIR": str(tmp_path / "cfg")}
    user = ["--kubeconfig", str(alice)]
    created = toolkit(
        "shell", "create", "train", "--ssh-key", f"{keys}.pub", "--gpu-type", "h100", *user, env=env
    )
    assert created.returncode == 0, created.stderr
    statefulset = fake_cluster.get("StatefulSet", "train", "user-alice")
    assert statefulset is not None
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # Two H100 products: either will do, through node affinity, and the H200 is left out.
    fake_cluster.add_gpu_node("gpu-3", labels={"nvidia.com/gpu.product": "NVIDIA-H100-NVL"})
    fake_cluster.add_gpu_node("gpu-4", labels={"nvidia.com/gpu.product": "NVIDIA-H200"})
    either = toolkit(
        "shell", "create", "both", "--ssh-key", f"{keys}.pub", "--gpu-type", "H100", *user, env=env
    )
    assert either.returncode == 0, either.stderr
    placed = fake_cluster.get("StatefulSet", "both", "user-alice")
    assert placed is not None
    affinity = placed["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-NVL"]
    shell_pod = fake_cluster.get("Pod", "both-0", "user-alice")
    assert shell_pod is not None and shell_pod["spec"]["nodeName"] in ("gpu-1", "gpu-2", "gpu-3")
    refused = toolkit(
        "shell", "create", "other", "--ssh-key", f"{keys}.pub", "--gpu-type", "a100", *user, env=env
    )
    assert refused.returncode == 3
    # Alice's two GPUs are both held by now, which is said too, on the same line.
    assert refused.stderr.startswith(
        "error: --gpu-type a100 is none of this cluster's GPUs: "
        "NVIDIA-H100-80GB-HBM3, NVIDIA-H100-NVL, NVIDIA-H200; "
    )
    assert refused.stderr.count("\n") == 1
    assert fake_cluster.get("StatefulSet", "other", "user-alice") is None
