"""The read-only extension API (/_lambdarun/functions, /_lambdarun/invocations[/{id}])."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from lambdarun.local.auth import signed_request
from lambdarun.local.service import LambdaService, ServiceOptions
from lambdarun.local.testing import create_function

pytestmark = pytest.mark.timeout(60)

SOURCE = """
import os, time

def handler(event, context):
    print("log line of", context.aws_request_id)
    kind = event.get("kind")
    if kind == "raise":
        raise ValueError("failed on purpose")
    if kind == "sleep":
        time.sleep(event["seconds"])
    if kind == "exit":
        os._exit(3)
    if kind == "big":
        return "y" * 10000
    if kind == "chatty":
        for i in range(event["lines"]):
            print(f"line {i:06d} " + "z" * 90)
    return {"ok": True}
"""


def get(base: Any, path: str, **query: Any) -> tuple[int, Any]:
    """A signed GET of ``path`` on ``base`` (a LocalStack or a LambdaService)."""
    if isinstance(base, LambdaService):
        root, credentials = base.url, base.options.credentials
    else:
        root, credentials = base.endpoints.lambda_, base.credentials
    params = {k: v for k, v in query.items() if v is not None}
    url = root + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(signed_request(url, credentials), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def base(local_stack: Any) -> Any:
    return local_stack


def invoke(lam: Any, name: str, event: dict[str, Any], **kwargs: Any) -> tuple[str, dict[str, Any]]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event), **kwargs)
    resp["Payload"].read()
    return resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"], resp


def record(base: str, function: str, request_id: str) -> dict[str, Any]:
    status, doc = get(base, "/_lambdarun/invocations", function=function, limit=1000)
    assert status == 200
    matches = [r for r in doc["invocations"] if r["request_id"] == request_id]
    assert len(matches) == 1, doc
    return matches[0]


def test_functions_view_shows_environments_and_their_states(lam: Any, make_function: Any, base: str,
                                                            tmp_path: Path) -> None:
    name = make_function(SOURCE, timeout=30, memory_size=256)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    invoke(lam, name, {})
    status, doc = get(base, "/_lambdarun/functions")
    assert status == 200
    fn = next(f for f in doc["functions"] if f["name"] == name)
    assert {k: fn[k] for k in ("handler", "runtime", "timeout", "memory_size", "reserved_concurrency",
                               "concurrency_in_use", "code")} == {
        "handler": "app.handler", "runtime": "python3.11", "timeout": 30, "memory_size": 256,
        "reserved_concurrency": 3, "concurrency_in_use": 0, "code": "zip"}
    assert fn["events"] == {"queued": 0, "retrying": 0, "workers": 0}
    [env] = fn["environments"]
    assert env["state"] == "warm" and env["invocations"] == 1 and env["pid"] > 0
    assert set(env) == {"id", "pid", "state", "started_at", "invocations"}
    assert abs(env["started_at"] - time.time()) < 60
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(invoke, lam, name, {"kind": "sleep", "seconds": 1.5})
        deadline = time.monotonic() + 10
        while True:
            fn = next(f for f in get(base, "/_lambdarun/functions")[1]["functions"] if f["name"] == name)
            if fn["concurrency_in_use"] == 1:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [e["state"] for e in fn["environments"]] == ["busy"]
        busy.result()
    # a local-directory function says so
    (tmp_path / "app.py").write_text(SOURCE)
    lam.create_function(FunctionName="ext-dir", Runtime="python3.11", Role="arn:aws:iam::123456789012:role/x",
                        Handler="app.handler", Code={"S3Bucket": "__local__", "S3Key": str(tmp_path)})
    try:
        fn = next(f for f in get(base, "/_lambdarun/functions")[1]["functions"] if f["name"] == "ext-dir")
        assert fn["code"] == "directory" and fn["environments"] == [] and fn["reserved_concurrency"] is None
    finally:
        lam.delete_function(FunctionName="ext-dir")


def test_invocation_records_of_every_outcome(lam: Any, make_function: Any, base: str) -> None:
    name = make_function(SOURCE, timeout=1)
    ok, _ = invoke(lam, name, {})
    failed, _ = invoke(lam, name, {"kind": "raise"})
    timed_out, _ = invoke(lam, name, {"kind": "sleep", "seconds": 5})
    crashed, _ = invoke(lam, name, {"kind": "exit"})
    first = record(base, name, ok)
    assert set(first) == {"seq", "request_id", "function", "type", "status", "started_at", "duration_ms",
                          "billed_ms", "init_duration_ms", "error_type", "error_message", "attempts"}
    assert (first["function"], first["type"], first["status"]) == (name, "RequestResponse", "succeeded")
    assert first["duration_ms"] > 0 and first["billed_ms"] >= 1 and first["init_duration_ms"] > 0
    assert first["error_type"] is None
    assert record(base, name, failed)["init_duration_ms"] is None  # warm
    assert (record(base, name, failed)["status"], record(base, name, failed)["error_type"]) == ("failed", "ValueError")
    assert record(base, name, failed)["error_message"] == "failed on purpose"
    assert (record(base, name, timed_out)["status"], record(base, name, timed_out)["error_type"]) == (
        "timeout", "Sandbox.Timedout")
    assert (record(base, name, crashed)["status"], record(base, name, crashed)["error_type"]) == (
        "crashed", "Runtime.ExitError")
    # newest first, seq increasing with time
    status, doc = get(base, "/_lambdarun/invocations", function=name)
    assert [r["request_id"] for r in doc["invocations"]] == [crashed, timed_out, failed, ok]
    assert doc["next_before"] is None
    # filters
    assert [r["request_id"] for r in get(base, "/_lambdarun/invocations", function=name,
                                         status="failed")[1]["invocations"]] == [failed]


def test_throttled_and_event_invocations(lam: Any, make_function: Any, base: str) -> None:
    name = make_function(SOURCE)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=name, Payload=b"{}")
    [throttled] = get(base, "/_lambdarun/invocations", function=name)[1]["invocations"]
    assert (throttled["status"], throttled["error_type"]) == ("throttled", "TooManyRequestsException")
    # an Event of a function with reserved concurrency 0 is not run: AWS sends it to the
    # on-failure destination (see tests/local/test_async_parallel.py)
    request_id, resp = invoke(lam, name, {}, InvocationType="Event")
    assert resp["StatusCode"] == 202
    deadline = time.monotonic() + 10
    while (rec := record(base, name, request_id))["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (rec["type"], rec["status"], rec["error_type"], rec["attempts"]) == (
        "Event", "throttled", "ZeroReservedConcurrency", 0)
    # once the limit is lifted, Events run
    lam.delete_function_concurrency(FunctionName=name)
    request_id, _ = invoke(lam, name, {}, InvocationType="Event")
    while record(base, name, request_id)["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert record(base, name, request_id)["attempts"] == 1


def test_failed_event_retries_show_on_one_record(lam: Any, make_function: Any, base: str) -> None:
    name = make_function(SOURCE)  # the stack retries twice after 0.1 s
    request_id, _ = invoke(lam, name, {"kind": "raise"}, InvocationType="Event")
    deadline = time.monotonic() + 10
    while (rec := record(base, name, request_id))["attempts"] < 3 or rec["status"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert rec["error_type"] == "ValueError"


def test_invocation_detail_has_log_error_and_response_preview(lam: Any, make_function: Any, base: str) -> None:
    name = make_function(SOURCE)
    invoke(lam, name, {})  # an earlier invocation in the same log file
    failed, _ = invoke(lam, name, {"kind": "raise"})
    big, _ = invoke(lam, name, {"kind": "big"})
    invoke(lam, name, {})  # and a later one
    status, doc = get(base, f"/_lambdarun/invocations/{failed}")
    assert status == 200
    assert doc["request_id"] == failed and doc["status"] == "failed"
    log = doc["log"]
    assert log.startswith(f"START RequestId: {failed} Version: $LATEST\n")
    assert f"log line of {failed}" in log
    assert f"END RequestId: {failed}\n" in log and log.rstrip().splitlines()[-1].startswith(f"REPORT RequestId: {failed}")
    assert log.count("START RequestId") == 1  # only this invocation's part of the log
    assert doc["error"]["errorType"] == "ValueError" and doc["error"]["requestId"] == failed
    assert any("failed on purpose" in line or "raise ValueError" in line for line in doc["error"]["stackTrace"])
    assert json.loads(doc["response_preview"])["errorMessage"] == "failed on purpose"
    status, doc = get(base, f"/_lambdarun/invocations/{big}")
    assert doc["error"] is None
    assert doc["response_preview"] == ('"' + "y" * 10000 + '"')[:4096]
    assert get(base, "/_lambdarun/invocations/no-such-request")[0] == 404


def test_a_long_log_is_cut_at_its_report_line(lam: Any, make_function: Any, base: str) -> None:
    name = make_function(SOURCE)
    chatty, _ = invoke(lam, name, {"kind": "chatty", "lines": 2000})  # ~200 KB of log
    later, _ = invoke(lam, name, {"kind": "chatty", "lines": 10})
    log = get(base, f"/_lambdarun/invocations/{chatty}")[1]["log"]
    assert log.startswith(f"START RequestId: {chatty}") and "line 001999 " in log
    assert log.splitlines()[-1].startswith(f"REPORT RequestId: {chatty}") and log.endswith("\n")
    assert later not in log
    assert get(base, f"/_lambdarun/invocations/{later}")[1]["log"].count("line 0000") == 10


def test_paging_with_before(lam: Any, make_function: Any, base: str) -> None:
    name = make_function(SOURCE)
    ids = [invoke(lam, name, {})[0] for _ in range(5)]
    seen: list[str] = []
    before = None
    while True:
        status, doc = get(base, "/_lambdarun/invocations", function=name, limit=2, before=before)
        assert status == 200 and len(doc["invocations"]) <= 2
        seen += [r["request_id"] for r in doc["invocations"]]
        before = doc["next_before"]
        if before is None:
            break
        assert before == doc["invocations"][-1]["seq"]
    assert seen == ids[::-1]
    assert get(base, "/_lambdarun/invocations", limit=0)[0] == 400
    assert get(base, "/_lambdarun/invocations", status="exploded")[0] == 400


def test_only_the_last_records_are_kept(tmp_path: Path) -> None:
    service = LambdaService(ServiceOptions(state_dir=tmp_path, record_limit=3)).start()
    try:
        lam = boto3.session.Session(**service.options.credentials.boto3_kwargs(),
                                    region_name="us-east-1").client(
            "lambda", endpoint_url=service.url, config=Config(retries={"total_max_attempts": 1}))
        create_function(lam, "kept", SOURCE)
        ids = [invoke(lam, "kept", {})[0] for _ in range(5)]
        status, doc = get(service, "/_lambdarun/invocations")
        assert [r["request_id"] for r in doc["invocations"]] == ids[:1:-1]
        assert get(service, f"/_lambdarun/invocations/{ids[0]}")[0] == 404
        lam.close()
    finally:
        service.stop()


@pytest.mark.parametrize("path", ["/_lambdarun/functions", "/_lambdarun/invocations",
                                  "/2015-03-31/functions"])
def test_requests_for_another_host_are_refused(local_stack: Any, path: str) -> None:
    url = urllib.parse.urlsplit(local_stack.endpoints.lambda_)
    for host, expected in ((f"evil.example:{url.port}", 403), (f"localhost:{url.port}", 200),
                           (f"127.0.0.1:{url.port}", 200)):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        signed = signed_request(f"http://{host}{path}", local_stack.credentials)
        try:
            conn.request("GET", path, headers={**dict(signed.header_items()), "Host": host})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == expected, (host, body)
        if expected == 403:
            assert resp.getheader("X-Amzn-ErrorType") == "AccessDeniedException"
