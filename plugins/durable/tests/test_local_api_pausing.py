"""Pause and resume on the local durable service as AWS does them, through boto3 only.

AWS (PauseDurableExecution): "If an invocation is in progress, the execution status changes
to PAUSING until the invocation reaches its next checkpoint, and then changes to PAUSED";
"While an execution is paused, none of its code runs until you resume it" and "pending
operations such as waits and callbacks continue to complete". ResumeDurableExecution: "If
the pause interrupted an invocation, or an operation completed while the execution was
paused, Lambda invokes your function. Otherwise, the execution continues to wait for its
pending operations. If the execution status is PAUSING, this operation cancels the pause,
and the in-progress invocation continues."

The multi-step handler appends each step's name to a log file (its marker) and holds step
``s2`` open until the test creates a gate file, so the execution is PAUSING for as long as
the test needs, without timing assumptions. It runs under AWS's SDK (unmodified) and under
lambdarun_durable's handler: both must stop at the checkpoint the service answers without
a token.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_durable
from lambdarun.local.testing import create_function, local_stack_fixture
from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(180)

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

IMPORTS = {
    sdk: f"from {module} import durable_execution\n"
         f"from {module}.config import CallbackConfig, Duration, StepConfig, StepSemantics\n"
         f"from {module}.retries import RetryStrategyConfig, create_retry_strategy\n"
    for sdk, module in (("aws", "aws_durable_execution_sdk_python"), ("lambdarun", "lambdarun_durable"))
}

STEPS = '''
import os, time

@durable_execution
def handler(event, context):
    def step(name):
        def body(_):
            with open(event["log"], "a") as f:
                f.write(name + "\\n")
            if name == "s2":  # held open until the test opens the gate
                deadline = time.time() + 120
                while not os.path.exists(event["gate"]) and time.time() < deadline:
                    time.sleep(0.02)
            return name.upper()
        return body
    return [context.step(step(n), name=n) for n in ("s1", "s2", "s3", "s4")]
'''

AT_MOST_ONCE = '''
import os, time

@durable_execution
def handler(event, context):
    def mark(name):
        def body(_):
            with open(event["log"], "a") as f:
                f.write(name + "\\n")
            return name
        return body
    context.step(mark("s1"), name="s1")
    deadline = time.time() + 120
    while not os.path.exists(event["gate"]) and time.time() < deadline:  # no step: no checkpoint
        time.sleep(0.02)
    once = StepConfig(step_semantics=StepSemantics.AT_MOST_ONCE_PER_RETRY, retry_strategy=create_retry_strategy(
        RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(1))))
    return context.step(mark("once"), name="once", config=once)
'''

WAITING = '''
@durable_execution
def handler(event, context):
    context.wait(Duration.from_seconds(event["wait"]), name="nap")
    return "woke"
'''

CALLBACK = '''
@durable_execution
def handler(event, context):
    cb = context.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_seconds(300)))
    return {"approved": cb.result()}
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


def make_function(lam: Any, source: str, sdk: str = "aws", execution_timeout: int = 600,
                  folder: Path | None = None) -> str:
    name = f"pausing-{sdk}-{uuid.uuid4().hex[:8]}"
    durable = {"ExecutionTimeout": execution_timeout}
    if sdk == "aws":  # a zip: the service gives it the installed SDK, as Lambda's runtime bundles it
        create_function(lam, name, IMPORTS[sdk] + source, timeout=150, DurableConfig=durable)
        return name
    # a local code folder, with the lambdarun_durable (and lambdarun) this test imports
    assert folder is not None
    (folder / "app.py").write_text(IMPORTS[sdk] + source)
    path = os.pathsep.join(str(Path(m.__file__).parent.parent) for m in (lambdarun_durable, lambdarun))
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                        Handler="app.handler", Timeout=150, MemorySize=512,
                        Code={"S3Bucket": "__local__", "S3Key": str(folder)},
                        Environment={"Variables": {"PYTHONPATH": path}}, DurableConfig=durable)
    return name


@pytest.fixture(scope="module", params=["aws", "lambdarun"])
def steps_function(request: Any, lam: Any, tmp_path_factory: Any) -> str:
    return make_function(lam, STEPS, request.param, folder=tmp_path_factory.mktemp("steps"))


@pytest.fixture(scope="module", params=["aws", "lambdarun"])
def at_most_once_function(request: Any, lam: Any, tmp_path_factory: Any) -> str:
    return make_function(lam, AT_MOST_ONCE, request.param, folder=tmp_path_factory.mktemp("once"))


@pytest.fixture(scope="module")
def callback_function(lam: Any) -> str:
    return make_function(lam, CALLBACK)


def events(lam: Any, arn: str, include: bool = True) -> list[dict[str, Any]]:
    return lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=include,
                                             MaxItems=1000)["Events"]


def kinds(lam: Any, arn: str) -> list[str]:
    return [e["EventType"] for e in events(lam, arn)]


def named(lam: Any, arn: str, event_type: str, name: str) -> bool:
    return any(e["EventType"] == event_type and e.get("Name") == name for e in events(lam, arn))


def invocations(lam: Any, arn: str) -> int:
    return kinds(lam, arn).count("InvocationCompleted")


def status(lam: Any, arn: str) -> str:
    return lam.get_durable_execution(DurableExecutionArn=arn)["Status"]


def listed(lam: Any, function: str, *statuses: str) -> list[str]:
    out = lam.list_durable_executions_by_function(FunctionName=function, Statuses=list(statuses))
    return [x["DurableExecutionArn"] for x in out["DurableExecutions"]]


def start(lam: Any, function: str, payload: dict[str, Any], **kw: Any) -> str:
    out = lam.invoke(FunctionName=function, Qualifier="$LATEST", InvocationType="Event",
                     Payload=json.dumps(payload).encode(), **kw)
    return out["DurableExecutionArn"]


def start_in_s2(lam: Any, function: str, tmp_path: Path) -> tuple[str, Path, Path]:
    """Start a STEPS execution; return once it is held inside step s2, whose START is
    checkpointed (so its next checkpoint is s2's SUCCEED)."""
    log, gate = tmp_path / f"log-{uuid.uuid4().hex[:6]}", tmp_path / f"gate-{uuid.uuid4().hex[:6]}"
    arn = start(lam, function, {"log": str(log), "gate": str(gate)})
    wait_for(lambda: log.exists() and "s2" in log.read_text().split(), "step s2 to run")
    wait_for(lambda: named(lam, arn, "StepStarted", "s2"), "s2's START checkpoint")
    return arn, log, gate


def ran(log: Path) -> list[str]:
    return log.read_text().split()


def callback_waiting(lam: Any, function: str, **kw: Any) -> tuple[str, str]:
    """Start a CALLBACK execution; return it and its callback id once its invocation ended."""
    arn = start(lam, function, {}, **kw)
    wait_for(lambda: invocations(lam, arn) == 1, "the first invocation's end")
    cid = next(e["CallbackStartedDetails"]["CallbackId"] for e in events(lam, arn) if e["EventType"] == "CallbackStarted")
    return arn, cid


# ---------------------------------------------------------------------------- PAUSING


def test_a_pause_stops_the_invocation_at_its_next_checkpoint_and_resume_goes_on_from_there(
        lam, steps_function, tmp_path):
    arn, log, gate = start_in_s2(lam, steps_function, tmp_path)
    assert lam.pause_durable_execution(DurableExecutionArn=arn, Reason="maintenance")["ResponseMetadata"][
        "HTTPStatusCode"] == 202
    # held inside s2: no checkpoint yet, so PAUSING (listed as such)
    assert status(lam, arn) == "PAUSING"
    assert arn in listed(lam, steps_function, "PAUSING") and arn not in listed(lam, steps_function, "PAUSED", "RUNNING")
    assert invocations(lam, arn) == 0

    gate.touch()  # s2 ends: its SUCCEED is the next checkpoint, committed, then the invocation stops
    wait_for(lambda: status(lam, arn) == "PAUSED", "PAUSED")
    wait_for(lambda: invocations(lam, arn) == 1, "the interrupted invocation's end")
    assert arn in listed(lam, steps_function, "PAUSED") and arn not in listed(lam, steps_function, "PAUSING")
    # the invocation has ended: s3 never ran, and s2's result is durable
    assert ran(log) == ["s1", "s2"]
    assert named(lam, arn, "StepSucceeded", "s2") and not named(lam, arn, "StepStarted", "s3")
    assert status(lam, arn) == "PAUSED" and invocations(lam, arn) == 1

    lam.resume_durable_execution(DurableExecutionArn=arn, Reason="all clear")
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"]) == ["S1", "S2", "S3", "S4"]
    assert ran(log) == ["s1", "s2", "s3", "s4"]  # no completed step ran again
    evs = events(lam, arn)
    types = [e["EventType"] for e in evs]
    assert types.count("InvocationCompleted") == 2  # the interrupted one, then the one the resume started
    assert types.index("ExecutionPaused") < types.index("ExecutionResumed") < types.index("ExecutionSucceeded")
    paused = next(e for e in evs if e["EventType"] == "ExecutionPaused")["ExecutionPausedDetails"]
    resumed = next(e for e in evs if e["EventType"] == "ExecutionResumed")["ExecutionResumedDetails"]
    assert paused["Reason"] == {"Payload": "maintenance", "Truncated": False}
    assert paused["ExecutionTimeoutPaused"] is True and paused["PauseRequestTimestamp"]
    assert resumed["Reason"] == {"Payload": "all clear", "Truncated": False} and resumed["ResumeRequestTimestamp"]
    # the reason is execution data (botocore marks it sensitive)
    hidden = next(e for e in events(lam, arn, include=False) if e["EventType"] == "ExecutionPaused")
    assert hidden["ExecutionPausedDetails"]["Reason"] == {"Truncated": True}


def test_resume_while_pausing_cancels_the_pause_and_the_invocation_continues(lam, steps_function, tmp_path):
    arn, log, gate = start_in_s2(lam, steps_function, tmp_path)
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSING"
    lam.resume_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "RUNNING"
    assert arn in listed(lam, steps_function, "RUNNING") and arn not in listed(lam, steps_function, "PAUSING", "PAUSED")
    gate.touch()
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert ran(log) == ["s1", "s2", "s3", "s4"]
    assert invocations(lam, arn) == 1  # the in-progress invocation went on to the end


def test_a_pausing_execution_can_be_stopped(lam, steps_function, tmp_path):
    arn, log, gate = start_in_s2(lam, steps_function, tmp_path)
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSING"
    lam.stop_durable_execution(DurableExecutionArn=arn, Error={"ErrorMessage": "while pausing"})
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "STOPPED" and desc["Error"]["ErrorMessage"] == "while pausing"
    gate.touch()  # the held invocation's next checkpoint is refused; the execution stays STOPPED
    wait_for(lambda: invocations(lam, arn) >= 1, "the held invocation's end")
    assert status(lam, arn) == "STOPPED" and ran(log) == ["s1", "s2"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.resume_durable_execution(DurableExecutionArn=arn)


def test_an_at_most_once_step_whose_start_is_the_interrupting_checkpoint_runs_once(
        lam, at_most_once_function, tmp_path):
    log, gate = tmp_path / "log", tmp_path / "gate"
    arn = start(lam, at_most_once_function, {"log": str(log), "gate": str(gate)})
    wait_for(lambda: named(lam, arn, "StepSucceeded", "s1"), "s1's result")
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSING"
    gate.touch()  # the next checkpoint is the at-most-once step's START: committed, then the invocation stops
    wait_for(lambda: status(lam, arn) == "PAUSED", "PAUSED")
    wait_for(lambda: invocations(lam, arn) == 1, "the interrupted invocation's end")
    assert named(lam, arn, "StepStarted", "once")
    assert ran(log) == ["s1"]  # its body did not run in the interrupted invocation
    lam.resume_durable_execution(DurableExecutionArn=arn)
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    # the interrupted attempt is not re-run blindly: the step's retry runs the body, once
    assert ran(log) == ["s1", "once"]
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Result"] == '"once"'


# ---------------------------------------------------------------------------- while PAUSED


def test_a_callback_completes_while_paused_and_the_resume_invokes(lam, callback_function):
    name = f"named-{uuid.uuid4().hex[:8]}"
    arn, cid = callback_waiting(lam, callback_function, DurableExecutionName=name)
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSED"  # no invocation in progress: PAUSED at once
    # invoking with the paused execution's name returns it; it stays paused, nothing runs
    assert start(lam, callback_function, {}, DurableExecutionName=name) == arn
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"alice")
    assert "CallbackSucceeded" in kinds(lam, arn)  # the operation completed while paused
    assert status(lam, arn) == "PAUSED" and invocations(lam, arn) == 1
    lam.resume_durable_execution(DurableExecutionArn=arn)
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"]) == {"approved": "alice"}
    assert invocations(lam, arn) == 2


def test_a_resume_with_nothing_completed_invokes_nothing(lam, callback_function):
    arn, cid = callback_waiting(lam, callback_function)
    lam.pause_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "PAUSED"
    lam.resume_durable_execution(DurableExecutionArn=arn)
    assert status(lam, arn) == "RUNNING"
    # it goes on waiting for its callback: the only invocation after the first is the callback's
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"bob")
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert invocations(lam, arn) == 2


