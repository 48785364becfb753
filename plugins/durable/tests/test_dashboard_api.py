"""The dashboard's durable page through the durable-execution API of the real local Lambda
service (its HTTP server, plain HTTP requests): listing a function's executions, an
execution's timeline, and the write actions (complete a callback, stop, pause, resume).
Forged, tokenless, cross-origin and rebinding requests change nothing: the execution stays
RUNNING and its callback open."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import lambdarun_durable.plugin
from lambdarun.dashboard import DashboardServer, serve
from lambdarun.local.testing import create_function, local_stack_fixture
from lambdarun.testing import wait_for

pytestmark = pytest.mark.timeout(120)

local_stack = local_stack_fixture(scope="module", idle_timeout=60)

CALLBACK = '''
from aws_durable_execution_sdk_python import durable_execution
from aws_durable_execution_sdk_python.config import CallbackConfig, Duration

@durable_execution
def handler(event, context):
    context.step(lambda _: "charged", name="charge")
    cb = context.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_seconds(300)))
    return {"approved": cb.result()}
'''


@pytest.fixture(scope="module")
def lam(local_stack: Any) -> Any:
    return local_stack.client("lambda")


@pytest.fixture(scope="module")
def function(lam: Any) -> str:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    create_function(lam, name, CALLBACK, timeout=30, DurableConfig={"ExecutionTimeout": 600})
    return name


@pytest.fixture
def dashboard(lambdarun_session: Any, local_stack: Any, function: str, tmp_path: Any) -> Iterator[DashboardServer]:
    session = lambdarun_session(lambdarun_durable.plugin, overrides={
        "target": "local", "progress": False, "local": {"state_dir": str(local_stack.state_dir)},
        "dashboard": {"journal_path": str(tmp_path / "journal.db"), "refresh": 0.5},
        "durable": {"function_name": function, "store_url": f"sqlite:///{tmp_path}/unused.db"},  # api: auto
    })
    server = serve(session)
    try:
        yield server
    finally:
        server.stop()


def history(lam: Any, arn: str) -> list[dict[str, Any]]:
    return lam.get_durable_execution_history(DurableExecutionArn=arn)["Events"]


def status(lam: Any, arn: str) -> str:
    return lam.get_durable_execution(DurableExecutionArn=arn)["Status"]


def waiting_execution(lam: Any, function: str) -> tuple[str, str]:
    """An execution whose first invocation ended waiting for its callback: (arn, callback id)."""
    arn = lam.invoke(FunctionName=function, Qualifier="$LATEST", InvocationType="Event",
                     Payload=b'{"order": "o-7"}')["DurableExecutionArn"]
    cid = wait_for(lambda: next((e["CallbackStartedDetails"]["CallbackId"] for e in history(lam, arn)
                                 if e["EventType"] == "CallbackStarted"), None), "CallbackStarted")
    wait_for(lambda: any(e["EventType"] == "InvocationCompleted" for e in history(lam, arn)), "the invocation's end")
    return arn, cid


def get(dashboard: DashboardServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{dashboard.port}", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def post(dashboard: DashboardServer, path: str, form: dict[str, str], headers: dict[str, str] | None = None,
         host: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    try:
        conn.request("POST", path, body=urllib.parse.urlencode(form), headers={
            "Host": host or f"127.0.0.1:{dashboard.port}", "Content-Type": "application/x-www-form-urlencoded",
            **(headers or {}),
        })
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def detail_path(arn: str) -> str:
    return "/durable/execution?arn=" + urllib.parse.quote(arn, safe="")


def test_list_and_timeline_read_through_the_api(dashboard, lam, function):
    arn, cid = waiting_execution(lam, function)
    code, page = get(dashboard, "/durable/")
    assert code == 200 and f'data-arn="{arn}"' in page and f"function {function}" in page
    assert re.search(rf'data-arn="{re.escape(arn)}" data-status="RUNNING"', page)
    code, page = get(dashboard, f"/durable/?function={function}&status=RUNNING")
    assert code == 200 and f'data-arn="{arn}"' in page
    code, page = get(dashboard, f"/durable/?function={function}&status=SUCCEEDED")
    assert code == 200 and f'data-arn="{arn}"' not in page
    code, page = get(dashboard, "/durable/?function=no-such-function")
    assert code == 200 and "ResourceNotFoundException" in page  # said on the page
    assert get(dashboard, "/durable/?status=SLEEPING")[0] == 400

    code, page = get(dashboard, detail_path(arn))
    assert code == 200
    assert 'data-op="charge" data-kind="step" data-status="SUCCEEDED"' in page
    assert 'data-op="approval" data-kind="callback" data-status="STARTED"' in page
    assert f'name="callback_id" value="{cid}"' in page
    assert 'data-action="stop"' in page and 'data-action="pause"' in page and 'data-action="resume"' not in page
    assert re.search(r'<pre id="execution-input">[^<]*o-7', page)  # the input
    lam.stop_durable_execution(DurableExecutionArn=arn)


def test_unknown_and_malformed_executions(dashboard):
    unknown = "arn:aws:lambda:us-east-1:123456789012:function:nope:$LATEST/durable-execution/none/0000"
    code, page = get(dashboard, detail_path(unknown))
    assert code == 404 and "ResourceNotFoundException" in page
    assert get(dashboard, detail_path("x" * 2000))[0] == 400
    for action in ("stop", "pause", "resume"):
        assert post(dashboard, f"/durable/{action}", {"arn": unknown, "token": dashboard.token})[0] == 404
        assert post(dashboard, f"/durable/{action}", {"arn": "not-an-arn", "token": dashboard.token})[0] == 400
        assert post(dashboard, f"/durable/{action}", {"token": dashboard.token})[0] == 400
    assert post(dashboard, "/durable/callback", {"callback_id": "bm9wZQ", "arn": unknown,
                                                  "token": dashboard.token})[0] == 404


def test_forged_requests_stop_pause_and_complete_nothing(dashboard, lam, function):
    arn, cid = waiting_execution(lam, function)
    before = history(lam, arn)
    port = dashboard.port
    forms = {
        "/durable/stop": {"arn": arn},
        "/durable/pause": {"arn": arn},
        "/durable/resume": {"arn": arn},
        "/durable/callback": {"arn": arn, "callback_id": cid, "result": "mallory"},
    }
    for path, form in forms.items():
        # no token, a wrong token, an empty one
        assert post(dashboard, path, form)[0] == 403, path
        assert post(dashboard, path, {**form, "token": "guess"})[0] == 403, path
        assert post(dashboard, path, {**form, "token": ""})[0] == 403, path
        # the right token from another origin (a page on a rebinding name, another port, a site)
        for origin in (f"http://rebound.test:{port}", f"http://127.0.0.1:{port + 1}", "https://evil.example", "null"):
            assert post(dashboard, path, {**form, "token": dashboard.token}, headers={"Origin": origin})[0] == 403, (path, origin)
        assert post(dashboard, path, {**form, "token": dashboard.token},
                    headers={"Sec-Fetch-Site": "cross-site"})[0] == 403, path
        # the right token through another Host (DNS rebinding)
        assert post(dashboard, path, {**form, "token": dashboard.token}, host=f"rebound.test:{port}")[0] == 403, path
        # never by GET
        assert get(dashboard, path + "?" + urllib.parse.urlencode(form),
                   headers={"X-Lambdarun-Token": dashboard.token})[0] == 405, path
    desc = lam.get_durable_execution(DurableExecutionArn=arn)
    assert desc["Status"] == "RUNNING"  # not stopped, not paused
    assert history(lam, arn) == before  # no callback completed, nothing recorded
    lam.stop_durable_execution(DurableExecutionArn=arn)


def test_write_actions_with_the_token(dashboard, lam, function):
    arn, cid = waiting_execution(lam, function)
    code, _ = post(dashboard, "/durable/pause", {"arn": arn, "token": dashboard.token})
    assert code == 303 and status(lam, arn) == "PAUSED"
    code, page = get(dashboard, detail_path(arn))
    assert 'data-action="resume"' in page and 'data-action="pause"' not in page
    # the callback completed while paused: nothing runs until resume
    code, _ = post(dashboard, "/durable/callback", {"arn": arn, "callback_id": cid, "result": "alice",
                                                    "token": dashboard.token})
    assert code == 303 and status(lam, arn) == "PAUSED"
    assert post(dashboard, "/durable/pause", {"arn": arn, "token": dashboard.token})[0] == 303  # pausing a paused execution changes nothing
    code, _ = post(dashboard, "/durable/resume", {"arn": arn, "token": dashboard.token})
    assert code == 303
    wait_for(lambda: status(lam, arn) == "SUCCEEDED", "SUCCEEDED")
    assert json.loads(lam.get_durable_execution(DurableExecutionArn=arn)["Result"]) == {"approved": "alice"}
    code, page = get(dashboard, detail_path(arn))
    assert "data-action=" not in page and "callback-form" not in page
    code, page = post(dashboard, "/durable/stop", {"arn": arn, "token": dashboard.token})
    assert code == 400 and "ResourceConflictException" in page

    other, _cid = waiting_execution(lam, function)
    code, _ = post(dashboard, "/durable/stop", {"arn": other, "token": dashboard.token})
    assert code == 303
    desc = lam.get_durable_execution(DurableExecutionArn=other)
    assert desc["Status"] == "STOPPED" and desc["Error"]["ErrorMessage"] == "Stopped from the dashboard"
