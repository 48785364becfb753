"""Event invocations run in parallel up to the function's concurrency, as Lambda runs its
asynchronous queue; a function with reserved concurrency 0 runs none of them and sends each
straight to its on-failure destination.

AWS docs: "How Lambda handles errors and retries with asynchronous invocation",
https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html; "Capturing
records of Lambda asynchronous invocations" (the note on reserved concurrency zero),
https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lambdarun.testing import wait_for


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []

RECORD_TIMES = """
import json, os, time
def handler(event, context):
    started = time.time()
    while not os.path.exists(event["release"]) and time.time() < started + 20:
        time.sleep(0.01)
    with open(event["out"], "a") as f:
        f.write(json.dumps({"i": event["i"], "start": started, "end": time.time()}) + "\\n")
"""


@pytest.mark.timeout(60)
def test_two_events_run_in_parallel(lam: Any, make_function: Any, tmp_path: Path,
                                    events_decided: Any) -> None:
    out, release = tmp_path / "out", tmp_path / "release"
    started = tmp_path / "started"
    name = make_function(RECORD_TIMES.replace(
        "    started = time.time()\n",
        f"    started = time.time()\n    open({str(started)!r} + str(event['i']), 'w').close()\n",
    ), timeout=30)
    for i in range(2):
        lam.invoke(FunctionName=name, InvocationType="Event",
                   Payload=json.dumps({"i": i, "out": str(out), "release": str(release)}))
        if i == 0:
            wait_for(lambda: Path(f"{started}0").exists())
            time.sleep(0.3)  # the second event is sent 0.3 s after the first started
    # the first holds its environment until released: the second can only start in parallel
    wait_for(lambda: Path(f"{started}1").exists())
    release.touch()
    wait_for(lambda: len(lines(out)) == 2)
    first, second = sorted((json.loads(line) for line in lines(out)), key=lambda d: d["i"])
    assert second["start"] < first["end"]
    records = events_decided(name)
    assert {r["status"] for r in records} == {"succeeded"}


@pytest.mark.timeout(60)
def test_events_in_parallel_stay_within_reserved_concurrency(lam: Any, make_function: Any, tmp_path: Path,
                                                             events_decided: Any) -> None:
    out, release = tmp_path / "out", tmp_path / "release"
    running = tmp_path / "running"
    name = make_function(f"""
        import json, os, time
        def handler(event, context):
            with open({str(running)!r}, "a") as f:
                f.write(str(event["i"]) + "\\n")
            while not os.path.exists({str(release)!r}):
                time.sleep(0.01)
            with open({str(out)!r}, "a") as f:
                f.write(str(event["i"]) + "\\n")
    """, timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    for i in range(5):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"i": i}))
    wait_for(lambda: len(lines(running)) == 2)
    time.sleep(0.5)  # nothing should start beyond the reserved 2 while they hold their slots
    assert len(lines(running)) == 2
    release.touch()
    wait_for(lambda: len(lines(out)) == 5)
    assert sorted(map(int, lines(out))) == list(range(5))
    events_decided(name)


@pytest.mark.timeout(60)
def test_reserved_concurrency_zero_sends_events_to_on_failure_destination(
        lam: Any, make_function: Any, tmp_path: Path, local_stack: Any, events_decided: Any) -> None:
    sqs = local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName="zero-reserved-failures")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    marker = tmp_path / "ran"
    name = make_function(f"""
        def handler(event, context):
            open({str(marker)!r} + str(event["n"]), "w").close()
            return "ran"
    """)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={
        "OnFailure": {"Destination": queue_arn}})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 1}))
    assert r["StatusCode"] == 202  # accepted, as on AWS
    request_id = r["ResponseMetadata"]["RequestId"]
    messages: list[Any] = []
    deadline = time.monotonic() + 20
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
    assert messages, "no record reached the on-failure destination"
    record = json.loads(messages[0]["Body"])
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == {"n": 1}
    assert "responsePayload" not in record and "responseContext" not in record
    (rec,) = events_decided(name)
    assert rec["status"] == "throttled"
    # lifting the limit does not run the dropped event; new events run again
    lam.delete_function_concurrency(FunctionName=name)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 2}))
    wait_for(lambda: Path(f"{marker}2").exists())
    events_decided(name)
    assert not Path(f"{marker}1").exists()