def test_execution_timeout_paused_stops_the_timeout_clock_and_false_lets_it_run(lam):
    # ExecutionTimeout 8 s, a 12 s wait: unpaused the execution times out before the wait ends
    function = make_function(lam, WAITING, execution_timeout=8)
    stopped = start(lam, function, {"wait": 12})  # paused with the default ExecutionTimeoutPaused=true
    running = start(lam, function, {"wait": 12})  # paused with ExecutionTimeoutPaused=false
    for arn in (stopped, running):
        wait_for(lambda arn=arn: invocations(lam, arn) == 1, "the first invocation's end")
    before = lam.get_durable_execution(DurableExecutionArn=stopped)["ExpectedExecutionTimeoutTimestamp"]
    paused_at = time.time()
    lam.pause_durable_execution(DurableExecutionArn=stopped)
    lam.pause_durable_execution(DurableExecutionArn=running, ExecutionTimeoutPaused=False)
    assert status(lam, stopped) == status(lam, running) == "PAUSED"

    # false: the timeout fires while paused
    wait_for(lambda: status(lam, running) == "TIMED_OUT", "the unpaused timeout")
    assert "WaitSucceeded" not in kinds(lam, running)
    assert next(e for e in events(lam, running) if e["EventType"] == "ExecutionPaused")[
        "ExecutionPausedDetails"]["ExecutionTimeoutPaused"] is False
    # true: the wait (due after the timeout) completes while paused, and the timeout never fired
    wait_for(lambda: "WaitSucceeded" in kinds(lam, stopped), "the wait to complete while paused")
    assert status(lam, stopped) == "PAUSED" and invocations(lam, stopped) == 1
    resumed_at = time.time()
    lam.resume_durable_execution(DurableExecutionArn=stopped)
    after = lam.get_durable_execution(DurableExecutionArn=stopped)["ExpectedExecutionTimeoutTimestamp"]
    # extended by the time spent paused
    assert (after - before).total_seconds() >= (resumed_at - paused_at) - 1.0
    wait_for(lambda: status(lam, stopped) == "SUCCEEDED", "SUCCEEDED")  # the completed wait: invoked
    assert lam.get_durable_execution(DurableExecutionArn=stopped)["Result"] == '"woke"'


