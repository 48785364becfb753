"""AWS's own durable SDK examples, unmodified (aws_examples/, see its README), zipped and run
on the local Lambda service through plain boto3: CreateFunction with DurableConfig, Invoke,
SendDurableExecutionCallbackSuccess. The service's scheduler re-invokes them after waits,
retries, callbacks and chained invokes; no process of the test drives them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from lambdarun.local.testing import local_stack_fixture, make_zip
from lambdarun.testing import wait_for

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

EXAMPLES = Path(__file__).parent / "aws_examples"


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


def deploy(lam: Any, example: str, *, env: dict[str, str] | None = None, execution_timeout: int = 600) -> str:
    name = f"ex-{example.replace('_', '-')[:40]}-{uuid.uuid4().hex[:6]}"
    kwargs: dict[str, Any] = {"DurableConfig": {"ExecutionTimeout": execution_timeout}}
    lam.create_function(
        FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
        Handler=f"{example}.handler", Timeout=60, MemorySize=256,
        Code={"ZipFile": make_zip({f"{example}.py": (EXAMPLES / f"{example}.py").read_bytes()})},
        Environment={"Variables": env or {}}, **kwargs)
    return name


def run(lam: Any, name: str, payload: Any = None) -> tuple[dict[str, Any], Any]:
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps(payload))
    body = json.loads(out["Payload"].read())
    return out, body


def history(lam: Any, arn: str) -> list[dict[str, Any]]:
    return lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True)["Events"]


def callback_id(lam: Any, arn: str) -> str:
    def started() -> str | None:
        for ev in history(lam, arn):
            if ev["EventType"] == "CallbackStarted":
                return ev["CallbackStartedDetails"]["CallbackId"]
        return None

    return wait_for(started, "CallbackStarted")


@pytest.mark.parametrize("example, expected", [
    ("step", 8),
    ("step_with_retry", "Operation succeeded"),
    ("wait", "Wait completed"),
    ("multiple_wait", {"completedWaits": 2, "finalStep": "done"}),
    ("parallel", ["task 1 completed", "task 2 completed", "task 3 completed after wait"]),
    ("map_operations", [2, 4, 6, 8, 10]),
    ("run_in_child_context", "Child context result: 10"),
    ("none_results", "result"),
    ("hello_world", {"statusCode": 200, "body": "Hello from Durable Lambda! (status: 200)"}),
])
def test_example_runs_to_its_result(lam, example, expected):
    name = deploy(lam, example)
    out, body = run(lam, name, "test")
    assert "FunctionError" not in out, body
    assert body == expected
    arn = out["DurableExecutionArn"]
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "SUCCEEDED" and json.loads(desc["Result"]) == expected
    events = [e["EventType"] for e in history(lam, arn)]
    assert events[0] == "ExecutionStarted" and events[-1] == "ExecutionSucceeded"


def test_step_with_retry_is_retried_by_the_service(lam):
    name = deploy(lam, "step_with_retry")
    out, body = run(lam, name)
    assert body == "Operation succeeded"
    events = history(lam, out["DurableExecutionArn"])
    failed = [e for e in events if e["EventType"] == "StepFailed"]
    assert failed and failed[0]["StepFailedDetails"]["RetryDetails"]["CurrentAttempt"] == 1
    assert sum(e["EventType"] == "InvocationCompleted" for e in events) >= 2  # re-invoked for the retry


def test_multiple_wait_takes_one_invocation_per_wait(lam):
    name = deploy(lam, "multiple_wait")
    out, _ = run(lam, name)
    events = history(lam, out["DurableExecutionArn"])
    assert [e["Name"] for e in events if e["EventType"] == "WaitSucceeded"] == ["wait-1", "wait-2"]
    assert sum(e["EventType"] == "InvocationCompleted" for e in events) == 3


def test_handler_error_fails_the_execution(lam):
    name = deploy(lam, "handler_error")
    out, body = run(lam, name)
    assert out["FunctionError"] == "Unhandled"
    assert body["errorMessage"] == "Intentional handler failure"
    desc = lam.get_durable_execution(DurableExecutionArn=out["DurableExecutionArn"])
    assert desc["Status"] == "FAILED" and desc["Error"]["ErrorMessage"] == "Intentional handler failure"


@pytest.mark.parametrize("example, prefix", [("callback_simple", ""), ("wait_for_callback", "External system result: ")])
def test_callback_examples_complete_when_the_test_sends_success(lam, example, prefix):
    name = deploy(lam, example)
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", InvocationType="Event", Payload=b"null")
    assert out["StatusCode"] == 202
    arn = out["DurableExecutionArn"]
    cid = callback_id(lam, arn)
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"successful")  # as AWS's own test
    desc = wait_for(lambda: (d := lam.get_durable_execution(DurableExecutionArn=arn))["Status"] != "RUNNING" and d,
                    "the execution's end")
    assert desc["Status"] == "SUCCEEDED", desc
    assert json.loads(desc["Result"]) == f"{prefix}successful"


@pytest.mark.parametrize("durable_target", [False, True])
def test_invoke_example_chains_into_another_function(lam, durable_target):
    if durable_target:
        target = deploy(lam, "step", execution_timeout=123)
        target_ref = f"{target}:$LATEST"
    else:
        target = f"plain-{uuid.uuid4().hex[:6]}"
        lam.create_function(FunctionName=target, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                            Handler="app.handler", Code={"ZipFile": make_zip(
                                {"app.py": "def handler(event, context):\n    return {'doubled': event['n'] * 2}\n"})})
        target_ref = target
    name = deploy(lam, "invoke_basic", env={"TARGET_FUNCTION_NAME": target_ref})
    out, body = run(lam, name, {"n": 21})
    assert "FunctionError" not in out, body
    assert body == (8 if durable_target else {"doubled": 42})
    events = history(lam, out["DurableExecutionArn"])
    started = next(e for e in events if e["EventType"] == "ChainedInvokeStarted")
    assert started["ChainedInvokeStartedDetails"]["FunctionName"] == target_ref
    assert any(e["EventType"] == "ChainedInvokeSucceeded" for e in events)
    if durable_target:
        child = started["ChainedInvokeStartedDetails"]["DurableExecutionArn"]
        # AWS's format: the function's name and version, never its whole ARN nested
        assert child.startswith(f"arn:aws:lambda:us-east-1:123456789012:function:{target}:$LATEST/durable-execution/")
        assert child.count("arn:") == 1
        child_desc = lam.get_durable_execution(DurableExecutionArn=child)
        assert child_desc["Status"] == "SUCCEEDED"
        # the child runs under its own function's ExecutionTimeout, not its parent's
        timeout = child_desc["ExpectedExecutionTimeoutTimestamp"] - child_desc["StartTimestamp"]
        assert timeout.total_seconds() == pytest.approx(123, abs=1)
