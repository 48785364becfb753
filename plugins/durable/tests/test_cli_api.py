"""``lambdarun durable ...`` through the durable-execution API of the real local Lambda service
(click's CliRunner; the command's session finds the stack through ``LAMBDARUN_LOCAL__STATE_DIR``).
The executions are AWS SDK handlers started by a plain boto3 ``Invoke``: nothing of the
orchestrator's store is involved. Each command: its happy path, an unknown ARN or callback
(a clear error, exit code 1), a malformed input (refused, nothing changed)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from lambdarun.local.testing import create_function, local_stack_fixture
from lambdarun_durable.cli import durable as durable_cli
from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(120)

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

CALLBACK = '''
from aws_durable_execution_sdk_python import durable_execution
from aws_durable_execution_sdk_python.config import CallbackConfig, Duration

@durable_execution
def handler(event, context):
    cb = context.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_seconds(300)))
    return {"approved": cb.result(), "order": event.get("order")}
'''

#: a well-formed ARN of no execution (the account and region of the local service)
UNKNOWN = "arn:aws:lambda:us-east-1:123456789012:function:nope:$LATEST/durable-execution/none/0000"


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


@pytest.fixture(scope="module")
def function(lam: Any) -> str:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, CALLBACK, timeout=30, DurableConfig={"ExecutionTimeout": 600})
    return name


@pytest.fixture
def cli(local_stack: Any, function: str) -> Any:
    """``cli(*args)`` -> click Result; the command's Session is on ``local_stack`` with the
    default durable.api (auto: the local service has the API)."""
    env = {"LAMBDARUN_TARGET": "local", "LAMBDARUN_LOCAL__STATE_DIR": str(local_stack.state_dir),
           "LAMBDARUN_DURABLE__FUNCTION_NAME": function, "LAMBDARUN_DURABLE__API": None,
           "LAMBDARUN_DURABLE__STORE_URL": None}
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(durable_cli, list(args), env=env)

    return invoke


def start(lam: Any, function: str, order: str, **kw: Any) -> str:
    out = lam.invoke(FunctionName=function, Qualifier="$LATEST", InvocationType="Event",
                     Payload=json.dumps({"order": order}).encode(), **kw)
    return out["DurableExecutionArn"]


def history(lam: Any, arn: str) -> list[dict[str, Any]]:
    return lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True)["Events"]


def invocations(lam: Any, arn: str) -> int:
    return sum(e["EventType"] == "InvocationCompleted" for e in history(lam, arn))


def callback_id(lam: Any, arn: str) -> str:
    """The callback's id once the invocation that created it has ended (then nothing moves)."""
    cid = wait_for(lambda: next((e["CallbackStartedDetails"]["CallbackId"] for e in history(lam, arn)
                                 if e["EventType"] == "CallbackStarted"), None), "CallbackStarted")
    wait_for(lambda: invocations(lam, arn) >= 1, "the invocation's end")
    return cid


def status(lam: Any, arn: str) -> str:
    return lam.get_durable_execution(DurableExecutionArn=arn)["Status"]


def ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def refused(result: Any, *words: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    for word in words:
        assert word in result.output, (word, result.output)
    return result.output


@pytest.fixture
def waiting(lam: Any, function: str) -> Any:
    """An execution waiting for its callback: (arn, callback id); stopped afterwards if still running."""
    arn = start(lam, function, f"o-{uuid.uuid4().hex[:6]}")
    cid = callback_id(lam, arn)
    yield arn, cid
    try:
        if status(lam, arn) in ("RUNNING", "PAUSED", "PAUSING"):
            lam.stop_durable_execution(DurableExecutionArn=arn)
    except lam.exceptions.ResourceNotFoundException:
        pass  # the test deleted it


# --------------------------------------------------------------------------- read

def test_describe_and_history(cli, lam, waiting):
    arn, cid = waiting
    desc = ok(cli("describe", arn))
    assert desc["DurableExecutionArn"] == arn and desc["Status"] == "RUNNING"
    assert json.loads(desc["InputPayload"])["order"].startswith("o-")
    assert "InputPayload" not in ok(cli("describe", arn, "--no-data"))

    events = ok(cli("history", arn))["Events"]
    assert events == json.loads(json.dumps(history(lam, arn), default=lambda o: o.isoformat()))
    assert events[0]["EventType"] == "ExecutionStarted"
    assert any(e["EventType"] == "CallbackStarted" and e["CallbackStartedDetails"]["CallbackId"] == cid for e in events)
    newest = ok(cli("history", arn, "--reverse"))["Events"]
    assert [e["EventId"] for e in newest] == [e["EventId"] for e in reversed(events)]
    first = ok(cli("history", arn, "--max-items", "2"))
    assert [e["EventId"] for e in first["Events"]] == [e["EventId"] for e in events[:2]] and first["NextToken"]
    rest = ok(cli("history", arn, "--starting-token", first["NextToken"]))
    assert [e["EventId"] for e in rest["Events"]] == [e["EventId"] for e in events[2:]]
    # a token that is no page's: the service's own refusal
    refused(cli("history", arn, "--starting-token", "garbage"), "InvalidParameterValueException", "Marker")


def test_read_commands_on_an_unknown_or_malformed_arn(cli):
    for command in ("describe", "history"):
        refused(cli(command, UNKNOWN), "ResourceNotFoundException", "Not found", UNKNOWN)
        # botocore's model bounds the ARN: refused before anything is sent
        refused(cli(command, "x" * 2000), "malformed")
    refused(cli("history", UNKNOWN, "--max-items", "0"), "--max-items", code=2)


def test_list_filters_and_pages(cli, lam, function):
    first = start(lam, function, "list-1", DurableExecutionName=f"first-{uuid.uuid4().hex[:6]}")
    second = start(lam, function, "list-2")
    callback_id(lam, first)
    callback_id(lam, second)
    lam.stop_durable_execution(DurableExecutionArn=first)

    everything = ok(cli("list"))["DurableExecutions"]  # default: the durable.function_name
    arns = [e["DurableExecutionArn"] for e in everything]
    assert arns.index(first) < arns.index(second)
    assert {"DurableExecutionArn", "DurableExecutionName", "FunctionArn", "Status", "StartTimestamp"} <= set(everything[0])
    assert ok(cli("list", "--function", function)) == ok(cli("list"))

    running = ok(cli("list", "--status", "RUNNING"))["DurableExecutions"]
    assert second in [e["DurableExecutionArn"] for e in running] and first not in [e["DurableExecutionArn"] for e in running]
    both = ok(cli("list", "--status", "running,stopped"))["DurableExecutions"]
    assert {first, second} <= {e["DurableExecutionArn"] for e in both}
    name = lam.get_durable_execution(DurableExecutionArn=first)["DurableExecutionName"]
    assert [e["DurableExecutionArn"] for e in ok(cli("list", "--name", name))["DurableExecutions"]] == [first]
    assert ok(cli("list", "--started-after", str(time.time() + 3600)))["DurableExecutions"] == []
    assert ok(cli("list", "--started-before", "2000-01-01T00:00:00"))["DurableExecutions"] == []
    reverse = [e["DurableExecutionArn"] for e in ok(cli("list", "--reverse"))["DurableExecutions"]]
    assert reverse.index(second) < reverse.index(first)

    page = ok(cli("list", "--max-items", "1"))
    assert len(page["DurableExecutions"]) == 1 and page["NextToken"]
    rest = ok(cli("list", "--starting-token", page["NextToken"]))["DurableExecutions"]
    assert [e["DurableExecutionArn"] for e in page["DurableExecutions"] + rest] == arns
    refused(cli("list", "--starting-token", "garbage"), "InvalidParameterValueException", "Marker")


def test_list_refuses_unknown_functions_and_malformed_filters(cli):
    refused(cli("list", "--function", "no-such-function"), "ResourceNotFoundException", "no-such-function")
    refused(cli("list", "--status", "SLEEPING"), "unknown status SLEEPING", "RUNNING", code=2)
    refused(cli("list", "--started-after", "yesterday"), "not a timestamp", code=2)
    refused(cli("list", "--name", "spaces are not allowed"), "ValidationException", "malformed")


# --------------------------------------------------------------------------- act

def test_send_callback_success_completes_the_execution(cli, lam, waiting):
    arn, cid = waiting
    assert ok(cli("send-callback-success", cid, "alice")) == {}
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(ok(cli("describe", arn))["Result"])["approved"] == "alice"
    # a callback completes once
    refused(cli("send-callback-success", cid, "bob"), "InvalidParameterValueException", "already SUCCEEDED")


def test_send_callback_failure_and_heartbeat(cli, lam, waiting):
    arn, cid = waiting
    assert ok(cli("send-callback-heartbeat", cid)) == {}
    assert [e["EventType"] for e in history(lam, arn) if e["EventType"].startswith("Callback")] == ["CallbackStarted"]
    assert ok(cli("send-callback-failure", cid, "--message", "declined", "--type", "Refusal")) == {}
    wait_for(lambda: status(lam, arn) == "FAILED", "FAILED")
    failed = [e for e in history(lam, arn) if e["EventType"] == "CallbackFailed"]
    assert failed[0]["CallbackFailedDetails"]["Error"]["Payload"]["ErrorMessage"] == "declined"


def test_callback_commands_on_unknown_or_malformed_ids(cli, lam, waiting):
    arn, _cid = waiting
    before = history(lam, arn)
    for command in ("send-callback-success", "send-callback-failure", "send-callback-heartbeat"):
        refused(cli(command, "bm9wZQ"), "ResourceNotFoundException", "bm9wZQ")
        refused(cli(command, "not base64!"), "ValidationException", "malformed")
    assert history(lam, arn) == before and status(lam, arn) == "RUNNING"


def test_stop(cli, lam, waiting):
    arn, _cid = waiting
    out = ok(cli("stop", arn, "--message", "by the CLI", "--type", "Operator"))
    assert out["StopTimestamp"]
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "STOPPED" and desc["Error"] == {"ErrorMessage": "by the CLI", "ErrorType": "Operator"}
    refused(cli("stop", arn), "ResourceConflictException", "already ended", "lambdarun durable describe")
    refused(cli("stop", UNKNOWN), "ResourceNotFoundException")
    refused(cli("stop", "arn:nope"), "ValidationException", "malformed")


def test_pause_resume(cli, lam, waiting):
    arn, cid = waiting
    assert ok(cli("pause", arn, "--reason", "maintenance")) == {}
    assert status(lam, arn) == "PAUSED"
    # a callback completed while paused starts no invocation until resume
    lam.send_durable_execution_callback_success(CallbackId=cid, Result=b"carol")
    runs = invocations(lam, arn)
    assert status(lam, arn) == "PAUSED" and invocations(lam, arn) == runs
    assert ok(cli("resume", arn)) == {}
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    refused(cli("resume", arn), "ResourceConflictException", "not paused")
    refused(cli("pause", arn), "ResourceConflictException", "already ended")
    for command in ("pause", "resume"):
        refused(cli(command, UNKNOWN), "ResourceNotFoundException")
        refused(cli(command, "x" * 2000), "malformed")


def test_delete(cli, lam, waiting):
    arn, _cid = waiting
    refused(cli("delete", arn), "ResourceConflictException", "stop it before deleting it")
    assert status(lam, arn) == "RUNNING"
    ok(cli("stop", arn))
    assert ok(cli("delete", arn))["DeletionRequestTimestamp"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_durable_execution(DurableExecutionArn=arn)
    refused(cli("delete", arn), "ResourceNotFoundException")
    refused(cli("delete", "x" * 2000), "malformed")


def test_orchestrator_setting_reads_the_store_instead(cli, local_stack, tmp_path, waiting):
    """durable.api = orchestrator: the same commands read the orchestrator's store, where this
    API execution does not exist; pause needs the API."""
    arn, _cid = waiting
    runner = CliRunner()
    env = {"LAMBDARUN_TARGET": "local", "LAMBDARUN_LOCAL__STATE_DIR": str(local_stack.state_dir),
           "LAMBDARUN_DURABLE__API": "orchestrator", "LAMBDARUN_DURABLE__STORE_URL": f"sqlite:///{tmp_path}/d.db"}
    refused(runner.invoke(durable_cli, ["describe", arn], env=env), "No durable execution", f"{tmp_path}/d.db")
    refused(runner.invoke(durable_cli, ["pause", arn], env=env), "needs a durable-execution API")
    assert ok(runner.invoke(durable_cli, ["list"], env=env)) == {"DurableExecutions": []}
    assert ok(cli("describe", arn))["Status"] == "RUNNING"


def test_the_aws_target_reaches_the_same_api(local_stack, lam, waiting, tmp_path):
    """target = "aws" (boto3 with an endpoint and a credentials file, as for AWS itself)
    pointed at the local service: the same commands, the same answers."""
    arn, _cid = waiting
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {local_stack.credentials.access_key_id}\n"
                     f"aws_secret_access_key = {local_stack.credentials.secret_access_key}\n")
    creds.chmod(0o600)
    env = {"LAMBDARUN_TARGET": "aws", "LAMBDARUN_REGION": "us-east-1",
           "LAMBDARUN_AWS__LAMBDA_ENDPOINT_URL": local_stack.lambda_url,
           "LAMBDARUN_AWS__CREDENTIALS_FILE": str(creds), "LAMBDARUN_DURABLE__API": "api"}
    runner = CliRunner()
    assert ok(runner.invoke(durable_cli, ["describe", arn], env=env))["Status"] == "RUNNING"
    assert ok(runner.invoke(durable_cli, ["stop", arn], env=env))["StopTimestamp"]
    assert status(lam, arn) == "STOPPED"
    # nothing listens there: a clear error, not a traceback
    down = {**env, "LAMBDARUN_AWS__LAMBDA_ENDPOINT_URL": "http://127.0.0.1:9"}
    refused(runner.invoke(durable_cli, ["describe", arn], env=down), "did not answer", "http://127.0.0.1:9")
