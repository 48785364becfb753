"""The Lambda side of lambdarun-covalent: failure records of asynchronous invocations.

An asynchronous (``Event``) attempt whose environment dies (killed, out of memory) never
writes its outcome, so the caller would only notice at its timeout. The backend therefore
makes the function its own *on-failure destination* (Lambda's ``EventInvokeConfig``, honoured
by AWS and the local target): Lambda then invokes the function with a destination record,
and this hook turns the record into a failure outcome
(:class:`~lambdarun.errors.RemoteEnvironmentError`) stored where the caller is polling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.calls import pack_failure
from lambdarun.errors import RemoteEnvironmentError

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["is_failure_record", "handle_failure_record", "TASK_FIELD"]

log = structlog.get_logger(__name__)

#: the field of a call event naming the task and attempt (so a failure outcome can be
#: verified like any other outcome)
TASK_FIELD = "lambdarun_covalent"


def is_failure_record(event: Any) -> bool:
    """A Lambda destination record of a failed asynchronous lambdarun-covalent call."""
    if not isinstance(event, dict):
        return False
    context, request = event.get("requestContext"), event.get("requestPayload")
    return (
        isinstance(context, dict)
        and context.get("condition") not in (None, "Success")
        and isinstance(request, dict)
        and isinstance(request.get(TASK_FIELD), dict)
        and bool(request.get("result_url"))
    )


def handle_failure_record(event: dict[str, Any], session: Session) -> dict[str, Any]:
    request = event["requestPayload"]
    context = event.get("requestContext") or {}
    response = event.get("responsePayload")
    error_type, message, trace = context.get("condition", "Unknown"), "", ""
    if isinstance(response, dict):
        error_type = str(response.get("errorType") or error_type)
        message = str(response.get("errorMessage") or "")
        stack = response.get("stackTrace") or []
        trace = "".join(stack) if isinstance(stack, list) else str(stack)
    task = request[TASK_FIELD]
    what = "its execution environment died" if error_type == "Runtime.ExitError" else "its invocation failed"
    failure = RemoteEnvironmentError(
        f"task {task.get('task_id')} failed because {what} ({error_type}: {message or context.get('condition')}); "
        f"Lambda gave up after {context.get('approximateInvokeCount', '?')} attempt(s). The function did not raise: "
        "the process running it exited (killed, out of memory, or crashed).",
        original_type=error_type,
        remote_traceback=trace,
    )
    storage, key = session.open_url(request["result_url"])
    if storage.exists(key):  # the task did finish (e.g. the failure came after it stored)
        return {"lambdarun": 1, "outcome_url": request["result_url"], "recorded": False}
    outcome = pack_failure(session, failure, meta={"task_id": task.get("task_id"), "attempt": task.get("attempt")})
    storage.put(key, outcome)
    log.info("recorded an asynchronous failure", task_id=task.get("task_id"), error_type=error_type)
    return {"lambdarun": 1, "outcome_url": request["result_url"], "recorded": True}
