"""The Lambda side of lambdarun-covalent: failure records of asynchronous invocations.

An asynchronous (``Event``) attempt whose environment dies (killed, out of memory) never
writes its outcome, so the caller would only notice at its timeout. The backend therefore
makes the function its own *on-failure destination* (Lambda's ``EventInvokeConfig``, honoured
by AWS and the local target): Lambda then invokes the function with a destination record,
and this hook turns the record into a failure outcome
(:class:`~lambdarun.errors.RemoteEnvironmentError`) stored where the caller is polling.

Anyone who can invoke the function can send something shaped like a destination record,
so a record is honoured only when the request it carries holds a correctly signed call of
the very task and attempt it names, and its ``result_url`` lies under the function's
storage prefix; otherwise :class:`~lambdarun.errors.EventError` and nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.calls import pack_failure, signing_key
from lambdarun.envelope import unpack
from lambdarun.errors import EventError, RemoteEnvironmentError
from lambdarun.protocol import build_reply, parse_call_event

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


def _verify_request(request: dict[str, Any], session: Session) -> tuple[Any, str]:
    """(result location, task) of a failure record, or :class:`EventError`."""
    task = request[TASK_FIELD]
    location = session.open_event_url(request.get("result_url"), field="result_url")
    call = parse_call_event(request)
    if call.call is not None:
        data = call.inline_call()
    elif call.call_url is not None:
        storage, key = session.open_event_url(call.call_url, field="call_url")
        data = storage.get(key)
    else:
        raise EventError("a failure record without its call was refused; nothing was written")
    # the call's signature proves the record describes a call this caller sent; no age
    # limit: Lambda reports failures after its own retries
    meta = unpack(data, signing_key(session)).meta
    if (meta.get("task_id"), meta.get("attempt")) != (task.get("task_id"), task.get("attempt")):
        raise EventError(
            "a failure record naming another task than its signed call was refused; nothing was written"
        )
    return location, task


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
    (storage, key), task = _verify_request(request, session)
    what = "its execution environment died" if error_type == "Runtime.ExitError" else "its invocation failed"
    failure = RemoteEnvironmentError(
        f"task {task.get('task_id')} failed because {what} ({error_type}: {message or context.get('condition')}); "
        f"Lambda gave up after {context.get('approximateInvokeCount', '?')} attempt(s). The function did not raise: "
        "the process running it exited (killed, out of memory, or crashed).",
        original_type=error_type,
        remote_traceback=trace,
    )
    if storage.exists(key):  # the task did finish (e.g. the failure came after it stored)
        return build_reply(outcome_url=request["result_url"], recorded=False)
    outcome = pack_failure(session, failure, meta={"task_id": task.get("task_id"), "attempt": task.get("attempt")})
    storage.put(key, outcome)
    log.info("recorded an asynchronous failure", task_id=task.get("task_id"), error_type=error_type)
    return build_reply(outcome_url=request["result_url"], recorded=True)
