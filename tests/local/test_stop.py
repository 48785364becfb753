"""Stopping one invocation by its ClientContext marker (LocalTarget.stop_invocation)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.plugin import LocalTarget

pytestmark = pytest.mark.timeout(60)

SLEEPER = """
import os, time

def handler(event, context):
    with open(event["path"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(event.get("sleep", 0))
    return "finished"
"""


def context_for(marker: str) -> str:
    return base64.b64encode(json.dumps({"custom": {"lambdarun_attempt": marker}}).encode()).decode()


def wait_for_lines(path: Path, n: int = 1, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.01)
    raise AssertionError(f"{path} did not get {n} line(s) within {timeout} s")


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def test_stopping_a_running_sync_invocation_kills_its_environment(
    lam: Any, make_function: Any, target: LocalTarget, tmp_path: Path
) -> None:
    name = make_function(SLEEPER, timeout=30)
    path = tmp_path / "pids"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(lam.invoke, FunctionName=name, ClientContext=context_for("attempt-1"),
                           Payload=json.dumps({"path": str(path), "sleep": 25}))
        pid = int(wait_for_lines(path)[0])
        assert not target.stop_invocation(name, "another-attempt")  # nothing matches
        assert target.stop_invocation(name, "attempt-1")
        resp = call.result(timeout=10)
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    error = json.loads(resp["Payload"].read())
    request_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert error == {
        "errorType": "Runtime.Cancelled",
        "errorMessage": f"RequestId: {request_id} Error: Invocation stopped (lambdarun_attempt "
                        "attempt-1); its execution environment was killed",
        "requestId": request_id,
        "stackTrace": [],
    }
    assert wait_gone(pid)
    assert not target.stop_invocation(name, "attempt-1")  # already stopped
    # the function works on: a fresh environment
    again = lam.invoke(FunctionName=name, Payload=json.dumps({"path": str(path)}))
    assert json.loads(again["Payload"].read()) == "finished"
    assert int(path.read_text().splitlines()[-1]) != pid


def test_stopping_events_drops_the_queued_one_and_never_retries_the_running_one(
    lam: Any, make_function: Any, target: LocalTarget, tmp_path: Path, events_decided: Any
) -> None:
    name = make_function(SLEEPER, timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    running, queued = tmp_path / "running", tmp_path / "queued"
    lam.invoke(FunctionName=name, InvocationType="Event", ClientContext=context_for("run"),
               Payload=json.dumps({"path": str(running), "sleep": 25}))
    pid = int(wait_for_lines(running)[0])
    lam.invoke(FunctionName=name, InvocationType="Event", ClientContext=context_for("wait"),
               Payload=json.dumps({"path": str(queued)}))
    assert target.stop_invocation(name, "wait")  # dropped from the queue
    assert target.stop_invocation(name, "run")  # killed
    assert wait_gone(pid)
    # the slot is free again (a synchronous call would get 429 otherwise), the stopped event
    # was not retried (retry delay 0.1 s) and the dropped one never ran
    done = tmp_path / "done"
    deadline = time.monotonic() + 10
    while True:
        try:
            lam.invoke(FunctionName=name, Payload=json.dumps({"path": str(done)}))
            break
        except lam.exceptions.TooManyRequestsException:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # both Events decided (the Event queue drained, no record running or queued): a retry of
    # the stopped one or a run of the dropped one would have to be queued, retrying or running
    records = events_decided(name)
    events = [r for r in records if r["type"] == "Event"]
    assert [(r["status"], r["error_type"]) for r in events] == [("failed", "Runtime.Cancelled")] * 2
    assert running.read_text().splitlines() == [str(pid)]
    assert not queued.exists()


def test_stop_endpoint_shape_and_errors(lam: Any, make_function: Any, local_stack: Any) -> None:
    name = make_function(SLEEPER)
    base = local_stack.endpoints.lambda_

    def post(path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        req = local_stack.signed_request(base + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert post(f"/_lambdarun/functions/{name}/stop", b'{"marker": "none"}') == (
        200, {"stopped": [], "dropped": []})
    status, doc = post(f"/_lambdarun/functions/{name}/stop", b"{}")
    assert status == 400 and "marker" in doc["Message"]
    status, doc = post("/_lambdarun/functions/no-such-function/stop", b'{"marker": "x"}')
    assert status == 404 and "Function not found" in doc["Message"]


def test_stop_invocation_of_a_missing_function_is_false(target: LocalTarget) -> None:
    assert target.stop_invocation("no-such-function", "x") is False


def test_a_target_attached_to_a_stack_it_did_not_start_stops_too(
    lam: Any, make_function: Any, target: LocalTarget, local_stack: Any, tmp_path: Path
) -> None:
    from lambdarun.local import LocalStack

    attached = LocalTarget(target.settings, stack=LocalStack.attached(local_stack.endpoints,
                                                                    credentials=local_stack.credentials))
    assert not attached.stack.owned
    name = make_function(SLEEPER, timeout=30)
    path = tmp_path / "pids"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(lam.invoke, FunctionName=name, ClientContext=context_for("attached"),
                           Payload=json.dumps({"path": str(path), "sleep": 25}))
        pid = int(wait_for_lines(path)[0])
        assert attached.stop_invocation(name, "attached")
        resp = call.result(timeout=10)
    assert json.loads(resp["Payload"].read())["errorType"] == "Runtime.Cancelled"
    assert wait_gone(pid)
    attached.close()
