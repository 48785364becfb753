"""The durable page of the lambdarun dashboard: executions, their history as a timeline, and
its write actions (each a POST that needs the dashboard token): completing a pending
callback, stopping, pausing and resuming an execution.

It reads and acts through :func:`lambdarun_durable.control.open_control`, as ``lambdarun
durable`` does: the target's durable-execution API (the local service, AWS) through its boto3
``lambda`` client, or the orchestrator's store where ``durable.api = "orchestrator"``.

Registered through the ``lambdarun_dashboard_pages`` hook (see :mod:`lambdarun.dashboard`).
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import weakref
from typing import TYPE_CHECKING, Any

import attrs

from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from lambdarun.dashboard.pages import DashboardRegistry, ViewContext

__all__ = ["TimelineOperation", "Timeline", "build_timeline", "durable_page"]

_EVENT = re.compile(r"^(Step|Wait|Callback|Context|ChainedInvoke)(Started|Succeeded|Failed|TimedOut|Stopped|Cancelled)$")
_TERMINAL_EXECUTION = ("ExecutionSucceeded", "ExecutionFailed", "ExecutionStopped", "ExecutionTimedOut")


def _display(payload: Any) -> str | None:
    """A stored payload as readable JSON (the SDK's extended-type JSON decoded when it is that)."""
    if payload is None:
        return None
    if isinstance(payload, str):
        from lambdarun_durable.serdes import EXTENDED_TYPES_SERDES

        try:
            value = EXTENDED_TYPES_SERDES.deserialize(payload)
        except Exception:  # not extended-type JSON: show it as stored
            try:
                value = json.loads(payload)
            except ValueError:
                return payload
        return json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return json.dumps(payload, indent=2, default=str, ensure_ascii=False)


def _error_text(error: Any) -> str | None:
    """``Type: message`` and the stack trace of an ErrorObject payload."""
    if not isinstance(error, dict):
        return _display(error)
    head = ": ".join(str(p) for p in (error.get("ErrorType"), error.get("ErrorMessage")) if p)
    stack = error.get("StackTrace")
    if isinstance(stack, list):
        stack = "".join(stack)
    return "\n".join(p for p in (head, stack, _display(error.get("ErrorData")) if error.get("ErrorData") else None) if p)


def _payload(details: dict[str, Any], key: str) -> Any:
    part = details.get(key)
    if isinstance(part, dict) and "Payload" in part:
        return part["Payload"]
    return None


@attrs.define
class Attempt:
    """One run of a step (or the single life of another operation)."""

    started: datetime.datetime
    ended: datetime.datetime | None = None
    outcome: str = "STARTED"
    error: str | None = None
    retry: dict[str, Any] | None = None
    left: float = 0.0
    width: float = 0.0


@attrs.define
class TimelineOperation:
    """One operation of the execution, folded from its history events."""

    id: str
    name: str
    kind: str  # Step, Wait, Callback, Context, ChainedInvoke
    subtype: str
    parent_id: str | None
    started: datetime.datetime
    ended: datetime.datetime | None = None
    status: str = "STARTED"
    depth: int = 0
    result: str | None = None
    error: str | None = None
    input: str | None = None
    attempts: list[Attempt] = attrs.field(factory=list)
    details: dict[str, Any] = attrs.field(factory=dict)
    left: float = 0.0
    width: float = 0.0

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1) if self.kind == "Step" else 0

    @property
    def open(self) -> bool:
        return self.ended is None

    @property
    def pending_callback(self) -> bool:
        return self.kind == "Callback" and self.ended is None


@attrs.define
class Timeline:
    started: datetime.datetime | None
    ended: datetime.datetime | None
    status: str
    input: str | None
    result: str | None
    error: str | None
    operations: list[TimelineOperation]
    invocations: list[dict[str, Any]]

    @property
    def pending_callbacks(self) -> list[TimelineOperation]:
        if self.ended is not None:
            return []
        return [op for op in self.operations if op.pending_callback]


