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

small_stack = local_stack_fixture(scope="module", max_concurrency=2, idle_timeout=0.3)

PID = """
import os, time
def handler(event, context):
    if event.get("flag"):
        open(event["flag"], "w").close()
    time.sleep(event.get("sleep", 0))
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
    for name in ("busy", "idle", "third"):
        create_function(lam2, name, PID, timeout=10)
    try:
        call(lam2, "idle")  # one idle environment of "idle"
        flags = [tmp_path / "a", tmp_path / "b"]
        threads = [threading.Thread(target=call, args=(lam2, "busy"), kwargs={"sleep": 1.0, "flag": str(f)})
                   for f in flags]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while not all(f.exists() for f in flags) and time.monotonic() < deadline:
            time.sleep(0.01)
        # both slots are busy: a synchronous call to any function is throttled
        with pytest.raises(lam2.exceptions.TooManyRequestsException) as err:
            lam2.invoke(FunctionName="third", Payload=b"{}")
        assert err.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
        for t in threads:
            t.join()
        # once the slots are free again, "third" runs
        assert isinstance(call(lam2, "third"), int)
    finally:
        for name in ("busy", "idle", "third"):
            lam2.delete_function(FunctionName=name)
