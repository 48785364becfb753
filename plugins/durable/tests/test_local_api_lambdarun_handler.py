"""lambdarun_durable's own handler on the local service's durable-execution API: it
checkpoints through CheckpointDurableExecution and pages through GetDurableExecutionState
(boto3, endpoint from the function's environment), as on AWS Lambda durable functions; the
service's scheduler re-invokes it. Driven only through boto3."""

from __future__ import annotations

import json
import os
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_durable
from lambdarun.local.testing import local_stack_fixture

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

HANDLER = '''
from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.config import CallbackConfig, Duration, StepConfig
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy


@durable_execution
def handler(event: dict, ctx: DurableContext):
    squares = [ctx.step(lambda _, i=i: i * i, name=f"sq{i}") for i in range(event["n"])]
    ctx.wait(Duration.from_seconds(1), name="pause")
    attempts = []

    def flaky(step_ctx):
        attempts.append(1)
        if step_ctx.attempt < 2:
            raise RuntimeError("first attempt fails")
        return "ok"

    retry = StepConfig(retry_strategy=create_retry_strategy(
        RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(1))))
    flaky_result = ctx.step(flaky, name="flaky", config=retry)
    doubled = ctx.map(squares, lambda c, item, i, _: c.step(lambda _: item * 2, name=f"d{i}"), name="double")
    approval = None
    if event.get("callback"):
        cb = ctx.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_seconds(60)))
        approval = cb.result()
    return {"squares": squares, "flaky": flaky_result, "doubled": doubled.get_results(), "approval": approval}
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


@pytest.fixture(scope="module")
def function(lam: Any, tmp_path_factory: Any) -> str:
    code = tmp_path_factory.mktemp("lambdarun-durable-handler")
    (code / "app.py").write_text(textwrap.dedent(HANDLER))
    name = f"lrd-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                        Handler="app.handler", Timeout=60, MemorySize=512,
                        Code={"S3Bucket": "__local__", "S3Key": str(code)},
                        # the lambdarun_durable (and lambdarun) this test imports, wherever it lives
                        Environment={"Variables": {"PYTHONPATH": os.pathsep.join(
                            str(Path(m.__file__).parent.parent) for m in (lambdarun_durable, lambdarun))}},
                        DurableConfig={"ExecutionTimeout": 300})
    return name


def events(lam: Any, arn: str) -> list[dict[str, Any]]:
    """The whole history (every page)."""
    out, marker = [], None
    while True:
        kw = {"Marker": marker} if marker else {}
        page = lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True, **kw)
        out += page["Events"]
        marker = page.get("NextMarker")
        if not marker:
            return out


def test_the_lambdarun_handler_runs_to_its_end_on_the_api(lam, function):
    out = lam.invoke(FunctionName=function, Qualifier="$LATEST", Payload=json.dumps({"n": 5}))
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    assert body == {"squares": [0, 1, 4, 9, 16], "flaky": "ok", "doubled": [0, 2, 8, 18, 32], "approval": None}
    evs = events(lam, out["DurableExecutionArn"])
    types = [e["EventType"] for e in evs]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert types.count("InvocationCompleted") >= 3  # the wait and the retry each ended an invocation
    assert [e["Name"] for e in evs if e["EventType"] == "WaitSucceeded"] == ["pause"]
    failed = [e for e in evs if e["EventType"] == "StepFailed" and e.get("Name") == "flaky"]
    assert failed and failed[0]["StepFailedDetails"]["RetryDetails"]["CurrentAttempt"] == 1


def test_a_callback_of_the_lambdarun_handler_is_sent_through_boto3(lam, function):
    out = lam.invoke(FunctionName=function, Qualifier="$LATEST", InvocationType="Event",
                     Payload=json.dumps({"n": 2, "callback": True}))
    arn = out["DurableExecutionArn"]
    deadline = time.monotonic() + 60
    cid = None
    while cid is None:
        cid = next((e["CallbackStartedDetails"]["CallbackId"] for e in events(lam, arn)
                    if e["EventType"] == "CallbackStarted"), None)
        assert time.monotonic() < deadline, "no CallbackStarted"
        time.sleep(0.1)
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"granted")  # passed through, as by AWS's SDK
    while (desc := lam.get_durable_execution(DurableExecutionArn=arn))["Status"] == "RUNNING":
        assert time.monotonic() < deadline, "still running"
        time.sleep(0.1)
    assert desc["Status"] == "SUCCEEDED", desc
    assert json.loads(desc["Result"])["approval"] == "granted"


MANY = '''
from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.config import Duration


@durable_execution
def handler(event: dict, ctx: DurableContext):
    def step(i):
        def body(_):
            with open(event["log"], "a") as f:
                f.write(f"{i}\\n")
            return i
        return body

    total = sum(ctx.step(step(i), name=f"s{i}") for i in range(event["n"]))
    ctx.wait(Duration.from_seconds(1), name="pause")
    return total
'''


def test_more_operations_than_an_event_holds_are_paged_through_the_api(lam, tmp_path_factory):
    """Past 1,000 operations the event carries a NextMarker; the handler pages the rest
    through GetDurableExecutionState. Had it missed any, the replay would run steps again."""
    code = tmp_path_factory.mktemp("many")
    (code / "app.py").write_text(textwrap.dedent(MANY))
    name = f"lrd-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                        Handler="app.handler", Timeout=120, MemorySize=512,
                        Code={"S3Bucket": "__local__", "S3Key": str(code)},
                        Environment={"Variables": {"PYTHONPATH": os.pathsep.join(
                            str(Path(m.__file__).parent.parent) for m in (lambdarun_durable, lambdarun))}},
                        DurableConfig={"ExecutionTimeout": 300})
    log = code / "effects.log"
    n = 1100
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps({"n": n, "log": str(log)}))
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    assert body == sum(range(n))
    assert sorted(int(x) for x in log.read_text().split()) == list(range(n))  # each step ran once
    evs = events(lam, out["DurableExecutionArn"])
    assert sum(e["EventType"] == "InvocationCompleted" for e in evs) == 2  # the replay had them all
