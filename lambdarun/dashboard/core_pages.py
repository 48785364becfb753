"""The core's pages: functions and invocations (local Lambda service), runs (the journal)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import NotFound

from lambdarun.dashboard.pages import Page, Route, ViewContext

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

__all__ = ["functions_page", "invocations_page", "runs_page", "INVOCATION_STATUSES"]

#: the local service's invocation statuses (lambdarun/local/README.md, extension API)
INVOCATION_STATUSES = ("running", "succeeded", "failed", "timeout", "crashed", "throttled", "queued")
PAGE_SIZE = 50
TASKS_PAGE = 100


def _int_arg(request: Request, name: str) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _needs_local(ctx: ViewContext) -> str | None:
    if ctx.lambda_api is None:
        return (
            f"This page reads the local Lambda service; this dashboard's target is "
            f"{ctx.session.settings.target!r}. Use the AWS console for deployed functions."
        )
    return None


# ---------------------------------------------------------------------------------------
# functions
# ---------------------------------------------------------------------------------------


def _function_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One function of ``GET /_lambdarun/functions`` as the templates show it."""
    envs = [dict(e) for e in doc.get("environments") or []]
    states = [str(e.get("state", "")) for e in envs]
    return {
        "name": doc.get("name", "?"),
        "handler": doc.get("handler", ""),
        "runtime": doc.get("runtime", ""),
        "memory": doc.get("memory_size", ""),
        "timeout": doc.get("timeout", ""),
        "reserved": doc.get("reserved_concurrency"),
        "code": doc.get("code", ""),
        "cold": states.count("cold"),
        "warm": states.count("warm"),
        "busy": doc.get("concurrency_in_use", states.count("busy")),
        "environments": envs,
        "invocations": sum(int(e.get("invocations") or 0) for e in envs),
        "raw": doc,
    }


def functions_list(ctx: ViewContext, request: Request) -> str:
    api = ctx.lambda_api
    assert api is not None
    rows = sorted((_function_row(d) for d in api.functions()), key=lambda r: r["name"])
    return ctx.render("list.html", functions=rows)


def function_detail(ctx: ViewContext, request: Request, name: str) -> str:
    api = ctx.lambda_api
    assert api is not None
    row = next((_function_row(d) for d in api.functions() if d.get("name") == name), None)
    if row is None:
        raise NotFound(f"no function {name!r} on the local Lambda service")
    recent = api.invocations(function=name, limit=20)
    return ctx.render("detail.html", fn=row, invocations=[_invocation_row(i) for i in recent.invocations])


def functions_page() -> Page:
    return Page(
        id="functions",
        title="Functions",
        order=10,
        routes=(
            Route("/", functions_list),
            Route("/<path:name>", function_detail),
        ),
        available=_needs_local,
    )


# ---------------------------------------------------------------------------------------
# invocations
# ---------------------------------------------------------------------------------------


def _invocation_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One record of ``GET /_lambdarun/invocations`` as the templates show it."""
    init = doc.get("init_duration_ms")
    return {
        "request_id": doc.get("request_id", ""),
        "function": doc.get("function", ""),
        "status": doc.get("status", ""),
        "type": doc.get("type", ""),
        "started": doc.get("started_at"),
        "duration_ms": doc.get("duration_ms"),
        "billed_ms": doc.get("billed_ms"),
        "init_duration_ms": init,
        "cold": None if doc.get("duration_ms") is None else init is not None,
        "error_type": doc.get("error_type"),
        "error_message": doc.get("error_message"),
        "attempts": doc.get("attempts"),
        "seq": doc.get("seq"),
        "raw": doc,
    }


def invocations_list(ctx: ViewContext, request: Request) -> str:
    api = ctx.lambda_api
    assert api is not None
    function = request.args.get("function") or None
    status = request.args.get("status") or None
    before = request.args.get("before") or None
    page = api.invocations(function=function, status=status, limit=PAGE_SIZE, before=before)
    names = sorted(_function_row(d)["name"] for d in api.functions())
    return ctx.render(
        "list.html",
        invocations=[_invocation_row(i) for i in page.invocations],
        next_before=page.next_before,
        function=function,
        status=status,
        before=before,
        function_names=names,
        statuses=INVOCATION_STATUSES,
    )


def invocation_detail(ctx: ViewContext, request: Request, request_id: str) -> str:
    api = ctx.lambda_api
    assert api is not None
    doc = api.invocation(request_id)
    if doc is None:
        raise NotFound(f"no invocation {request_id!r} on the local Lambda service (it may have been forgotten)")
    error = doc.get("error")
    stack = error.get("stackTrace") if isinstance(error, dict) else None
    if isinstance(stack, list):
        stack = "".join(line if line.endswith("\n") else line + "\n" for line in stack)
    return ctx.render(
        "detail.html",
        inv=_invocation_row(doc),
        doc=doc,
        error=error if isinstance(error, (dict, str)) else None,
        stack=stack,
        log=doc.get("log") or "",
        response_preview=doc.get("response_preview"),
    )


def invocations_page() -> Page:
    return Page(
        id="invocations",
        title="Invocations",
        order=20,
        routes=(
            Route("/", invocations_list),
            Route("/<request_id>", invocation_detail),
        ),
        available=_needs_local,
    )


# ---------------------------------------------------------------------------------------
# runs (the journal)
# ---------------------------------------------------------------------------------------


def runs_list(ctx: ViewContext, request: Request) -> str:
    before = _int_arg(request, "before")
    backend = request.args.get("backend") or None
    batches = ctx.journal.batches(limit=PAGE_SIZE, before=before, backend=backend)
    next_before = batches[-1].seq if len(batches) == PAGE_SIZE else None
    return ctx.render(
        "list.html", batches=batches, next_before=next_before, before=before, backend=backend,
        journal_path=str(ctx.journal.path),
    )


def run_detail(ctx: ViewContext, request: Request, batch_id: str) -> str:
    batch = ctx.journal.batch(batch_id)
    if batch is None:
        raise NotFound(f"no run {batch_id!r} in the journal {ctx.journal.path}")
    status = request.args.get("status") or None
    offset = max(0, _int_arg(request, "offset") or 0)
    tasks = ctx.journal.tasks(batch_id, status=status, limit=TASKS_PAGE, offset=offset)
    shown_total = batch.counts.get(status, 0) if status else batch.total
    return ctx.render(
        "detail.html", batch=batch, tasks=tasks, status=status, offset=offset, page_size=TASKS_PAGE,
        shown_total=shown_total,
    )


def task_detail(ctx: ViewContext, request: Request, batch_id: str, index: int) -> str:
    batch = ctx.journal.batch(batch_id)
    task = ctx.journal.task(batch_id, index)
    if batch is None or task is None:
        raise NotFound(f"no task {index} in run {batch_id!r}")
    return ctx.render("task.html", batch=batch, task=task)


def runs_page() -> Page:
    return Page(
        id="runs",
        title="Runs",
        order=30,
        routes=(
            Route("/", runs_list),
            Route("/<batch_id>", run_detail),
            Route("/<batch_id>/<int:index>", task_detail),
        ),
    )
