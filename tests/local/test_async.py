"""Asynchronous (Event) invocations: queued, retried on function error, never lost."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(60)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_event_invocation_is_queued_and_runs(lam: Any, make_function: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = make_function(f"""
        def handler(event, context):
            with open({str(out)!r}, "a") as f:
                f.write(event["id"] + " " + context.aws_request_id + "\\n")
    """)
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": "a"}))
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    request_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    wait_for(lambda: len(lines(out)) == 1)
    assert lines(out) == [f"a {request_id}"]


def test_function_errors_are_retried_twice_then_logged(lam: Any, make_function: Any, tmp_path: Path,
                                                        local_stack: Any) -> None:
    attempts = tmp_path / "attempts"
    name = make_function(f"""
        def handler(event, context):
            with open({str(attempts)!r}, "a") as f:
                f.write(context.aws_request_id + "\\n")
            raise RuntimeError("always fails")
    """)
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    request_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    failures = local_stack.run_dir / "logs" / name / "async-failures.jsonl"
    wait_for(lambda: lines(failures))  # the record is written just after the file is created
    assert lines(attempts) == [request_id] * 3  # first attempt + 2 retries, same request id
    record = json.loads(lines(failures)[0])  # the shape of Lambda's on-failure destination record
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "RuntimeError"


def test_retry_succeeds_after_transient_failure(lam: Any, make_function: Any, tmp_path: Path,
                                                events_decided: Any) -> None:
    attempts = tmp_path / "attempts"
    name = make_function(f"""
        import os
        def handler(event, context):
            with open({str(attempts)!r}, "a") as f:
                f.write("x\\n")
            if len(open({str(attempts)!r}).read().splitlines()) < 2:
                raise RuntimeError("transient")
            return "ok"
    """)
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    request_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    (record,) = events_decided(name)  # run, retried once, decided: nothing more will run
    assert (record["request_id"], record["status"], record["attempts"]) == (request_id, "succeeded", 2)
    assert len(lines(attempts)) == 2  # succeeded on the retry, no third attempt


def test_killed_environment_loses_no_queued_event(lam: Any, make_function: Any, tmp_path: Path) -> None:
    started, done = tmp_path / "started", tmp_path / "done"
    name = make_function(f"""
        import os, time
        def handler(event, context):
            with open({str(started)!r}, "a") as f:
                f.write(f"{{event['id']}} {{os.getpid()}}\\n")
            time.sleep(0.2)
            with open({str(done)!r}, "a") as f:
                f.write(event["id"] + "\\n")
    """, timeout=10)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    ids = [str(i) for i in range(6)]
    for i in ids:
        assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": i}))["StatusCode"] == 202
    wait_for(lambda: len(lines(started)) >= 1)
    victim = int(lines(started)[0].split()[1])
    os.kill(victim, signal.SIGKILL)  # the environment dies mid-invocation
    wait_for(lambda: set(lines(done)) == set(ids))
    pids = {int(line.split()[1]) for line in lines(started)}
    assert len(pids) >= 2  # a fresh environment took over after the kill


@pytest.mark.timeout(30)
def test_events_wait_for_capacity_instead_of_throttling(lam: Any, make_function: Any, tmp_path: Path) -> None:
    done = tmp_path / "done"
    name = make_function(f"""
        import time
        def handler(event, context):
            time.sleep(0.05)
            with open({str(done)!r}, "a") as f:
                f.write(str(event["i"]) + "\\n")
    """)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    for i in range(10):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"i": i}))
    wait_for(lambda: len(lines(done)) == 10)
    assert sorted(map(int, lines(done))) == list(range(10))


def test_event_invoke_config_limits_retries(lam: Any, make_function: Any, tmp_path: Path,
                                             local_stack: Any) -> None:
    attempts = tmp_path / "attempts"
    name = make_function(f"""
        def handler(event, context):
            with open({str(attempts)!r}, "a") as f:
                f.write("x\\n")
            raise RuntimeError("fails")
    """)
    cfg = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert cfg["MaximumRetryAttempts"] == 0
    assert lam.get_function_event_invoke_config(FunctionName=name)["MaximumRetryAttempts"] == 0
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    failures = local_stack.run_dir / "logs" / name / "async-failures.jsonl"
    wait_for(lambda: lines(failures))  # the record is written just after the file is created
    assert len(lines(attempts)) == 1
    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)


def test_destinations_on_failure_sqs_and_on_success_lambda(lam: Any, make_function: Any, tmp_path: Path,
                                                           local_stack: Any) -> None:
    sqs = local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName="lambda-failures")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    received = tmp_path / "received"
    sink = make_function(f"""
        import json
        def handler(event, context):
            with open({str(received)!r}, "a") as f:
                f.write(json.dumps(event) + "\\n")
    """)
    sink_arn = lam.get_function(FunctionName=sink)["Configuration"]["FunctionArn"]
    name = make_function("""
        def handler(event, context):
            if event.get("fail"):
                raise ValueError("asked to fail")
            return {"ok": event["n"]}
    """)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0,
        DestinationConfig={"OnSuccess": {"Destination": sink_arn}, "OnFailure": {"Destination": queue_arn}},
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 7}))
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"fail": True}))
    wait_for(lambda: len(lines(received)) == 1)
    success = json.loads(lines(received)[0])
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestPayload"] == {"n": 7} and success["responsePayload"] == {"ok": 7}
    messages: list[Any] = []
    deadline = time.monotonic() + 20
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
    failure = json.loads(messages[0]["Body"])
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestPayload"] == {"fail": True}
    assert failure["responsePayload"]["errorMessage"] == "asked to fail"