def build_timeline(events: list[dict[str, Any]], *, now: datetime.datetime | None = None) -> Timeline:
    """Fold GetDurableExecutionHistory events into operations with positions on a time axis."""
    now = now or datetime.datetime.now(datetime.UTC)
    ops: dict[str, TimelineOperation] = {}
    started = ended = None
    status = "RUNNING"
    exec_input = exec_result = exec_error = None
    invocations: list[dict[str, Any]] = []
    for ev in events:
        etype = ev.get("EventType", "")
        at = ev.get("EventTimestamp")
        details = ev.get(f"{etype}Details") or {}
        if etype == "ExecutionStarted":
            started = at
            exec_input = _display(_payload(details, "Input"))
            continue
        if etype in _TERMINAL_EXECUTION:
            ended = at
            status = {"ExecutionSucceeded": "SUCCEEDED", "ExecutionFailed": "FAILED",
                      "ExecutionStopped": "STOPPED", "ExecutionTimedOut": "TIMED_OUT"}[etype]
            exec_result = _display(_payload(details, "Result"))
            exec_error = _error_text(_payload(details, "Error"))
            continue
        if etype == "InvocationCompleted":
            invocations.append(details)
            continue
        match = _EVENT.match(etype)
        if not match or "Id" not in ev:
            continue
        kind, phase = match.groups()
        op = ops.get(ev["Id"])
        if op is None:
            op = ops[ev["Id"]] = TimelineOperation(
                id=ev["Id"], name=ev.get("Name") or "", kind=kind, subtype=ev.get("SubType") or kind,
                parent_id=ev.get("ParentId"), started=at,
            )
        if phase == "Started":
            if op.attempts and op.attempts[-1].ended is None:
                op.attempts[-1].ended = at
            op.attempts.append(Attempt(started=at))
            op.status, op.ended = "STARTED", None
            for key, value in details.items():
                if key == "Input":
                    op.input = _display(_payload(details, "Input"))
                else:
                    op.details[key] = value
            continue
        attempt = op.attempts[-1] if op.attempts else None
        retry = details.get("RetryDetails")
        error = _error_text(_payload(details, "Error"))
        if attempt is not None:
            attempt.ended, attempt.outcome, attempt.error, attempt.retry = at, phase.upper(), error, retry
        if retry and phase == "Failed" and (retry.get("NextAttemptDelaySeconds") or 0) > 0:
            op.status = "RETRYING"  # a next attempt is scheduled (the last failure says 0)
            op.error = error
            continue
        op.status = {"Succeeded": "SUCCEEDED", "Failed": "FAILED", "TimedOut": "TIMED_OUT",
                     "Stopped": "STOPPED", "Cancelled": "CANCELLED"}[phase]
        op.ended = at
        op.result = _display(_payload(details, "Result"))
        op.error = error
        for key, value in details.items():
            if key not in ("Result", "Error", "RetryDetails"):
                op.details[key] = value
    # depth from the parent chain, positions on the execution's time axis
    for op in ops.values():
        depth, parent = 0, op.parent_id
        while parent in ops and depth < 50:
            depth, parent = depth + 1, ops[parent].parent_id
        op.depth = depth
    t0 = started or min((op.started for op in ops.values()), default=now)
    t1 = ended or now
    span = max((t1 - t0).total_seconds(), 1e-3)
    def place(start: datetime.datetime, end: datetime.datetime | None) -> tuple[float, float]:
        begin = (start - t0).total_seconds()
        finish = ((end or t1) - t0).total_seconds()
        left = max(0.0, min(100.0, 100.0 * begin / span))
        return left, max(0.4, min(100.0 - left, 100.0 * (finish - begin) / span))

    for op in ops.values():
        op.left, op.width = place(op.started, op.ended)
        for attempt in op.attempts:
            attempt.left, attempt.width = place(attempt.started, attempt.ended)
    ordered = sorted(ops.values(), key=lambda o: (o.started, o.depth))
    return Timeline(
        started=started, ended=ended, status=status, input=exec_input, result=exec_result, error=exec_error,
        operations=_tree_order(ordered), invocations=invocations,
    )


def _tree_order(ops: list[TimelineOperation]) -> list[TimelineOperation]:
    """Children right below their parent, each level in start order."""
    ids = {op.id for op in ops}
    children: dict[str | None, list[TimelineOperation]] = {}
    for op in ops:
        children.setdefault(op.parent_id if op.parent_id in ids else None, []).append(op)
    out: list[TimelineOperation] = []

    def walk(parent: str | None) -> None:
        for op in children.get(parent, []):
            out.append(op)
            walk(op.id)

    walk(None)
    return out


# ---------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------


_CONTROLS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_CONTROLS_LOCK = threading.Lock()


def _control(ctx: ViewContext) -> Any:
    """The session's :func:`~lambdarun_durable.control.open_control` (made once per session:
    ``durable.api = "auto"`` asks the target once, not on every refresh)."""
    from lambdarun_durable.control import open_control

    session = ctx.session
    with _CONTROLS_LOCK:
        control = _CONTROLS.get(session)
        if control is None:
            control = _CONTROLS[session] = open_control(session)
    return control


def _function_of(execution: dict[str, Any]) -> str:
    """The function's name: ``FunctionName`` (the store), else from ``FunctionArn`` (the API)."""
    if execution.get("FunctionName"):
        return str(execution["FunctionName"])
    arn = str(execution.get("FunctionArn") or "")
    return arn.split(":function:", 1)[-1].split(":", 1)[0] if ":function:" in arn else arn


def _available(ctx: ViewContext) -> str | None:
    try:
        ctx.session.settings.section("durable")
    except Exception as exc:  # the section comes with this plugin; another session may lack it
        return f"durable executions are not configured in this dashboard's session: {exc}"
    return None


def _refused(exc: Exception) -> Any:
    from werkzeug.exceptions import BadRequest, NotFound

    from lambdarun.errors import ExecutionNotFoundError

    if isinstance(exc, ExecutionNotFoundError):
        return NotFound(str(exc))
    return BadRequest(f"{type(exc).__name__}: {exc}")


