"""The durable-execution API's data and control plane on the local Lambda service, through
boto3 only: checkpoint tokens, state paging, history paging, callbacks (success, failure,
heartbeat, timeout), stop, pause/resume, delete, list filters, named starts, crashed
invocations, and refused requests (unsigned, from a browser, malformed) changing nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from lambdarun.local.testing import create_function, local_stack_fixture
from lambdarun.testing import wait_for

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

DURABLE = {"ExecutionTimeout": 300}

RAW_TOKENS = '''
import json, boto3

def handler(event, context):
    lam = boto3.client("lambda")
    arn, t0 = event["DurableExecutionArn"], event["CheckpointToken"]
    out = {"inline": [op["Id"] for op in event["InitialExecutionState"]["Operations"]]}
    t1 = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=t0,
        Updates=[{"Id": "s1", "Type": "STEP", "Action": "START", "Name": "one"}])["CheckpointToken"]
    try:
        lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=t0,
            Updates=[{"Id": "s2", "Type": "STEP", "Action": "START"}])
        out["stale"] = "accepted"
    except lam.exceptions.InvalidParameterValueException as e:
        out["stale"] = e.response["Error"]["Message"]
    t2 = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=t1, Updates=[])["CheckpointToken"]
    r3 = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=t2,
        Updates=[{"Id": "s1", "Type": "STEP", "Action": "SUCCEED", "Payload": "1"},
                 {"Id": "s3", "Type": "STEP", "Action": "START", "Name": "three"}])
    t3 = r3["CheckpointToken"]
    out["changed"] = sorted(op["Id"] for op in r3["NewExecutionState"]["Operations"])
    out["rotated"] = len({t0, t1, t2, t3})
    pages, marker = [], None
    while True:
        kw = {"Marker": marker} if marker else {}
        page = lam.get_durable_execution_state(DurableExecutionArn=arn, CheckpointToken=t3, MaxItems=1, **kw)
        pages.append([op["Id"] for op in page["Operations"]])
        marker = page.get("NextMarker")
        if not marker:
            break
    out["pages"], out["last_token"] = pages, t3
    return {"Status": "SUCCEEDED", "Result": json.dumps(out)}
'''

LONG_WAIT = '''
from aws_durable_execution_sdk_python import durable_execution
from aws_durable_execution_sdk_python.config import Duration

@durable_execution
def handler(event, context):
    context.wait(Duration.from_seconds(600))
    return "never"
'''

CALLBACK = '''
from aws_durable_execution_sdk_python import durable_execution
from aws_durable_execution_sdk_python.config import CallbackConfig, Duration

@durable_execution
def handler(event, context):
    cb = context.create_callback(name="approval", config=CallbackConfig(
        timeout=Duration.from_seconds(event.get("timeout", 120)),
        heartbeat_timeout=Duration.from_seconds(event.get("heartbeat", 60))))
    return {"approved": cb.result()}
'''

CRASH = '''
import os
from aws_durable_execution_sdk_python import durable_execution

@durable_execution
def handler(event, context):
    def boom(_):
        if not os.path.exists(event["mark"]):
            open(event["mark"], "w").close()
            os._exit(1)  # the worker process dies mid-invocation
        return "survived"
    return context.step(boom, name="boom")
'''

STEPS = '''
from aws_durable_execution_sdk_python import durable_execution

@durable_execution
def handler(event, context):
    return [context.step(lambda _, i=i: i * i, name=f"s{i}") for i in range(4)]
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


def durable_function(lam: Any, source: str, **kw: Any) -> str:
    name = f"dur-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, source, timeout=30, DurableConfig=DURABLE, **kw)
    return name


def start(lam: Any, name: str, payload: Any = None, **kw: Any) -> str:
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", InvocationType="Event",
                     Payload=json.dumps(payload if payload is not None else {}), **kw)
    assert out["StatusCode"] == 202
    return out["DurableExecutionArn"]


def events(lam: Any, arn: str) -> list[dict[str, Any]]:
    return lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True)["Events"]


def status_is(lam: Any, arn: str, *statuses: str) -> Any:
    return wait_for(lambda: (d := lam.get_durable_execution(DurableExecutionArn=arn))["Status"] in statuses and d,
                    f"{arn} to be {statuses}")


def invocations(lam: Any, arn: str) -> int:
    return sum(e["EventType"] == "InvocationCompleted" for e in events(lam, arn))


def callback_id(lam: Any, arn: str) -> str:
    return wait_for(lambda: next((e["CallbackStartedDetails"]["CallbackId"] for e in events(lam, arn)
                                  if e["EventType"] == "CallbackStarted"), None), "CallbackStarted")


# --------------------------------------------------------------------------- data plane

def test_checkpoint_tokens_rotate_and_a_stale_one_is_refused(lam):
    name = durable_function(lam, RAW_TOKENS)
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=b"{}")
    assert "FunctionError" not in out
    arn = out["DurableExecutionArn"]
    result = json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"])
    exec_id = arn.rsplit("/", 1)[1]
    assert result["inline"] == [exec_id]
    assert result["stale"] == "Invalid checkpoint token"
    assert result["rotated"] == 4  # every checkpoint, the empty one too, gave a new token
    assert result["changed"] == ["s1", "s3"]  # only what changed
    assert result["pages"] == [[exec_id], ["s1"], ["s3"]]
    ids = {e.get("Id") for e in events(lam, arn)}
    assert "s2" not in ids  # the stale checkpoint wrote nothing
    # the invocation is over: its last token is dead too
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="Invalid checkpoint token"):
        lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=result["last_token"],
                                         Updates=[{"Id": "late", "Type": "STEP", "Action": "START"}])
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="Invalid checkpoint token"):
        lam.get_durable_execution_state(DurableExecutionArn=arn, CheckpointToken=result["last_token"])
    assert "late" not in {e.get("Id") for e in events(lam, arn)}


def test_a_crashed_invocation_is_recorded_and_retried(lam, tmp_path):
    name = durable_function(lam, CRASH)
    mark = tmp_path / "crashed-once"
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps({"mark": str(mark)}))
    assert json.loads(out["Payload"].read()) == "survived"
    assert mark.exists()
    evs = events(lam, out["DurableExecutionArn"])
    done = [e for e in evs if e["EventType"] == "InvocationCompleted"]
    assert len(done) == 2
    error = done[0]["InvocationCompletedDetails"]["Error"]["Payload"]
    assert error["ErrorType"] == "Runtime.ExitError"
    assert "Error" not in done[1]["InvocationCompletedDetails"]


def test_history_pages_and_reverses(lam):
    name = durable_function(lam, STEPS)
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=b"{}")
    assert json.loads(out["Payload"].read()) == [0, 1, 4, 9]
    arn = out["DurableExecutionArn"]
    full = events(lam, arn)
    paged, marker = [], None
    while True:
        kw = {"Marker": marker} if marker else {}
        page = lam.get_durable_execution_history(DurableExecutionArn=arn, MaxItems=3, IncludeExecutionData=True, **kw)
        assert len(page["Events"]) <= 3
        paged += page["Events"]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert paged == full
    assert [e["EventId"] for e in full] == list(range(1, len(full) + 1))
    reverse = lam.get_durable_execution_history(DurableExecutionArn=arn, ReverseOrder=True, IncludeExecutionData=True)
    assert reverse["Events"] == list(reversed(full))
    assert full[0]["ExecutionStartedDetails"]["Input"]["Payload"] == "{}"
    lean = lam.get_durable_execution_history(DurableExecutionArn=arn)["Events"]
    assert lean[0]["ExecutionStartedDetails"]["Input"] == {"Truncated": True}
    succeeded = [e for e in full if e["EventType"] == "StepSucceeded"]
    assert [e["Name"] for e in succeeded] == ["s0", "s1", "s2", "s3"]
    assert succeeded[3]["StepSucceededDetails"]["Result"]["Payload"] == "9"


# --------------------------------------------------------------------------- Invoke

def test_a_named_start_is_idempotent_and_refuses_another_payload(lam):
    name = durable_function(lam, LONG_WAIT)
    arn = start(lam, name, {"a": 1}, DurableExecutionName="order-1")
    assert arn.split("/durable-execution/")[1].startswith("order-1/")
    assert start(lam, name, {"a": 1}, DurableExecutionName="order-1") == arn
    with pytest.raises(lam.exceptions.DurableExecutionAlreadyStartedException) as e:
        start(lam, name, {"a": 2}, DurableExecutionName="order-1")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    listed = lam.list_durable_executions_by_function(FunctionName=name)["DurableExecutions"]
    assert [x["DurableExecutionArn"] for x in listed] == [arn]
    lam.stop_durable_execution(DurableExecutionArn=arn)


# --------------------------------------------------------------------------- callbacks

def test_callback_failure_fails_the_execution(lam):
    name = durable_function(lam, CALLBACK)
    arn = start(lam, name)
    cid = callback_id(lam, arn)
    lam.send_durable_execution_callback_failure(CallbackId=cid, Error={"ErrorType": "Rejected", "ErrorMessage": "no"})
    desc = status_is(lam, arn, "FAILED", "SUCCEEDED")
    assert desc["Status"] == "FAILED"
    failed = [e for e in events(lam, arn) if e["EventType"] == "CallbackFailed"]
    assert failed[0]["CallbackFailedDetails"]["Error"]["Payload"]["ErrorType"] == "Rejected"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"late")


def test_heartbeats_keep_a_callback_alive_without_invoking_then_it_times_out(lam):
    name = durable_function(lam, CALLBACK)
    arn = start(lam, name, {"heartbeat": 5, "timeout": 120})
    cid = callback_id(lam, arn)
    wait_for(lambda: invocations(lam, arn) == 1, "the first invocation's end")
    began = time.monotonic()
    while time.monotonic() - began < 7:  # longer than the 5 s heartbeat timeout
        lam.send_durable_execution_callback_heartbeat(CallbackId=cid)
        time.sleep(1)
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
    assert invocations(lam, arn) == 1  # a heartbeat never invokes the function
    desc = status_is(lam, arn, "FAILED", "SUCCEEDED")  # no more heartbeats: it times out
    assert desc["Status"] == "FAILED"
    assert any(e["EventType"] == "CallbackTimedOut" for e in events(lam, arn))
    with pytest.raises(lam.exceptions.CallbackTimeoutException):
        lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"too late")


def test_an_unknown_callback_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.send_durable_execution_callback_success(CallbackId="bm9wZQ", Result=b"x")


# --------------------------------------------------------------------------- control plane

def test_stop_pause_resume_delete_and_list(lam):
    name = durable_function(lam, CALLBACK)
    first = start(lam, name, DurableExecutionName="first")
    second = start(lam, name, DurableExecutionName="second")
    callback_id(lam, first)
    cid = callback_id(lam, second)

    page1 = lam.list_durable_executions_by_function(FunctionName=name, MaxItems=1)
    assert len(page1["DurableExecutions"]) == 1 and page1["NextMarker"]
    page2 = lam.list_durable_executions_by_function(FunctionName=name, MaxItems=1, Marker=page1["NextMarker"])
    assert [x["DurableExecutionArn"] for x in page1["DurableExecutions"] + page2["DurableExecutions"]] == [first, second]
    assert "NextMarker" not in page2
    reverse = lam.list_durable_executions_by_function(FunctionName=name, ReverseOrder=True)["DurableExecutions"]
    assert [x["DurableExecutionArn"] for x in reverse] == [second, first]
    named = lam.list_durable_executions_by_function(FunctionName=name, DurableExecutionName="second")
    assert [x["DurableExecutionArn"] for x in named["DurableExecutions"]] == [second]

    wait_for(lambda: invocations(lam, second) == 1, "the invocation's end")  # else it is PAUSING
    lam.pause_durable_execution(DurableExecutionArn=second)
    assert lam.get_durable_execution(DurableExecutionArn=second)["Status"] == "PAUSED"
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"yes")  # the SDK passes it through
    lam.resume_durable_execution(DurableExecutionArn=second)
    done = status_is(lam, second, "SUCCEEDED", "FAILED")
    assert json.loads(done["Result"]) == {"approved": "yes"}

    stopped = lam.stop_durable_execution(DurableExecutionArn=first, Error={"ErrorMessage": "by the test"})
    assert stopped["StopTimestamp"]
    desc = lam.get_durable_execution(DurableExecutionArn=first)
    assert desc["Status"] == "STOPPED" and desc["Error"]["ErrorMessage"] == "by the test"
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.stop_durable_execution(DurableExecutionArn=first)

    running = lam.list_durable_executions_by_function(FunctionName=name, Statuses=["RUNNING"])
    assert running["DurableExecutions"] == []
    ended = lam.list_durable_executions_by_function(FunctionName=name, Statuses=["STOPPED", "SUCCEEDED"])
    assert {x["Status"] for x in ended["DurableExecutions"]} == {"STOPPED", "SUCCEEDED"}
    after = lam.list_durable_executions_by_function(FunctionName=name, StartedAfter=time.time() + 60)
    assert after["DurableExecutions"] == []

    deleted = lam.delete_durable_execution(DurableExecutionArn=first)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_durable_execution(DurableExecutionArn=first)


def test_a_running_execution_cannot_be_deleted(lam):
    name = durable_function(lam, LONG_WAIT)
    arn = start(lam, name)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_durable_execution(DurableExecutionArn=arn)
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
    lam.stop_durable_execution(DurableExecutionArn=arn)


def test_list_of_an_unknown_function_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_durable_executions_by_function(FunctionName="no-such-function")


# --------------------------------------------------------------------------- attacks

def _raw(local_stack: Any, method: str, path: str, body: bytes | None = None, *, signed: bool = True,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    url = local_stack.lambda_url.rstrip("/") + path
    if signed:
        req = local_stack.signed_request(url, method=method, data=body, headers=headers)
    else:
        req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {"code": e.headers.get("X-Amzn-ErrorType"), **json.loads(e.read() or b"{}")}


@pytest.mark.parametrize("how", ["unsigned", "browser"])
def test_unsigned_and_browser_requests_change_nothing(lam, local_stack, how):
    name = durable_function(lam, CALLBACK)
    arn = start(lam, name)
    cid = callback_id(lam, arn)
    quoted = quote(arn, safe="")
    kw: dict[str, Any] = {"signed": how != "unsigned"}
    if how == "browser":
        kw["headers"] = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    attacks = [
        ("POST", f"/2025-12-01/durable-executions/{quoted}/stop", b"{}"),
        ("POST", f"/2025-12-01/durable-execution-callbacks/{cid}/succeed", b'"forged"'),
        ("DELETE", f"/2025-12-01/durable-executions/{quoted}", None),
        ("POST", f"/2025-12-01/durable-executions/{quoted}/pause", b"{}"),
        ("GET", f"/2025-12-01/durable-executions/{quoted}/history", None),
    ]
    for method, path, body in attacks:
        status, doc = _raw(local_stack, method, path, body, **kw)
        assert status == 403, (path, status, doc)
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "RUNNING"
    cb = [e for e in events(lam, arn) if e["EventType"].startswith("Callback")]
    assert [e["EventType"] for e in cb] == ["CallbackStarted"]  # nothing completed it
    lam.stop_durable_execution(DurableExecutionArn=arn)


def test_malformed_requests_get_aws_400s_and_change_nothing(lam, local_stack):
    name = durable_function(lam, CALLBACK)
    arn = start(lam, name)
    cid = callback_id(lam, arn)
    wait_for(lambda: invocations(lam, arn) == 1, "the first invocation's end")  # then nothing moves by itself
    quoted = quote(arn, safe="")
    before = events(lam, arn)
    cases = [
        ("POST", f"/2025-12-01/durable-executions/{quoted}/checkpoint", b"not json", "InvalidRequestContentException"),
        ("POST", f"/2025-12-01/durable-executions/{quoted}/checkpoint",
         json.dumps({"CheckpointToken": "x", "Updates": "nope"}).encode(), "InvalidParameterValueException"),
        ("POST", f"/2025-12-01/durable-executions/{quoted}/checkpoint",
         json.dumps({"CheckpointToken": "x", "Updates": [{"Id": "a", "Type": "BOGUS", "Action": "START"}]}).encode(),
         "InvalidParameterValueException"),
        ("POST", f"/2025-12-01/durable-executions/{quoted}/checkpoint",
         json.dumps({"CheckpointToken": "forged", "Updates": [{"Id": "a", "Type": "STEP", "Action": "START"}]}).encode(),
         "InvalidParameterValueException"),
        ("POST", f"/2025-12-01/durable-execution-callbacks/{cid}/fail", b"[1, 2]", "InvalidRequestContentException"),
        ("POST", f"/2025-12-01/durable-execution-callbacks/{cid}/fail",
         json.dumps({"ErrorType": ["not", "a", "string"]}).encode(), "InvalidParameterValueException"),
        ("GET", f"/2025-12-01/durable-executions/{quoted}/history?MaxItems=abc", None, "InvalidParameterValueException"),
        ("GET", f"/2025-12-01/durable-executions/{quoted}/history?Marker=-4", None, "InvalidParameterValueException"),
    ]
    for method, path, body, code in cases:
        status, doc = _raw(local_stack, method, path, body)
        assert (status, doc.get("code")) == (400, code), (path, body, doc)
        assert doc["Message"]
    status, doc = _raw(local_stack, "GET", "/2025-12-01/durable-executions/" + quote(arn + "x", safe=""))
    assert (status, doc["code"]) == (404, "ResourceNotFoundException")
    assert events(lam, arn) == before
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
    lam.stop_durable_execution(DurableExecutionArn=arn)


# --------------------------------------------------------------------------- timeouts, restarts

def test_execution_timeout_ends_the_execution_timed_out(lam):
    name = f"dur-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, LONG_WAIT, timeout=30, DurableConfig={"ExecutionTimeout": 2})
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=b"{}")
    assert out["FunctionError"] == "Unhandled"
    desc = lam.get_durable_execution(DurableExecutionArn=out["DurableExecutionArn"])
    assert desc["Status"] == "TIMED_OUT"
    assert events(lam, out["DurableExecutionArn"])[-1]["EventType"] == "ExecutionTimedOut"


def test_a_persisting_stack_resumes_its_executions_after_a_restart(tmp_path):
    from lambdarun.local.stack import LocalStack

    state = tmp_path / "persisting"
    first = LocalStack(state, reuse=False, shared=True, persist=True, stop_at_exit=False).start()
    try:
        lam = first.client("lambda")
        name = durable_function(lam, CALLBACK)
        arn = start(lam, name, DurableExecutionName="survivor")
        cid = callback_id(lam, arn)
        wait_for(lambda: invocations(lam, arn) == 1, "the first invocation's end")
    finally:
        first.stop()
    second = LocalStack(state, reuse=False, shared=True, persist=True, stop_at_exit=False).start()
    try:
        lam = second.client("lambda")
        assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
        lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"after restart")
        done = status_is(lam, arn, "SUCCEEDED", "FAILED")
        assert json.loads(done["Result"]) == {"approved": "after restart"}
    finally:
        second.stop()


KILLED_STACK = '''
import json, os, signal, sys, time
sys.path[:0] = json.loads(sys.argv[2])
import test_local_api_control as t
from lambdarun.local.stack import LocalStack

stack = LocalStack(sys.argv[1], reuse=False, shared=True, persist=True, stop_at_exit=False).start()
lam = stack.client("lambda")
name = t.durable_function(lam, t.CALLBACK)
arn = t.start(lam, name, DurableExecutionName="killed")
cid = t.callback_id(lam, arn)  # the CallbackStarted checkpoint was answered
t.wait_for(lambda: t.invocations(lam, arn) == 1, "the first invocation's end")
print("ANSWERED " + json.dumps([arn, cid]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no stop, no close: whatever was answered must be on disk
'''


def test_answered_checkpoints_survive_the_service_process_being_killed(tmp_path):
    """The service's store commits (WAL, synchronous=NORMAL) before a checkpoint is answered:
    SIGKILL the process serving the API right after, and a new stack on the same state
    folder has the execution, its callback and its invocation, and finishes it."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from lambdarun.local.stack import LocalStack

    state = tmp_path / "killed"
    script = tmp_path / "killed_stack.py"
    script.write_text(KILLED_STACK)
    proc = subprocess.Popen([sys.executable, str(script), str(state), json.dumps([str(Path(__file__).parent), *sys.path])],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = ""
        for out in proc.stdout:  # (the stack's logs come first)
            if out.startswith("ANSWERED "):
                line = out[len("ANSWERED "):]
                break
        proc.wait(timeout=120)
    finally:
        try:  # the killed stack's own children (moto, Lambda workers): its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, line
    arn, cid = json.loads(line)
    second = LocalStack(state, reuse=False, shared=True, persist=True, stop_at_exit=False).start()
    try:
        lam = second.client("lambda")
        assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
        assert invocations(lam, arn) == 1
        lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"after a kill")
        done = status_is(lam, arn, "SUCCEEDED", "FAILED")
        assert json.loads(done["Result"]) == {"approved": "after a kill"}
    finally:
        second.stop()


