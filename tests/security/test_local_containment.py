"""Containment and private state: an environment's whole process tree ends with it (setsid
children and daemons included), state files are 0600 and state folders 0700, and a plain
boto3 client set up from `lambdarun local up`'s export lines works (and nothing else does)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local import LocalStack
from lambdarun.local.testing import create_function, shared_stack  # noqa: F401 - a fixture
from lambdarun.local.stack_info import pid_running as alive

pytestmark = pytest.mark.timeout(120)

SPAWNER = """
import os, subprocess, sys, time

def handler(event, context):
    # a child in a session of its own, and a double-forked daemon (re-parented away)
    child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            time.sleep(600)
        os._exit(0)
    daemon = int(os.read(r, 32))
    if event.get("hang"):
        time.sleep(600)
    return {"runtime": os.getpid(), "pids": [child.pid, daemon]}
"""


def in_own_session(pid: int, deadline: float = 20.0) -> bool:
    """True once ``pid`` leads a session of its own (it called setsid())."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        if int(fields[3]) == pid:  # field 6 of stat: the session id
            return True
        time.sleep(0.02)
    return False


def wait_gone(pids: list[int], deadline: float = 20.0) -> list[int]:
    """The pids still alive after ``deadline`` seconds (polling; [] when all are gone)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def _spawned(local_stack: LocalStack, name: str, **kwargs: Any) -> dict[str, Any]:
    lam = local_stack.client("lambda")
    create_function(lam, name, SPAWNER, timeout=kwargs.pop("timeout", 30))
    out = json.loads(lam.invoke(FunctionName=name, Payload=json.dumps(kwargs))["Payload"].read())
    assert in_own_session(out["pids"][0])  # the child really left the environment's session
    assert all(alive(p) for p in out["pids"])  # they outlive the invocation, as on Lambda
    return out


def test_setsid_children_end_with_a_deleted_function(local_stack: LocalStack) -> None:
    out = _spawned(local_stack, "contain-delete")
    local_stack.client("lambda").delete_function(FunctionName="contain-delete")
    assert wait_gone(out["pids"] + [out["runtime"]]) == []


def test_setsid_children_end_when_the_environment_times_out(local_stack: LocalStack) -> None:
    lam = local_stack.client("lambda")
    create_function(lam, "contain-timeout", SPAWNER.replace('if event.get("hang"):', 'if True:').replace(
        "    daemon = int(os.read(r, 32))", "    daemon = int(os.read(r, 32))\n"
        "    open(event['path'], 'w').write(json.dumps([os.getpid(), child.pid, daemon]))").replace(
        "import os,", "import json, os,"), timeout=2)
    path = Path(f"/tmp/contain-timeout-{os.getpid()}.json")
    try:
        resp = lam.invoke(FunctionName="contain-timeout", Payload=json.dumps({"path": str(path)}))
        assert json.loads(resp["Payload"].read())["errorType"] == "Sandbox.Timedout"
        pids = json.loads(path.read_text())
        assert wait_gone(pids) == []
    finally:
        path.unlink(missing_ok=True)
        lam.delete_function(FunctionName="contain-timeout")


def test_setsid_children_end_when_the_stack_stops(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "state", reuse=False, stop_at_exit=False).start()
    try:
        out = _spawned(stack, "contain-stop")
    finally:
        stack.stop()
    assert wait_gone(out["pids"] + [out["runtime"]]) == []


# -- file modes -----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _check_tree(root: Path) -> int:
    """Assert every folder under ``root`` is 0700 and every file 0600; return how many were checked.

    An environment removes its own files (its ``.mem`` peak file) when it stops, which can
    happen while this walks: an entry gone between the listing and its ``lstat`` is skipped,
    since a file that no longer exists cannot leak.
    """
    checked = 0
    for path in [root, *root.rglob("*")]:
        if "runtime" in path.relative_to(root).parts[:1]:
            continue  # the runtime dir holds symlinks to the interpreter's packages
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o700, path
        elif "functions" not in path.relative_to(root).parts[:1]:
            assert stat.S_IMODE(st.st_mode) == 0o600, path
        checked += 1
    return checked


def test_state_files_and_folders_are_private(local_stack: LocalStack, tmp_path: Path) -> None:
    lam = local_stack.client("lambda", retries={"total_max_attempts": 1})
    create_function(lam, "private-logs", "def handler(e, c):\n    print('secret output')\n    raise ValueError('secret')\n")
    try:
        lam.invoke(FunctionName="private-logs")
        lam.invoke(FunctionName="private-logs", InvocationType="Event")  # fails -> async-failures.jsonl
        failures = local_stack.run_dir / "logs" / "private-logs" / "async-failures.jsonl"
        end = time.monotonic() + 30
        while not failures.exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert failures.exists()
        # while the environment is warm, its memory-peak file exists and is private too
        logs = local_stack.run_dir / "logs" / "private-logs"
        assert [_mode(p) for p in logs.glob("*.mem")] and all(_mode(p) == 0o600 for p in logs.glob("*.mem"))
    finally:
        lam.delete_function(FunctionName="private-logs")
    state = local_stack.state_dir
    assert _mode(state) == 0o700
    assert _mode(state / "stack.json") == 0o600
    assert _mode(local_stack.run_dir / "credentials.json") == 0o600
    assert list((local_stack.run_dir / "logs").rglob("*.log"))
    assert _check_tree(local_stack.run_dir) >= 5
    # a zip's extracted code: folders 0700, files 0600
    create_function(lam, "private-code", {"app.py": "def handler(e, c):\n    return 1\n", "pkg/mod.py": "x = 1\n"})
    try:
        code = next((local_stack.run_dir / "functions" / "private-code").glob("code-*"))
        for path in [code, *code.rglob("*")]:
            assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    finally:
        lam.delete_function(FunctionName="private-code")


def test_journal_and_durable_store_are_private(tmp_path: Path) -> None:
    from lambdarun.dashboard.journal import JournalWriter
    from lambdarun_durable.stores import SQLiteCheckpointStore

    writer = JournalWriter(tmp_path / "journal-dir" / "journal.db")
    try:
        assert _mode(tmp_path / "journal-dir") == 0o700
        assert _mode(tmp_path / "journal-dir" / "journal.db") == 0o600
    finally:
        writer.close()
    store = SQLiteCheckpointStore(str(tmp_path / "durable-dir" / "durable.db"))
    store.create("exec-1", {"k": "v"})
    assert _mode(tmp_path / "durable-dir") == 0o700
    for f in (tmp_path / "durable-dir").iterdir():  # durable.db and its -wal/-shm
        assert _mode(f) == 0o600, f
    store.close()


# -- `lambdarun local up` --------------------------------------------------------------------


CLIENT = """
import json, boto3
lam, s3 = boto3.client("lambda"), boto3.client("s3")
s3.create_bucket(Bucket="from-exports")
print(json.dumps({"functions": lam.list_functions()["Functions"],
                  "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]]}))
"""


def test_a_plain_boto3_client_from_the_export_lines_works(shared_stack: Any) -> None:
    proc, exports, state = shared_stack
    assert exports["AWS_ACCESS_KEY_ID"] and exports["AWS_SECRET_ACCESS_KEY"] != "testing"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(exports, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    done = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"functions": [], "buckets": ["from-exports"]}
    # without the stack's credentials nothing works
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    done = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "UnrecognizedClientException" in output or "InvalidAccessKeyId" in output
    # `local status` prints the same credentials; the files holding them are private
    status = subprocess.run([sys.executable, "-m", "lambdarun.local", "status", "--state-dir", str(state)],
                            capture_output=True, text=True, timeout=30)
    assert f"export AWS_SECRET_ACCESS_KEY={exports['AWS_SECRET_ACCESS_KEY']}" in status.stdout
    assert _mode(state) == 0o700 and _mode(state / "shared") == 0o700
    assert _mode(state / "stack.json") == 0o600 and _mode(state / "shared" / "credentials.json") == 0o600


def test_setsid_children_end_when_the_stack_process_is_killed(shared_stack: Any) -> None:
    import boto3

    proc, exports, state = shared_stack
    session = boto3.session.Session(aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    lam = session.client("lambda", endpoint_url=exports["AWS_ENDPOINT_URL_LAMBDA"])
    create_function(lam, "contain-kill", SPAWNER)
    out = json.loads(lam.invoke(FunctionName="contain-kill", Payload=b"{}")["Payload"].read())
    assert all(alive(p) for p in out["pids"])
    proc.kill()  # no clean-up by the service: each environment's supervisor ends its tree
    proc.wait(timeout=10)
    assert wait_gone(out["pids"] + [out["runtime"]]) == []
