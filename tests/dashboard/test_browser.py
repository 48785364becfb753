"""The dashboard in headless Chromium, against the real local stack.

Scenario: a covalent ``map`` with a failing task and a durable execution with a wait, a
retried step, a child context and a callback; the browser finds each, reads the failure's
traceback and the timeline, and completes the callback, which resumes the execution.
"""

from __future__ import annotations

import http.client
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

import lambdarun
from lambdarun.dashboard import journal
from lambdarun.dashboard import DashboardServer
from lambdarun_durable import DurableContext, StepContext, durable_execution, durable_step
from lambdarun_durable.config import CallbackConfig, Duration, JitterStrategy, StepConfig
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy

pytestmark = pytest.mark.timeout(90)

# the functions below travel to Lambda by value (this test module is not importable there)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def shout(x: int) -> int:
    print(f"task {x} says hello")
    if x == 3:
        raise ValueError(f"task {x} refuses to run")
    return x * 10


def start_map(session: Any, func: Callable[..., Any], items: list[Any]) -> tuple[str, list[Any]]:
    """What ``lambdarun.map`` does once the lead wires the journal into lambdarun/api.py."""
    futures = list(session.backend("covalent").map(func, items, max_workers=4))
    batch_id = journal.record_batch(session, "covalent", func, futures)
    assert batch_id is not None
    return batch_id, futures


def test_map_with_failing_task_shows_traceback(
    make_session: Callable[..., Any], dashboard: DashboardServer, page: Any, screenshot: Callable[[str], Any]
) -> None:
    session = make_session()
    batch_id, futures = start_map(session, shout, list(range(6)))
    for future in futures:
        future.exception(timeout=60)
    assert journal.flush()

    page.goto(dashboard.url)
    page.click("nav >> text=Runs")
    row = page.locator(f"tr[data-batch='{batch_id}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "failed"
    assert "test_browser.shout" in row.inner_text()
    assert "6/6" in row.inner_text()
    screenshot("runs")

    row.locator("a").first.click()
    page.wait_for_selector("#tasks")
    assert page.inner_text("#count-failed") == "1"
    assert page.inner_text("#count-succeeded") == "5"
    failed = page.locator("tr[data-index='3']")
    assert failed.get_attribute("data-status") == "failed"
    assert "ValueError: task 3 refuses to run" in failed.inner_text()
    failed.locator("summary", has_text="traceback").click()
    traceback_text = failed.locator("pre.traceback").inner_text()
    assert "Traceback (most recent call last)" in traceback_text
    assert "in shout" in traceback_text and "ValueError: task 3 refuses to run" in traceback_text
    ok = page.locator("tr[data-index='2']")
    assert ok.get_attribute("data-status") == "succeeded"
    ok.locator("summary", has_text="stdout").click()
    assert "task 2 says hello" in ok.inner_text()
    screenshot("run-detail")

    failed.locator("a").first.click()
    page.wait_for_selector("#traceback")
    assert "ValueError" in page.inner_text("#error-type")
    assert "in shout" in page.inner_text("#traceback")
    assert "task 3 says hello" in page.inner_text("#stdout")
    screenshot("run-task")


def test_runs_page_updates_live(
    make_session: Callable[..., Any], dashboard: DashboardServer, page: Any
) -> None:
    """A run started while the page is open appears without a reload."""
    session = make_session()
    page.goto(dashboard.url + "runs/")
    page.wait_for_selector("#runs")
    page.evaluate("window.__marker = 'same page'")
    batch_id, futures = start_map(session, shout, [1, 2])
    for future in futures:
        future.result(timeout=60)
    journal.flush()
    page.locator(f"tr[data-batch='{batch_id}'][data-status='succeeded']").wait_for(timeout=15_000)
    assert page.evaluate("window.__marker") == "same page"  # updated in place, not reloaded


@durable_step
def charge(step_ctx: StepContext, order: str, cents: int) -> dict:
    return {"order": order, "charged": cents}


_RETRY = StepConfig(
    retry_strategy=create_retry_strategy(
        RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(1), jitter_strategy=JitterStrategy.NONE)
    )
)


@durable_execution
def order_workflow(event: dict, ctx: DurableContext) -> dict:
    receipt = ctx.step(charge(event["order"], event["cents"]), name="charge")
    ctx.wait(Duration.from_seconds(1), name="cool down")

    def reserve(step_ctx: StepContext) -> str:
        # fails on its first attempt: the retry shows on the timeline
        import os

        marker = os.path.join(event["tmp"], "reserved-once")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("warehouse busy")
        return "reserved"

    stock = ctx.step(reserve, name="reserve stock", config=_RETRY)
    packed = ctx.run_in_child_context(lambda child: child.step(lambda _: ["box-1"], name="pack"), name="packing")
    approval = ctx.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_minutes(5)))
    return {"receipt": receipt, "stock": stock, "packed": packed, "approved_by": approval.result()}


