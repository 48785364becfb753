"""PAUSING on the local durable service, through boto3 only (AWS's PauseDurableExecution: "If
an invocation is in progress, the execution status changes to PAUSING until the invocation
reaches its next checkpoint, and then changes to PAUSED"; ResumeDurableExecution: "If the
execution status is PAUSING, this operation cancels the pause, and the in-progress invocation
continues"). The handler's step holds its invocation open until the test opens a gate file,
so the execution is PAUSING for as long as the test needs, without timing assumptions."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.testing import create_function, local_stack_fixture
from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(120)

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

GATED = '''
import os, time
from aws_durable_execution_sdk_python import durable_execution
from aws_durable_execution_sdk_python.config import Duration

@durable_execution
def handler(event, context):
    def gated(_):
        with open(event["log"], "a") as f:
            f.write("run\\n")
        deadline = time.time() + 90
        while not os.path.exists(event["gate"]) and time.time() < deadline:
            time.sleep(0.02)
        return "through"
    first = context.step(gated, name="gated")
    context.wait(Duration.from_seconds(1), name="breather")
    return {"first": first}
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


@pytest.fixture(scope="module")
def function(lam: Any) -> str:
    name = f"pausing-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, GATED, timeout=120, DurableConfig={"ExecutionTimeout": 600})
    return name


def events(lam: Any, arn: str) -> list[dict[str, Any]]:
    return lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True)["Events"]


def invocations(lam: Any, arn: str) -> int:
    return sum(e["EventType"] == "InvocationCompleted" for e in events(lam, arn))


def status(lam: Any, arn: str) -> str:
    return lam.get_durable_execution(DurableExecutionArn=arn)["Status"]


def listed(lam: Any, function: str, *statuses: str) -> list[str]:
    out = lam.list_durable_executions_by_function(FunctionName=function, Statuses=list(statuses))
    return [x["DurableExecutionArn"] for x in out["DurableExecutions"]]


def start_in_step(lam: Any, function: str, tmp_path: Path) -> tuple[str, Path, Path]:
    """Start an execution; return once its first invocation is inside the gated step."""
    log, gate = tmp_path / f"log-{uuid.uuid4().hex[:6]}", tmp_path / f"gate-{uuid.uuid4().hex[:6]}"
    arn = lam.invoke(FunctionName=function, Qualifier="$LATEST", InvocationType="Event",
                     Payload=json.dumps({"log": str(log), "gate": str(gate)}).encode())["DurableExecutionArn"]
    wait_for(log.exists, "the step to start")
    return arn, log, gate


def test_a_pause_during_an_invocation_is_pausing_then_paused_and_nothing_runs(lam, function, tmp_path):
    arn, log, gate = start_in_step(lam, function, tmp_path)
    assert lam.pause_durable_execution(DurableExecutionArn=arn, Reason="maintenance")["ResponseMetadata"][
        "HTTPStatusCode"] == 202
    # the invocation is held inside its step: no checkpoint yet, so PAUSING, listed as such
    assert status(lam, arn) == "PAUSING"
    assert arn in listed(lam, function, "PAUSING") and arn not in listed(lam, function, "PAUSED", "RUNNING")
    assert invocations(lam, arn) == 0

    gate.touch()  # the invocation goes on to its next checkpoint (and ends): then PAUSED
    wait_for(lambda: status(lam, arn) == "PAUSED", "PAUSED")
    assert arn in listed(lam, function, "PAUSED") and arn not in listed(lam, function, "PAUSING")
    ran = invocations(lam, arn)
    assert ran == 1
    # whatever the execution waits for may elapse while paused (the 1 s wait), yet no invocation starts
    waits = [e for e in events(lam, arn) if e["EventType"] == "WaitStarted"]
    if waits:
        due = waits[0]["WaitStartedDetails"]["ScheduledEndTimestamp"].timestamp()
        wait_for(lambda: time.time() > due + 1.0, "the wait's end to pass")
    assert status(lam, arn) == "PAUSED" and invocations(lam, arn) == ran

    lam.resume_durable_execution(DurableExecutionArn=arn)
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"]) == {"first": "through"}
    assert log.read_text() == "run\n"  # the step's checkpointed result was kept: it never ran again
    types = [e["EventType"] for e in events(lam, arn)]
    assert types.index("ExecutionPaused") < types.index("ExecutionResumed") < types.index("ExecutionSucceeded")


def test_resume_while_pausing_cancels_the_pause(lam, function, tmp_path):
    arn, log, gate = start_in_step(lam, function, tmp_path)
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSING"
    lam.resume_durable_execution(DurableExecutionArn=arn)
    wait_for(lambda: status(lam, arn) == "RUNNING", "RUNNING")
    assert arn in listed(lam, function, "RUNNING") and arn not in listed(lam, function, "PAUSING", "PAUSED")
    gate.touch()
    # the pause is gone: the wait's re-invocation happens with no further resume
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"]) == {"first": "through"}
    assert log.read_text() == "run\n"


def test_a_pausing_execution_can_be_stopped(lam, function, tmp_path):
    arn, _log, gate = start_in_step(lam, function, tmp_path)
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSING"
    lam.stop_durable_execution(DurableExecutionArn=arn, Error={"ErrorMessage": "while pausing"})
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "STOPPED" and desc["Error"]["ErrorMessage"] == "while pausing"
    gate.touch()  # the held invocation's next checkpoint is refused; the execution stays STOPPED
    wait_for(lambda: invocations(lam, arn) >= 1, "the held invocation's end")
    assert status(lam, arn) == "STOPPED"
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.resume_durable_execution(DurableExecutionArn=arn)
