"""Environment lifecycle on a small stack: idle reaping and the global concurrency limit."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.testing import create_function, local_stack_fixture

pytestmark = pytest.mark.timeout(60)

small_stack = local_stack_fixture(scope="module", max_concurrency=2, idle_timeout=0.3)

PID = """
import os, time
def handler(event, context):
    return os.getpid()
"""


@pytest.fixture(scope="module")
def lam2(small_stack: Any) -> Any:
    return small_stack.client("lambda", retries={"total_max_attempts": 1})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def call(lam: Any, name: str, **event: Any) -> Any:
    return json.loads(lam.invoke(FunctionName=name, Payload=json.dumps(event))["Payload"].read())


def test_idle_environment_is_reaped(lam2: Any) -> None:
    create_function(lam2, "reaped", PID)
    try:
        pid = call(lam2, "reaped")
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
        resp = lam2.invoke(FunctionName="reaped", LogType="Tail")
        assert json.loads(resp["Payload"].read()) != pid
        assert "Init Duration" in base64.b64decode(resp["LogResult"]).decode()  # cold again
    finally:
        lam2.delete_function(FunctionName="reaped")


def test_global_limit_throttles_synchronous_calls(lam2: Any, tmp_path: Path) -> None:
    blocking = """
import os, time
def handler(event, context):
    if "dir" in event:
        open(os.path.join(event["dir"], f"running-{os.getpid()}"), "w").close()
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(event["dir"], "go")) and time.time() < deadline:
            time.sleep(0.01)
    return os.getpid()
"""
    for name in ("busy", "other"):
        create_function(lam2, name, blocking, timeout=30)
    try:
        threads = [threading.Thread(target=call, args=(lam2, "busy"), kwargs={"dir": str(tmp_path)})
                   for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(list(tmp_path.glob("running-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            # both slots of the stack are busy: a synchronous call to any function is throttled
            with pytest.raises(lam2.exceptions.TooManyRequestsException) as err:
                lam2.invoke(FunctionName="other", Payload=b"{}")
        finally:
            (tmp_path / "go").touch()
            for t in threads:
                t.join()
        assert err.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
        assert isinstance(call(lam2, "other"), int)  # slots free again
    finally:
        for name in ("busy", "other"):
            lam2.delete_function(FunctionName=name)
