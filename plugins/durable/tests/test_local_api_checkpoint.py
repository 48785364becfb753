"""CheckpointDurableExecution's cached fast path on the local service: a checkpoint is
validated against the invocation's cached operations and appended expecting the version it
saw; whatever the service wrote in between (a callback completed, the execution stopped)
must still reach the handler's next checkpoint, and a refused checkpoint writes nothing.
Driven through boto3 only (the handlers are raw: they call the API themselves)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from lambdarun.local.testing import create_function, local_stack_fixture

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

#: a callback completed by the service between two checkpoints of the same invocation
CALLBACK_BETWEEN = '''
import json, boto3

def handler(event, context):
    lam = boto3.client("lambda")
    arn, token = event["DurableExecutionArn"], event["CheckpointToken"]
    out = {}
    r = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token, Updates=[
        {"Id": "s0", "Type": "STEP", "Action": "START", "Name": "zero"},
        {"Id": "s0", "Type": "STEP", "Action": "SUCCEED", "Payload": "0"},
        {"Id": "cb", "Type": "CALLBACK", "Action": "START", "Name": "approval",
         "CallbackOptions": {"TimeoutSeconds": 120}}])
    token = r["CheckpointToken"]
    cb = next(op for op in r["NewExecutionState"]["Operations"] if op["Id"] == "cb")
    lam.send_durable_execution_callback_success(CallbackId=cb["CallbackDetails"]["CallbackId"], Result=b'"yes"')
    # the next checkpoint (cached operations are stale now) answers the callback's change too
    r = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token, Updates=[
        {"Id": "s1", "Type": "STEP", "Action": "START", "Name": "one"},
        {"Id": "s1", "Type": "STEP", "Action": "SUCCEED", "Payload": "1"}])
    token = r["CheckpointToken"]
    out["changed"] = {op["Id"]: [op["Status"], (op.get("CallbackDetails") or {}).get("Result")]
                      for op in r["NewExecutionState"]["Operations"]}
    # a checkpoint the stored state refuses, after one the cache accepted: nothing written
    try:
        lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token, Updates=[
            {"Id": "s2", "Type": "STEP", "Action": "START", "Name": "two"},
            {"Id": "cb", "Type": "STEP", "Action": "SUCCEED", "Payload": "9"}])
        out["wrong_type"] = "accepted"
    except lam.exceptions.InvalidParameterValueException as e:
        out["wrong_type"] = e.response["Error"]["Message"]
    # the refused checkpoint did not rotate the token: the last good one still works
    r = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token, Updates=[
        {"Id": "s3", "Type": "STEP", "Action": "START", "Name": "three"},
        {"Id": "s3", "Type": "STEP", "Action": "SUCCEED", "Payload": "3"}])
    out["after_refusal"] = sorted(op["Id"] for op in r["NewExecutionState"]["Operations"])
    return {"Status": "SUCCEEDED", "Result": json.dumps(out)}
'''

#: the execution stopped by the service between two checkpoints of the same invocation
STOP_BETWEEN = '''
import json, boto3

def handler(event, context):
    lam = boto3.client("lambda")
    arn, token = event["DurableExecutionArn"], event["CheckpointToken"]
    token = lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token, Updates=[
        {"Id": "s0", "Type": "STEP", "Action": "START", "Name": "zero"},
        {"Id": "s0", "Type": "STEP", "Action": "SUCCEED", "Payload": "0"}])["CheckpointToken"]
    lam.stop_durable_execution(DurableExecutionArn=arn)
    try:
        lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token, Updates=[
            {"Id": "after-stop", "Type": "STEP", "Action": "START", "Name": "late"},
            {"Id": "after-stop", "Type": "STEP", "Action": "SUCCEED", "Payload": "1"}])
        outcome = "accepted"
    except lam.exceptions.InvalidParameterValueException as e:
        outcome = e.response["Error"]["Message"]
    ops = event["InitialExecutionState"]["Operations"]
    mark = json.loads(ops[0]["ExecutionDetails"]["InputPayload"])["mark"]
    open(mark, "w").write(outcome)
    return {"Status": "PENDING"}
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


def durable_function(lam: Any, source: str) -> str:
    name = f"dur-cp-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, source, timeout=30, DurableConfig={"ExecutionTimeout": 300})
    return name


def history_ids(lam: Any, arn: str) -> set[str]:
    return {e.get("Id") for e in lam.get_durable_execution_history(DurableExecutionArn=arn)["Events"]}


def test_a_service_change_between_checkpoints_reaches_the_next_answer(lam):
    name = durable_function(lam, CALLBACK_BETWEEN)
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=b"{}")
    assert "FunctionError" not in out, out["Payload"].read()
    arn = out["DurableExecutionArn"]
    result = json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"])
    # the answer carries this checkpoint's step and the callback the service completed
    assert result["changed"] == {"s1": ["SUCCEEDED", None], "cb": ["SUCCEEDED", '"yes"']}
    assert result["wrong_type"] == "Operation cb is a CALLBACK, not a STEP."
    assert result["after_refusal"] == ["s3"]
    ids = history_ids(lam, arn)
    assert {"s0", "cb", "s1", "s3"} <= ids
    assert "s2" not in ids  # the refused checkpoint wrote none of its updates
    state = lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True)["Events"]
    assert any(e["EventType"] == "CallbackSucceeded" and e["Id"] == "cb" for e in state)


def test_a_checkpoint_after_a_stop_is_refused_and_writes_nothing(lam, tmp_path):
    name = durable_function(lam, STOP_BETWEEN)
    mark = tmp_path / "outcome"
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps({"mark": str(mark)}))
    arn = out["DurableExecutionArn"]
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "STOPPED"
    # the sync Invoke returns when the execution ends (the stop), maybe before the handler
    # wrote its outcome: wait for the file, not a time
    end = time.monotonic() + 60
    while not mark.exists() or not mark.read_text():
        assert time.monotonic() < end, "the handler never reported its late checkpoint"
        time.sleep(0.05)
    assert mark.read_text() == "Invalid checkpoint token"
    ids = history_ids(lam, arn)
    assert "s0" in ids and "after-stop" not in ids