# ---------------------------------------------------------------------------- ClientToken


def test_client_token_replays_have_no_second_effect(lam, callback_function):
    arn, cid = callback_waiting(lam, callback_function)
    lam.pause_durable_execution(DurableExecutionArn=arn, ClientToken="pause-1", Reason="first")
    lam.resume_durable_execution(DurableExecutionArn=arn, ClientToken="resume-1")
    assert status(lam, arn) == "RUNNING"
    # the same pause again (a retried request): success, and the execution is not paused again
    lam.pause_durable_execution(DurableExecutionArn=arn, ClientToken="pause-1", Reason="first")
    assert status(lam, arn) == "RUNNING"
    # the same resume again: success instead of "not paused"
    lam.resume_durable_execution(DurableExecutionArn=arn, ClientToken="resume-1")
    history = kinds(lam, arn)
    assert history.count("ExecutionPaused") == 1 and history.count("ExecutionResumed") == 1
    # the same token with other parameters is refused, and changes nothing
    for other in ({"Reason": "second"}, {"Reason": "first", "ExecutionTimeoutPaused": False}):
        with pytest.raises(lam.exceptions.InvalidParameterValueException, match="ClientToken"):
            lam.pause_durable_execution(DurableExecutionArn=arn, ClientToken="pause-1", **other)
    assert status(lam, arn) == "RUNNING" and kinds(lam, arn) == history
    # a new token pauses
    lam.pause_durable_execution(DurableExecutionArn=arn, ClientToken="pause-2")
    assert status(lam, arn) == "PAUSED"
    lam.stop_durable_execution(DurableExecutionArn=arn)