def executions_list(ctx: ViewContext, request: Request) -> str:
    from lambdarun.errors import ConfigError, LambdarunError

    from lambdarun_durable.control import LIST_STATUSES, ListFilter, statuses_of

    control = _control(ctx)
    status = request.args.get("status") or None
    function = (request.args.get("function") or "").strip() or control.function_name
    try:
        limit = max(1, min(5000, int(request.args.get("limit") or 100)))
    except ValueError:
        limit = 100
    problem = None
    executions: list[dict[str, Any]] = []
    try:
        statuses = statuses_of([status]) if status else ()
        executions = control.list_executions(function if control.kind == "api" else None,
                                             ListFilter(statuses=statuses, reverse=True),
                                             max_items=limit)["DurableExecutions"]
    except ConfigError as exc:
        raise _refused(exc) from None
    except LambdarunError as exc:  # e.g. the function does not exist yet: say so on the page
        problem = f"{type(exc).__name__}: {exc}"
    for e in executions:
        e.setdefault("FunctionName", _function_of(e))
    where = f"function {function}" if control.kind == "api" else f"store {control.store_url}"
    return ctx.render(
        "list.html", executions=executions, status=status, statuses=LIST_STATUSES, limit=limit, where=where,
        function=function if control.kind == "api" else None, problem=problem,
    )


def execution_detail(ctx: ViewContext, request: Request) -> str:
    from lambdarun.errors import LambdarunError

    arn = request.args.get("arn") or ""
    control = _control(ctx)
    try:
        summary = control.describe(arn)
        events = control.history(arn)["Events"]
    except LambdarunError as exc:
        raise _refused(exc) from None
    summary.setdefault("FunctionName", _function_of(summary))
    timeline = build_timeline(events)
    status = summary.get("Status")
    actions = []
    if status in ("RUNNING", "PAUSING", "PAUSED"):
        actions.append(("stop_execution", "Stop"))
    if control.kind == "api" and status == "RUNNING":
        actions.append(("pause_execution", "Pause"))
    if control.kind == "api" and status in ("PAUSING", "PAUSED"):
        actions.append(("resume_execution", "Resume"))
    return ctx.render(
        "detail.html", arn=arn, summary=summary, timeline=timeline, events=events, actions=actions,
        flash=request.args.get("flash"),
    )


def _act(ctx: ViewContext, request: Request, action: Any, flash: str) -> Any:
    """Run ``action(control, arn)`` for the form's ``arn``; back to its page with ``flash``."""
    from werkzeug.exceptions import BadRequest
    from werkzeug.utils import redirect

    from lambdarun.errors import LambdarunError

    arn = request.form.get("arn") or ""
    if not arn:
        raise BadRequest("arn is required")
    try:
        action(_control(ctx), arn)
    except LambdarunError as exc:
        raise _refused(exc) from None
    return redirect(ctx.url("execution_detail", arn=arn, flash=flash), code=303)


def complete_callback(ctx: ViewContext, request: Request) -> Any:
    """POST (token required): SendDurableExecutionCallbackSuccess, then back."""
    from werkzeug.exceptions import BadRequest

    callback_id = request.form.get("callback_id") or ""
    result = request.form.get("result", "")
    if not callback_id:
        raise BadRequest("callback_id is required")
    return _act(ctx, request, lambda c, _arn: c.send_callback_success(callback_id, result), "callback completed")


def stop_execution(ctx: ViewContext, request: Request) -> Any:
    """POST (token required): StopDurableExecution."""
    error = {"ErrorMessage": "Stopped from the dashboard", "ErrorType": "ExecutionStopped"}
    return _act(ctx, request, lambda c, arn: c.stop(arn, error), "execution stopped")


def pause_execution(ctx: ViewContext, request: Request) -> Any:
    """POST (token required): PauseDurableExecution."""
    return _act(ctx, request, lambda c, arn: c.pause(arn, reason="paused from the dashboard"), "execution paused")


def resume_execution(ctx: ViewContext, request: Request) -> Any:
    """POST (token required): ResumeDurableExecution."""
    return _act(ctx, request, lambda c, arn: c.resume(arn, reason="resumed from the dashboard"), "execution resumed")


def durable_page() -> Any:
    from lambdarun.dashboard.pages import Page, Route

    from lambdarun_durable.dashboard_templates import DETAIL_HTML, LIST_HTML

    return Page(
        id="durable",
        title="Durable",
        order=40,
        routes=(
            Route("/", executions_list),
            Route("/execution", execution_detail),
            Route("/callback", complete_callback, write=True),
            Route("/stop", stop_execution, write=True),
            Route("/pause", pause_execution, write=True),
            Route("/resume", resume_execution, write=True),
        ),
        templates={"list.html": LIST_HTML, "detail.html": DETAIL_HTML},
        available=_available,
    )


@hookimpl
def lambdarun_dashboard_pages(register: DashboardRegistry) -> None:
    register.add_page(durable_page())
