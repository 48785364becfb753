"""`python -m lambdarun.local up` in one process, boto3 in this one, then `down`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdarun.local import LocalStack, read_stack_info
from lambdarun.local.testing import make_zip, shared_stack  # noqa: F401 - a fixture
from lambdarun.local.stack_info import pid_running as alive

pytestmark = pytest.mark.timeout(60)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lambdarun.local", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(60)
def test_up_serves_other_processes_and_down_leaves_no_process(shared_stack: Any) -> None:
    proc, exports, state = shared_stack
    assert set(exports) >= {"AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"}
    status = cli("status", "--state-dir", str(state))
    assert status.returncode == 0 and str(proc.pid) in status.stdout
    session = boto3.session.Session(aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
                                    region_name="us-east-1")
    lam = session.client("lambda", endpoint_url=exports["AWS_ENDPOINT_URL_LAMBDA"])
    s3 = session.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL_S3"])
    s3.create_bucket(Bucket="shared-bucket")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["shared-bucket"]
    lam.create_function(
        FunctionName="shared", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler", Timeout=10,
        Code={"ZipFile": make_zip({"app.py": """
            import os, subprocess, time
            def handler(event, context):
                child = subprocess.Popen(["sleep", "60"])  # a grandchild must not survive either
                time.sleep(0.3)
                return [os.getpid(), child.pid]
        """})},
    )
    pids: list[int] = []
    threads = [threading.Thread(target=lambda: pids.extend(json.loads(lam.invoke(FunctionName="shared")["Payload"].read())))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pids) == 4 and all(alive(p) for p in pids)
    logs = cli("logs", "shared", "--state-dir", str(state))
    assert logs.returncode == 0 and logs.stdout.count("REPORT RequestId") == 2

    down = cli("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert proc.wait(timeout=10) == 0
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)]
    assert not (state / "stack.json").exists()
    assert cli("status", "--state-dir", str(state)).returncode == 1


@pytest.mark.timeout(60)
def test_embedded_stack_attaches_to_a_running_shared_one(shared_stack: Any) -> None:
    proc, exports, state = shared_stack
    stack = LocalStack(state, reuse=True).start()
    try:
        assert not stack.owned
        assert stack.pid == proc.pid
        assert stack.endpoints.lambda_ == exports["AWS_ENDPOINT_URL_LAMBDA"]
        info = read_stack_info(state)
        assert info is not None and info.pid == proc.pid
    finally:
        stack.stop()
    assert proc.poll() is None  # detaching does not stop the shared stack
    # a second `up` on the same state dir refuses to start
    second = cli("up", "--state-dir", str(state))
    assert second.returncode != 0 and "already up" in second.stderr
    assert cli("down", "--state-dir", str(state)).returncode == 0
    assert proc.wait(timeout=10) == 0


def test_stale_state_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(json.dumps(
        {"pid": 2 ** 22 + 7, "lambda": "http://127.0.0.1:9", "moto": "http://127.0.0.1:9"}))
    assert read_stack_info(tmp_path) is None
    with LocalStack(tmp_path, reuse=True, stop_at_exit=False) as stack:
        assert stack.owned


@pytest.mark.timeout(60)
def test_workers_die_with_a_killed_service(shared_stack: Any) -> None:
    proc, exports, state = shared_stack
    session = boto3.session.Session(aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
                                    region_name="us-east-1")
    lam = session.client("lambda", endpoint_url=exports["AWS_ENDPOINT_URL_LAMBDA"])
    lam.create_function(FunctionName="orphan-check", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r", Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": "import os\ndef handler(e, c):\n    return os.getpid()\n"})})
    worker = json.loads(lam.invoke(FunctionName="orphan-check")["Payload"].read())
    assert alive(worker)
    proc.kill()  # no chance to clean up: the workers notice their parent is gone
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)
    assert read_stack_info(state) is None  # the stale stack.json is recognised as such


def test_busy_port_is_a_clear_error(local_stack: Any, tmp_path: Path) -> None:
    from lambdarun.errors import TargetError

    busy = int(local_stack.endpoints.lambda_.rsplit(":", 1)[1])
    with pytest.raises(TargetError, match="pick another port"):
        LocalStack(tmp_path, port=busy, reuse=False, stop_at_exit=False).start()
    # nothing was left running by the failed start
    assert not LocalStack(tmp_path, reuse=False, stop_at_exit=False).running


def test_reset_aws_forgets_moto_state(tmp_path: Path) -> None:
    # moto's state is per process: reset it in a subprocess, not under the other tests' feet
    script = f"""
from lambdarun.local import LocalStack
with LocalStack({str(tmp_path)!r}, reuse=False, stop_at_exit=False) as stack:
    s3 = stack.client("s3")
    s3.create_bucket(Bucket="to-be-forgotten")
    stack.reset_aws()
    print([b["Name"] for b in s3.list_buckets()["Buckets"]])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