def _start_durable(session: Any, tmp_path: Any) -> tuple[Any, str]:
    future = lambdarun.submit(order_workflow, {"order": "o-1", "cents": 500, "tmp": str(tmp_path)},
                              backend="durable", session=session)
    arn = future.task_id
    backend = session.backend("durable")
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        events = backend.get_history(arn)["Events"]
        if any(e["EventType"] == "CallbackStarted" for e in events):
            return future, arn
        assert not future.done(), future.exception()
        time.sleep(0.05)
    raise AssertionError("the execution never reached its callback")


def test_durable_timeline_and_callback_from_page(
    make_session: Callable[..., Any], dashboard: DashboardServer, page: Any, screenshot: Callable[[str], Any],
    tmp_path: Any,
) -> None:
    session = make_session()
    future, arn = _start_durable(session, tmp_path)

    page.goto(dashboard.url_with_token)  # the printed URL: hands the browser the token
    page.click("nav >> text=Durable")
    row = page.locator(f"tr[data-arn='{arn}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "RUNNING"
    screenshot("durable")
    row.locator("a").click()
    page.wait_for_selector("#timeline")

    timeline = page.locator("#timeline")
    for name, kind, status in [
        ("charge", "step", "SUCCEEDED"),
        ("cool down", "wait", "SUCCEEDED"),
        ("reserve stock", "step", "SUCCEEDED"),
        ("packing", "context", "SUCCEEDED"),
        ("pack", "step", "SUCCEEDED"),
        ("approval", "callback", "STARTED"),
    ]:
        op = timeline.locator(f".tl-row[data-op='{name}']")
        assert op.get_attribute("data-kind") == kind, name
        assert op.get_attribute("data-status") == status, name
    assert "1 retry" in timeline.locator(".tl-row[data-op='reserve stock']").inner_text()
    names = timeline.locator(".tl-row").evaluate_all("rows => rows.map(r => r.dataset.op)")
    assert names == ["charge", "cool down", "reserve stock", "packing", "pack", "approval"]
    # inputs and outputs of a step, and the retried attempt's error
    charge_row = timeline.locator(".tl-row[data-op='charge']")
    charge_row.locator("summary").click()
    assert '"charged": 500' in charge_row.locator("pre.op-result").inner_text()
    reserve_row = timeline.locator(".tl-row[data-op='reserve stock']")
    reserve_row.locator("summary").click()
    assert "warehouse busy" in reserve_row.inner_text()
    assert '"o-1"' in page.inner_text("#execution-input")
    screenshot("durable-execution")

    form = page.locator("form[data-callback='approval']")
    form.locator("input[name=result]").fill("alice")
    form.locator("button").click()
    page.wait_for_selector("#flash")
    assert future.result(timeout=30) == {
        "receipt": {"order": "o-1", "charged": 500},
        "stock": "reserved",
        "packed": ["box-1"],
        "approved_by": "alice",
    }
    # the page follows the execution to its end by itself
    page.locator("#execution-status", has_text="SUCCEEDED").wait_for(timeout=15_000)
    page.locator(".tl-row[data-op='approval'][data-status='SUCCEEDED']").wait_for()
    assert "alice" in page.inner_text("#execution-result")
    assert page.locator("form[data-callback]").count() == 0
    screenshot("durable-execution-done")


def test_callback_refused_without_token(
    make_session: Callable[..., Any], dashboard: DashboardServer, page: Any, tmp_path: Any
) -> None:
    session = make_session()
    future, arn = _start_durable(session, tmp_path)
    detail = dashboard.url + "durable/execution?arn=" + urllib.parse.quote(arn, safe="")

    # a browser without the token: the form asks for it, and refuses without it
    page.goto(detail)
    form = page.locator("form[data-callback='approval']")
    assert form.locator("input[name=token][type=password]").count() == 1
    form.locator("input[name=result]").fill("mallory")
    form.locator("button").click()
    page.wait_for_selector("#error-message")
    assert "needs the dashboard token" in page.inner_text("#error-message")
    page.goto(detail)
    form.locator("input[name=result]").fill("mallory")
    form.locator("input[name=token]").fill("not-the-token")
    form.locator("button").click()
    page.wait_for_selector("#error-message")
    assert "needs the dashboard token" in page.inner_text("#error-message")
    # a wrong ?token= is refused too and sets nothing
    response = page.goto(dashboard.url + "durable/?token=guess")
    assert response is not None and response.status == 403

    # raw HTTP: no token, and the right token from another origin
    callback_id = re.search(r'name="callback_id" value="([^"]+)"', _get(dashboard, f"/durable/execution?arn={urllib.parse.quote(arn, safe='')}")[1]).group(1)
    form_body = {"callback_id": callback_id, "arn": arn, "result": "mallory"}
    assert _post(dashboard, "/durable/callback", form_body)[0] == 403
    assert _post(dashboard, "/durable/callback", {**form_body, "token": dashboard.token},
                 headers={"Origin": "http://rebound.test:%d" % dashboard.port})[0] == 403
    assert _get(dashboard, "/durable/callback")[0] == 405  # never by GET
    assert not future.done()
    assert session.target.client("lambda").get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"

    # with the token it goes through (and ends the execution this test started)
    status, _ = _post(dashboard, "/durable/callback", {**form_body, "result": "trent", "token": dashboard.token})
    assert status == 303
    assert future.result(timeout=30)["approved_by"] == "trent"


def test_pause_resume_and_stop_from_page(
    make_session: Callable[..., Any], dashboard: DashboardServer, page: Any, screenshot: Callable[[str], Any],
    tmp_path: Any,
) -> None:
    """The execution's Pause, Resume and Stop buttons act through the durable-execution API."""
    session = make_session()
    future, arn = _start_durable(session, tmp_path)
    lam = session.target.client("lambda")

    def api_status() -> str:
        return lam.get_durable_execution(DurableExecutionArn=arn)["Status"]

    page.goto(dashboard.url_with_token)
    page.goto(dashboard.url + "durable/execution?arn=" + urllib.parse.quote(arn, safe=""))
    assert page.locator("form[data-action='resume']").count() == 0
    page.locator("form[data-action='pause'] button").click()
    page.wait_for_selector("#flash")
    assert "execution paused" in page.inner_text("#flash")
    assert api_status() in ("PAUSING", "PAUSED")
    page.locator("#execution-status", has_text="PAUSED").wait_for(timeout=15_000)
    screenshot("durable-execution-paused")
    page.locator("form[data-action='resume'] button").click()
    page.wait_for_selector("#flash")
    assert "execution resumed" in page.inner_text("#flash") and api_status() == "RUNNING"
    page.locator("form[data-action='stop'] button").click()
    page.wait_for_selector("#flash")
    assert "execution stopped" in page.inner_text("#flash")
    assert api_status() == "STOPPED"
    page.locator("#execution-status", has_text="STOPPED").wait_for(timeout=15_000)
    assert page.locator("form[data-action]").count() == 0
    from lambdarun_durable.backend import DurableExecutionFailed

    with pytest.raises(DurableExecutionFailed, match="ended STOPPED"):
        future.result(timeout=30)


def _get(dashboard: DashboardServer, path: str, host: str | None = None) -> tuple[int, str]:
    """GET with a given Host header ("" sends none at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        if host == "":
            conn.putrequest("GET", path, skip_host=True)
            conn.endheaders()
        else:
            conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{dashboard.port}"})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _post(dashboard: DashboardServer, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        conn.request("POST", path, body=urllib.parse.urlencode(form), headers={
            "Host": f"127.0.0.1:{dashboard.port}", "Content-Type": "application/x-www-form-urlencoded", **(headers or {}),
        })
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_other_hosts_are_refused(dashboard: DashboardServer, page: Any) -> None:
    port = dashboard.port
    for host in (f"rebound.test:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"evil.example:{port}", ""):
        status, body = _get(dashboard, "/runs/", host=host)
        assert status == 403, host
        assert "refused" in body
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert _get(dashboard, "/runs/", host=host)[0] == 200
    # a page on another name that resolves to 127.0.0.1 (DNS rebinding) gets nothing
    response = page.goto(f"http://rebound.test:{port}/runs/")
    assert response is not None and response.status == 403
    assert "refused" in page.inner_text("body")
    assert "Runs" not in page.inner_text("body")


RAISER = """
def divide(a, b):
    return a / b


def handler(event, context):
    print("dividing", event)
    return {"quotient": divide(event["a"], event["b"])}
"""


@pytest.fixture(scope="module")
def raiser(local_stack: Any) -> str:
    """A plain Lambda function (not lambdarun's) that raises for b == 0."""
    from lambdarun.local.testing import create_function

    name = "dashboard-raiser"
    create_function(local_stack.client("lambda"), name, RAISER)
    return name


def _invoke(local_stack: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    import json

    response = local_stack.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return {"error": response.get("FunctionError"), "request_id": response["ResponseMetadata"]["RequestId"],
            "payload": json.loads(response["Payload"].read())}


def test_functions_and_invocations_pages(
    local_stack: Any, raiser: str, dashboard: DashboardServer, page: Any, screenshot: Callable[[str], Any]
) -> None:
    ok = _invoke(local_stack, raiser, {"a": 6, "b": 3})
    assert ok["payload"] == {"quotient": 2.0}
    failed = _invoke(local_stack, raiser, {"a": 1, "b": 0})
    assert failed["error"] == "Unhandled"

    page.goto(dashboard.url + "functions/")
    row = page.locator(f"tr[data-function='{raiser}']")
    row.wait_for()
    assert row.locator("[data-col=warm]").inner_text() == "1"  # one idle environment after two calls
    assert "app.handler" in row.inner_text()
    screenshot("functions")
    row.locator("a").first.click()
    page.wait_for_selector("#environments")
    assert page.locator("#environments tbody tr").count() == 1
    assert "warm" in page.inner_text("#environments")
    screenshot("function-detail")

    page.goto(dashboard.url + f"invocations/?function={raiser}")
    rows = page.locator("#invocations tbody tr")
    assert rows.count() >= 2
    newest = rows.first
    assert newest.get_attribute("data-status") == "failed"
    assert "ZeroDivisionError" in newest.inner_text()
    # filter by status through the page's own control
    page.select_option("#filter-status", "succeeded")
    page.wait_for_url("**status=succeeded**")
    statuses = set(page.locator("#invocations tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)"))
    assert statuses == {"succeeded"}
    page.select_option("#filter-status", "failed")
    page.wait_for_url("**status=failed**")
    screenshot("invocations")
    page.locator(f"tr[data-request-id] a", has_text=failed["request_id"]).click()
    page.wait_for_selector("#traceback")
    assert page.inner_text("#error-type") == "ZeroDivisionError"
    assert "division by zero" in page.inner_text("#error-message")
    stack = page.inner_text("#traceback")
    assert "in handler" in stack and "in divide" in stack
    log = page.inner_text("#log")
    assert f"START RequestId: {failed['request_id']}" in log and "dividing" in log and "REPORT RequestId" in log
    screenshot("invocation-detail")


def test_invocations_are_paged(local_stack: Any, raiser: str, dashboard: DashboardServer, page: Any) -> None:
    for i in range(55):
        _invoke(local_stack, raiser, {"a": i, "b": 1})
    page.goto(dashboard.url + f"invocations/?function={raiser}")
    first = page.locator("#invocations tbody tr").evaluate_all("rows => rows.map(r => r.dataset.requestId)")
    assert len(first) == 50
    page.click("#older")
    page.wait_for_url("**before=**")
    second = page.locator("#invocations tbody tr").evaluate_all("rows => rows.map(r => r.dataset.requestId)")
    assert second and not set(first) & set(second)


def double(x: int) -> int:
    return 2 * x


def test_temporal_worker_invocations_page(
    make_session: Callable[..., Any], page: Any, screenshot: Callable[[str], Any], request: Any
) -> None:
    import uuid

    import lambdarun_temporal.plugin
    from lambdarun.dashboard import serve

    server = request.getfixturevalue("temporal_dev_server")
    queue = f"dashboard-{uuid.uuid4().hex[:8]}"
    session = make_session(
        lambdarun_temporal.plugin,
        temporal={"address": server.address, "function_name": "lambdarun-dashboard-temporal-tests",
                  "task_queue": queue, "function_timeout": 20},
    )
    assert list(lambdarun.map(double, range(5), backend="temporal", session=session)) == [0, 2, 4, 6, 8]
    backend = session.backend("temporal")
    deadline = time.monotonic() + 20
    while not backend.worker_summaries and time.monotonic() < deadline:  # the worker leaves at idle
        time.sleep(0.1)
    (summary,) = backend.worker_summaries
    dashboard = serve(session)
    try:
        page.goto(dashboard.url + "temporal/")
        row = page.locator("#workers tbody tr[data-request-id]").first
        row.wait_for()
        assert row.get_attribute("data-stop-reason") == summary["stop_reason"] == "idle"
        assert row.get_attribute("data-task-queue") == queue
        cells = row.locator("td").all_inner_texts()
        assert cells[5] == str(summary["activities"]) == "5"
        assert int(cells[4]) == summary["workflow_activations"] >= 5
        assert page.inner_text("#task-count") == str(summary["activities"] + summary["workflow_activations"])
        screenshot("temporal")
    finally:
        dashboard.stop()


def test_map_is_journaled_and_linked_to_its_invocations(
    make_session: Callable[..., Any], dashboard: DashboardServer, page: Any
) -> None:
    session = make_session()
    results = list(lambdarun.map(shout, [1, 3], session=session, return_exceptions=True))
    assert results[0] == 10 and isinstance(results[1], ValueError)
    journal.flush()
    page.goto(dashboard.url + "runs/")
    page.locator("#runs tbody tr[data-status='failed'] a").first.click()
    page.locator("tr[data-index='0'] a").first.click()
    page.wait_for_selector("#stdout")
    body = page.inner_text("main")
    assert "request_id" in body and "result size" in body and " B" in body
    page.locator("dd a").first.click()  # the request id: the invocation that ran the task
    page.wait_for_selector("#log")
    assert "task 1 says hello" in page.inner_text("#log")