def test_a_pause_outlives_a_restart_and_shows_in_the_history(tmp_path):
    from lambdarun.local.stack import LocalStack

    state = tmp_path / "paused"
    first = LocalStack(state, reuse=False, shared=True, persist=True, stop_at_exit=False).start()
    try:
        lam = first.client("lambda")
        name = durable_function(lam, CALLBACK)
        arn = start(lam, name, DurableExecutionName="paused")
        cid = callback_id(lam, arn)
        wait_for(lambda: invocations(lam, arn) == 1, "the first invocation's end")
        lam.pause_durable_execution(DurableExecutionArn=arn)
        assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "PAUSED"
        paused = [e for e in events(lam, arn) if e["EventType"] == "ExecutionPaused"]
        assert len(paused) == 1 and paused[0]["ExecutionPausedDetails"]["PauseRequestTimestamp"]
        lam.pause_durable_execution(DurableExecutionArn=arn)  # again: nothing new
        assert sum(e["EventType"] == "ExecutionPaused" for e in events(lam, arn)) == 1
    finally:
        first.stop()
    second = LocalStack(state, reuse=False, shared=True, persist=True, stop_at_exit=False).start()
    try:
        lam = second.client("lambda")
        assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "PAUSED"
        listed = lam.list_durable_executions_by_function(FunctionName=name, Statuses=["PAUSED"])
        assert [x["DurableExecutionArn"] for x in listed["DurableExecutions"]] == [arn]
        lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"while paused")
        assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "PAUSED"
        lam.resume_durable_execution(DurableExecutionArn=arn)
        done = status_is(lam, arn, "SUCCEEDED", "FAILED")
        assert json.loads(done["Result"]) == {"approved": "while paused"}
        assert invocations(lam, arn) == 2  # nothing ran while it was paused, one invocation after
        types = [e["EventType"] for e in events(lam, arn)]
        assert types.index("ExecutionPaused") < types.index("ExecutionResumed") < types.index("ExecutionSucceeded")
    finally:
        second.stop()
