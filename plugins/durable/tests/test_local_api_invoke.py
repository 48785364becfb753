"""The local Lambda service's durable-execution API, driven only through boto3: create with
DurableConfig, start by Invoke (sync, Event, named), AWS's SDK handlers run by the service's
scheduler (waits, retries, crashes), state and history."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import botocore.exceptions
import pytest

from lambdarun.local.testing import create_function, local_stack_fixture

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

DURABLE = {"ExecutionTimeout": 300}

STEPS_AND_WAIT = '''
from aws_durable_execution_sdk_python import durable_execution, DurableContext
from aws_durable_execution_sdk_python.config import Duration

@durable_execution
def handler(event, context: DurableContext):
    a = context.step(lambda _: event["x"] + 1, name="add")
    context.wait(Duration.from_seconds(1))
    b = context.step(lambda _: a * 10, name="mul")
    return {"result": b}
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


def durable_function(lam: Any, source: str, *, durable: dict | None = None, timeout: int = 30, **kw: Any) -> str:
    name = f"dur-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, source, timeout=timeout, DurableConfig=durable or DURABLE, **kw)
    return name


def wait_status(lam: Any, arn: str, statuses: set[str], deadline: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while True:
        desc = lam.get_durable_execution(DurableExecutionArn=arn)
        if desc["Status"] in statuses:
            return desc
        assert time.monotonic() < end, f"{arn} still {desc['Status']}"
        time.sleep(0.1)


def test_create_returns_durable_config_with_the_default_retention(lam):
    name = durable_function(lam, STEPS_AND_WAIT)
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["DurableConfig"] == {"ExecutionTimeout": 300, "RetentionPeriodInDays": 14}
    assert lam.get_function(FunctionName=name)["Configuration"]["DurableConfig"]["RetentionPeriodInDays"] == 14


@pytest.mark.parametrize("config", [{"ExecutionTimeout": 0}, {"ExecutionTimeout": 31_622_401},
                                    {"ExecutionTimeout": 60, "RetentionPeriodInDays": 91},
                                    {"ExecutionTimeout": 60, "RetentionPeriodInDays": 0}])
def test_create_refuses_durable_config_out_of_range(lam, local_stack, config):
    name = f"dur-{uuid.uuid4().hex[:8]}"
    unchecked = local_stack.client("lambda", parameter_validation=False)  # the server must refuse it
    with pytest.raises(botocore.exceptions.ClientError) as e:
        create_function(unchecked, name, STEPS_AND_WAIT, DurableConfig=config)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_durability_is_set_at_creation_only(lam):
    name = f"plain-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, "def handler(e, c):\n    return 1\n")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, DurableConfig={"ExecutionTimeout": 60})
    assert "DurableConfig" not in lam.get_function_configuration(FunctionName=name)


def test_sync_invoke_runs_the_sdk_handler_to_its_end_through_a_wait(lam):
    name = durable_function(lam, STEPS_AND_WAIT)
    out = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps({"x": 4}))
    assert out["StatusCode"] == 200 and "FunctionError" not in out, out["Payload"].read()
    assert json.loads(out["Payload"].read()) == {"result": 50}
    arn = out["DurableExecutionArn"]
    assert arn.startswith(f"arn:aws:lambda:us-east-1:") and f":function:{name}:$LATEST/durable-execution/" in arn
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "SUCCEEDED" and json.loads(desc["Result"]) == {"result": 50}
    assert desc["EndTimestamp"] >= desc["StartTimestamp"]
    events = lam.get_durable_execution_history(DurableExecutionArn=arn)["Events"]
    types = [e["EventType"] for e in events]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert {"StepSucceeded", "WaitStarted", "WaitSucceeded", "InvocationCompleted"} <= set(types)
    assert types.count("InvocationCompleted") >= 2  # the wait ended the first invocation


def test_an_unqualified_invoke_is_refused_as_on_aws(lam):
    name = durable_function(lam, STEPS_AND_WAIT)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert "unqualified" in str(e.value)
    assert lam.list_durable_executions_by_function(FunctionName=name)["DurableExecutions"] == []


def test_the_plugin_contributes_the_durable_api_through_the_hook(local_stack):
    from lambdarun.plugins import make_plugin_manager

    service = local_stack.service
    pm = make_plugin_manager()
    results = pm.hook.lambdarun_lambda_service_extensions(host=service.host)
    extensions = [ext for result in results for ext in result]
    try:
        assert [type(e).__name__ for e in extensions] == ["DurableApi"]
        assert oct(service.host.state_dir.stat().st_mode & 0o777) == "0o700"
        db = service.host.state_dir / "durable" / "executions.sqlite3"
        assert oct(db.stat().st_mode & 0o777) == "0o600"
    finally:
        for e in extensions:
            e.close()
