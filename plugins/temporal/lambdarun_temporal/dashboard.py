"""The Temporal page of the lambdarun dashboard: the worker invocations of the temporal backend.

Each worker invocation's response is its summary (``stop_reason``, ``workflow_activations``,
``activities``, ``seconds``, see :mod:`lambdarun_temporal.worker`); both are read from the local
Lambda service's invocation records. The task queue is the one the summary names, else the
``[temporal] task_queue`` of the dashboard's session (marked "config").

Registered through the ``lambdarun_dashboard_pages`` hook (see :mod:`lambdarun.dashboard`).
"""

from __future__ import annotations

import collections
import json
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from lambdarun.dashboard.pages import DashboardRegistry, ViewContext

__all__ = ["WorkerInvocation", "worker_invocation", "temporal_page"]

PAGE_SIZE = 50
WORKER_EVENT_KEY = "lambdarun_temporal"  # lambdarun_temporal.worker.WORKER_EVENT_KEY, without importing temporalio


def _json_object(text: Any) -> dict[str, Any] | None:
    if isinstance(text, dict):
        return text
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@attrs.frozen
class WorkerInvocation:
    """One worker invocation: where it served, what it ran, why it ended."""

    request_id: str
    status: str
    started: Any
    duration_ms: Any
    init_duration_ms: Any
    task_queue: str | None
    task_queue_from: str  # "worker" (its summary says) or "config" (this dashboard's [temporal] task_queue)
    stop_reason: str | None
    workflow_activations: int | None
    activities: int | None
    seconds: float | None
    error: str | None
    summary: dict[str, Any] | None

    @property
    def tasks(self) -> int | None:
        if self.workflow_activations is None and self.activities is None:
            return None
        return (self.workflow_activations or 0) + (self.activities or 0)

    @property
    def exit_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        if self.error:
            return f"failed: {self.error}"
        if self.status in ("running", "queued"):
            return self.status
        return "unknown"


def worker_invocation(record: dict[str, Any], *, configured_queue: str | None) -> WorkerInvocation:
    """Read an invocation record of the local Lambda API as a worker invocation."""
    summary = _json_object(record.get("response_preview") or record.get("response"))
    if summary is not None and WORKER_EVENT_KEY not in summary and "stop_reason" not in summary:
        summary = None
    queue = (summary or {}).get("task_queue")  # when the worker reports it (see the README)
    source = "worker" if queue else "config"
    error = record.get("error")
    error_text = None
    if isinstance(error, dict):
        error_text = ": ".join(str(p) for p in (error.get("errorType"), error.get("errorMessage")) if p)
    elif error:
        error_text = str(error)

    def number(key: str) -> Any:
        value = (summary or {}).get(key)
        return value if isinstance(value, (int, float)) else None

    return WorkerInvocation(
        request_id=str(record.get("request_id") or record.get("requestId") or ""),
        status=str(record.get("status") or ""),
        started=record.get("started_at"),
        duration_ms=record.get("duration_ms"),
        init_duration_ms=record.get("init_duration_ms"),
        task_queue=queue or configured_queue,
        task_queue_from=source,
        stop_reason=(summary or {}).get("stop_reason"),
        workflow_activations=number("workflow_activations"),
        activities=number("activities"),
        seconds=number("seconds"),
        error=error_text,
        summary=summary,
    )


def _config(ctx: ViewContext) -> Any:
    return ctx.session.settings.section("temporal")


def _available(ctx: ViewContext) -> str | None:
    if ctx.lambda_api is None:
        return (
            "Worker invocations are read from the local Lambda service; this dashboard's target is "
            f"{ctx.session.settings.target!r}."
        )
    try:
        _config(ctx)
    except Exception as exc:  # the section comes with this plugin
        return f"the temporal backend is not configured in this dashboard's session: {exc}"
    return None