# ---------------------------------------------------------------------------- attacks


def test_malformed_and_forged_pauses_change_nothing(lam, local_stack, callback_function):
    arn, cid = callback_waiting(lam, callback_function)
    before = kinds(lam, arn)
    # a client that sends whatever it is given (botocore would refuse these types itself)
    raw = local_stack.client("lambda", parameter_validation=False)
    fake = arn.rsplit("/", 1)[0] + "/" + uuid.uuid4().hex
    refusals = [
        (lam.pause_durable_execution, {"DurableExecutionArn": "arn:aws:lambda:nope"}, "ValidationException"),
        (lam.pause_durable_execution, {"DurableExecutionArn": fake}, "ResourceNotFoundException"),
        (lam.pause_durable_execution, {"DurableExecutionArn": arn + "x/y"}, None),
        (lam.pause_durable_execution, {"DurableExecutionArn": arn, "ClientToken": "t" * 65}, "ValidationException"),
        (lam.pause_durable_execution, {"DurableExecutionArn": arn, "ClientToken": "has space"}, "ValidationException"),
        (lam.pause_durable_execution, {"DurableExecutionArn": arn, "Reason": "r" * 1025}, "ValidationException"),
        (raw.pause_durable_execution, {"DurableExecutionArn": arn, "ClientToken": 12345}, None),
        (raw.pause_durable_execution, {"DurableExecutionArn": arn, "ClientToken": ["a"]}, None),
        (raw.pause_durable_execution, {"DurableExecutionArn": arn, "Reason": {"x": 1}}, None),
        (raw.pause_durable_execution, {"DurableExecutionArn": arn, "ExecutionTimeoutPaused": "yes"}, None),
    ]
    for call, kw, code in refusals:
        with pytest.raises(lam.exceptions.ClientError) as info:
            call(**kw)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404), kw
        if code:
            assert info.value.response["Error"]["Code"] == code, (kw, info.value.response["Error"])
        assert status(lam, arn) == "RUNNING" and kinds(lam, arn) == before, kw
    # a paused execution: a forged resume leaves it paused
    lam.pause_durable_execution(DurableExecutionArn=arn)
    paused = kinds(lam, arn)
    for kw in ({"ClientToken": 7}, {"Reason": 7}, {"ClientToken": ""}):
        with pytest.raises(lam.exceptions.ClientError):
            raw.resume_durable_execution(DurableExecutionArn=arn, **kw)
        assert status(lam, arn) == "PAUSED" and kinds(lam, arn) == paused, kw
    # and nothing was lost: the execution goes on as before
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"carol")
    lam.resume_durable_execution(DurableExecutionArn=arn)
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"]) == {"approved": "carol"}
