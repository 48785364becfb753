"""DurableFunctionCloudTestRunner speaks AWS's API as botocore's model defines it.

Until the local target serves the durable API (d-api's branch), this is a contract test:
botocore's Stubber checks every request the runner makes against the Lambda service model
(operation, parameter names and types) and every answer against the output shapes. The
answers are the real GetDurableExecution/GetDurableExecutionHistory of an execution run
by lambdarun's engine, so the test also checks that the cloud runner rebuilds from the
history the same operations the in-process runner reports.
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.config import Duration, JitterStrategy, StepConfig
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy
from lambdarun_durable.testing import (
    DurableFunctionCloudTestRunner,
    DurableFunctionsTestError,
    DurableFunctionTestRunner,
    callback_id_from_events,
)

RETRY = StepConfig(
    retry_strategy=create_retry_strategy(
        RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(1), jitter_strategy=JitterStrategy.NONE)
    )
)
tries: list[int] = []


@durable_execution
def handler(event: dict, ctx: DurableContext) -> dict:
    def flaky(sctx: Any) -> int:
        tries.append(sctx.attempt)
        if sctx.attempt < 2:
            raise ConnectionError("once")
        return 7

    a = ctx.step(flaky, name="flaky", config=RETRY)
    ctx.wait(Duration.from_seconds(30), name="nap")
    b = ctx.run_in_child_context(lambda c: c.step(lambda _: 1, name="inner"), name="child")
    return {"a": a, "b": b, "in": event}


def _client() -> Any:
    return boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
        endpoint_url="http://127.0.0.1:9",  # never reached: the Stubber answers
    )


def _shape(op: Any) -> tuple:
    return (
        op.operation_type, op.status, op.name, op.sub_type, getattr(op, "result", None),
        getattr(op, "attempt", None), [_shape(c) for c in getattr(op, "child_operations", [])],
    )


def test_cloud_runner_requests_and_result_match_the_api() -> None:
    with DurableFunctionTestRunner(handler) as local:
        expected = local.run({"order": 1})
        describe = local.service.describe(expected.execution_arn)
        events = local.get_execution_history(expected.execution_arn)["Events"]
    arn = expected.execution_arn
    # botocore's model makes two members required that the engine's history (like AWS's
    # in-process runner's, see test_parity.py) leaves out: ExecutionStartedDetails.
    # ExecutionTimeout and StepSucceededDetails.RetryDetails. The API layer must add them;
    # here they are filled in (the step's attempt as the service has it) so the Stubber
    # accepts the answer.
    attempts = {o.operation_id: getattr(o, "attempt", 0) for o in expected.get_all_operations()}
    for ev in events:
        if ev["EventType"] == "ExecutionStarted":
            ev["ExecutionStartedDetails"].setdefault("ExecutionTimeout", 300)
        if ev["EventType"] == "StepSucceeded":
            ev["StepSucceededDetails"].setdefault("RetryDetails", {"CurrentAttempt": attempts[ev["Id"]]})
    execution = {k: describe[k] for k in ("DurableExecutionArn", "DurableExecutionName", "Status", "StartTimestamp")}
    execution["FunctionArn"] = arn.split("/durable-execution/")[0]
    execution["Result"] = expected.result
    execution["EndTimestamp"] = describe.get("EndTimestamp") or describe["StartTimestamp"]

    client = _client()
    stub = Stubber(client)
    stub.add_response(
        "invoke",
        {"StatusCode": 200, "Payload": io.BytesIO(expected.result.encode()), "DurableExecutionArn": arn},
        {"FunctionName": "orders:live", "InvocationType": "RequestResponse", "Payload": json.dumps({"order": 1})},
    )
    stub.add_response("get_durable_execution", execution, {"DurableExecutionArn": arn})
    half = len(events) // 2
    stub.add_response(
        "get_durable_execution_history", {"Events": events[:half], "NextMarker": "page-2"},
        {"DurableExecutionArn": arn, "IncludeExecutionData": True},
    )
    stub.add_response(
        "get_durable_execution_history", {"Events": events[half:]},
        {"DurableExecutionArn": arn, "IncludeExecutionData": True, "Marker": "page-2"},
    )
    with stub:
        runner = DurableFunctionCloudTestRunner("orders:live", lambda_client=client, poll_interval=0.01)
        result = runner.run(input={"order": 1}, timeout=10)
        stub.assert_no_pending_responses()

    assert result.status is expected.status
    assert json.loads(result.result) == {"a": 7, "b": 1, "in": {"order": 1}}
    assert result.execution_status.value == "SUCCEEDED"
    assert [_shape(o) for o in result.operations] == [_shape(o) for o in expected.operations]
    assert result.get_step("flaky").attempt == 2
    assert result.get_wait("nap").scheduled_end_timestamp is not None
    assert result.get_context("child").get_step("inner").status.value == "SUCCEEDED"
    assert len(result.invocations) == len(expected.invocations)


def test_cloud_runner_async_callbacks_and_errors() -> None:
    client = _client()
    arn = "arn:aws:lambda:us-east-1:123456789012:function:f:1/durable-execution/n/i"
    stub = Stubber(client)
    stub.add_response(
        "invoke", {"StatusCode": 202, "Payload": io.BytesIO(b""), "DurableExecutionArn": arn},
        {"FunctionName": "f:1", "InvocationType": "Event", "Payload": "null", "DurableExecutionName": "n"},
    )
    stub.add_response("send_durable_execution_callback_success", {}, {"CallbackId": "cb-1", "Result": b"yes"})
    stub.add_response(
        "send_durable_execution_callback_failure", {},
        {"CallbackId": "cb-2", "Error": {"ErrorMessage": "no", "ErrorType": "Rejected"}},
    )
    stub.add_response("send_durable_execution_callback_heartbeat", {}, {"CallbackId": "cb-3"})
    stub.add_client_error(
        "invoke", "ResourceNotFoundException", "Function not found", 404,
        expected_params={"FunctionName": "f:1", "InvocationType": "RequestResponse", "Payload": '{"x": 1}'},
    )
    with stub:
        runner = DurableFunctionCloudTestRunner("f:1", lambda_client=client)
        assert runner.run_async(execution_name="n") == arn
        runner.send_callback_success("cb-1", b"yes")
        runner.send_callback_failure("cb-2", {"ErrorMessage": "no", "ErrorType": "Rejected"})
        runner.send_callback_heartbeat("cb-3")
        with pytest.raises(DurableFunctionsTestError, match="Function not found"):
            runner.run({"x": 1})
        stub.assert_no_pending_responses()


def test_callback_id_waits_for_the_creating_invocation_to_end() -> None:
    started = {"EventType": "CallbackStarted", "Id": "op1", "Name": "approve", "CallbackStartedDetails": {"CallbackId": "cb"}}
    ended = {"EventType": "InvocationCompleted"}
    done = {"EventType": "CallbackSucceeded", "Id": "op1"}
    assert callback_id_from_events([started]) is None
    assert callback_id_from_events([started, ended]) == "cb"
    assert callback_id_from_events([started, ended], "approve") == "cb"
    with pytest.raises(DurableFunctionsTestError, match="already completed"):
        callback_id_from_events([started, ended, done], "approve")