def workers_list(ctx: ViewContext, request: Request) -> str:
    api = ctx.lambda_api
    assert api is not None
    config = _config(ctx)
    function = config.function_name
    before = request.args.get("before") or None
    page = api.invocations(function=function, limit=PAGE_SIZE, before=before)
    rows = []
    for record in page.invocations:
        if "response_preview" not in record:
            # the list omits the response: read the record itself (loopback, one call each)
            record = api.invocation(str(record.get("request_id") or "")) or record
        rows.append(worker_invocation(record, configured_queue=config.task_queue))
    reasons = collections.Counter(r.exit_reason for r in rows)
    queues = collections.Counter(r.task_queue or "?" for r in rows)
    return ctx.render(
        "list.html",
        function=function,
        rows=rows,
        next_before=page.next_before,
        before=before,
        reasons=sorted(reasons.items()),
        queues=sorted(queues.items()),
        total_tasks=sum(r.tasks or 0 for r in rows),
        address=config.address or "(dev server started on demand)",
        namespace=config.namespace,
    )


LIST_HTML = """{% extends "base.html" %}
{% block content %}
<h1>Temporal workers <span class="muted" style="font-size:12px">function {{ function }} · {{ address }} · namespace {{ namespace }}</span></h1>
<section data-live id="live">
{% block live %}
<div class="cards">
  <div class="card"><div class="muted">worker invocations (this page)</div><div class="n" id="worker-count">{{ rows|length }}</div></div>
  <div class="card"><div class="muted">tasks run</div><div class="n" id="task-count">{{ total_tasks }}</div></div>
  <div class="card"><div class="muted">task queues</div>{% for q, n in queues %}<div class="mono">{{ q }} × {{ n }}</div>{% endfor %}</div>
  <div class="card"><div class="muted">exit reasons</div>{% for r, n in reasons %}<div>{{ r }} × {{ n }}</div>{% endfor %}</div>
</div>
<table id="workers">
<thead><tr><th>started</th><th>request id</th><th>status</th><th>task queue</th><th class="num">workflow tasks</th><th class="num">activities</th><th>exit reason</th><th class="num">worked</th><th class="num">billed duration</th><th class="num">init</th></tr></thead>
<tbody>
{% for w in rows %}
<tr data-request-id="{{ w.request_id }}" data-stop-reason="{{ w.exit_reason }}" data-task-queue="{{ w.task_queue or '' }}">
  <td>{{ w.started|time }}</td>
  <td class="mono"><a href="{{ url('invocation_detail', page='invocations', request_id=w.request_id) }}">{{ w.request_id }}</a></td>
  <td>{{ m.status_badge(w.status) }}</td>
  <td class="mono">{{ w.task_queue or "" }}{% if w.task_queue_from == "config" %} <span class="muted" title="from this dashboard's [temporal] task_queue">(config)</span>{% endif %}</td>
  <td class="num">{{ w.workflow_activations if w.workflow_activations is not none else "" }}</td>
  <td class="num">{{ w.activities if w.activities is not none else "" }}</td>
  <td>{{ w.exit_reason }}</td>
  <td class="num">{{ "%.2f s"|format(w.seconds) if w.seconds is not none else "" }}</td>
  <td class="num">{{ w.duration_ms|ms }}</td>
  <td class="num">{{ w.init_duration_ms|ms }}</td>
</tr>
{% else %}
<tr><td colspan="10" class="muted">no worker invocations yet: the temporal backend starts one when calls are pending</td></tr>
{% endfor %}
</tbody>
</table>
<div class="pager">
{% if before %}<a href="{{ url('workers_list') }}">newest</a>{% endif %}
{% if next_before is not none %}<a id="older" href="{{ url('workers_list', before=next_before) }}">older →</a>{% endif %}
</div>
{% endblock %}
</section>
{% endblock %}
"""


def temporal_page() -> Any:
    from lambdarun.dashboard.pages import Page, Route

    return Page(
        id="temporal",
        title="Temporal",
        order=50,
        routes=(Route("/", workers_list),),
        templates={"list.html": LIST_HTML},
        available=_available,
    )


@hookimpl
def lambdarun_dashboard_pages(register: DashboardRegistry) -> None:
    register.add_page(temporal_page())
