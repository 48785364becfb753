"""The Lambda side: ``lambdarun.runtime.handler`` is the handler of the lambdarun function.

Each event is offered to the ``lambdarun_handle_event`` hook; the core answers call events
(below), and backends answer their own event shapes. Call event::

    {"lambdarun": 1, "call": "<base64 envelope>"}        # or "call_url": "s3://.../call"
     + optional "result_url": where to store the outcome (async invokes, large outcomes)
     + optional "inline_limit": largest outcome (bytes, before base64) returned inline

Response::

    {"lambdarun": 1, "outcome": "<base64 envelope>"}     # or "outcome_url": "s3://..."
"""

from __future__ import annotations

import base64
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.calls import execute_call, pack_failure
from lambdarun.errors import LambdarunError, PayloadTooLargeError
from lambdarun.hookspecs import hookimpl

if TYPE_CHECKING:
    from lambdarun.config import Settings
    from lambdarun.session import Session

__all__ = [
    "handler",
    "runtime_session",
    "function_environment",
    "CALL_EVENT_VERSION",
    "DEFAULT_INLINE_LIMIT",
]

log = structlog.get_logger(__name__)

CALL_EVENT_VERSION = 1
#: Lambda's sync response limit is 6 MB; base64 grows data by 4/3
DEFAULT_INLINE_LIMIT = 4_500_000

_session: Session | None = None
_session_lock = threading.Lock()


class UnhandledEventError(LambdarunError):
    """No installed plugin recognised the Lambda event."""


def function_environment(settings: Settings) -> dict[str, str]:
    """Environment variables a function running ``lambdarun.runtime.handler`` needs.

    Inside Lambda lambdarun reaches AWS services as plain AWS (target ``aws``): on the local
    target the ``AWS_ENDPOINT_URL_*`` variables of the environment point boto3 at the local
    services. The signing key travels along so both sides sign and verify.
    """
    environment = {"LAMBDARUN_TARGET": "aws", "LAMBDARUN_REGION": settings.region}
    if settings.signing_key:
        environment["LAMBDARUN_SIGNING_KEY"] = settings.signing_key
    return environment


def runtime_session() -> Session:
    """The session of this Lambda environment, created at the first invocation (cold start).

    Inside Lambda the target defaults to ``aws`` (see :func:`function_environment`).
    """
    global _session
    with _session_lock:
        if _session is None:
            from lambdarun.logs import in_lambda
            from lambdarun.session import Session

            overrides = {"target": "aws"} if in_lambda() and "LAMBDARUN_TARGET" not in os.environ else None
            _session = Session(overrides=overrides)
        return _session


def handler(event: Any, context: Any) -> Any:
    """The Lambda entry point of the lambdarun runtime function."""
    session = runtime_session()
    result = session.pm.hook.lambdarun_handle_event(event=event, context=context, session=session)
    if result is None:
        keys = sorted(event)[:10] if isinstance(event, dict) else type(event).__name__
        raise UnhandledEventError(
            f"no lambdarun plugin handles this event (keys: {keys}); install the backend "
            "plugin that sent it in the Lambda function (lambdarun deploy includes installed plugins)"
        )
    return result


def is_call_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("lambdarun") == CALL_EVENT_VERSION and (
        "call" in event or "call_url" in event
    )


def handle_call_event(event: dict[str, Any], session: Session, context: Any = None) -> dict[str, Any]:
    if "call" in event:
        data = base64.b64decode(event["call"])
    else:
        storage, key = session.open_url(event["call_url"])
        data = storage.get(key)
    deadline, request_id = _delivery(context)
    outcome = execute_call(session, data, deadline=deadline, request_id=request_id)
    result_url = event.get("result_url")
    inline_limit = int(event.get("inline_limit", DEFAULT_INLINE_LIMIT))
    if result_url and (event.get("always_store") or len(outcome) > inline_limit):
        storage, key = session.open_url(result_url)
        storage.put(key, outcome)
        return {"lambdarun": CALL_EVENT_VERSION, "outcome_url": result_url}
    if len(outcome) > inline_limit:
        # no place to spill: say so through the outcome channel rather than failing opaquely
        outcome = pack_failure(
            session,
            PayloadTooLargeError(
                f"the result ({len(outcome)} bytes) is over the inline limit ({inline_limit}) "
                "and the call gave no result_url to store it; configure storage"
            ),
        )
    return {"lambdarun": CALL_EVENT_VERSION, "outcome": base64.b64encode(outcome).decode("ascii")}


#: seconds of a delivery's remaining time kept to answer (a duplicate stops waiting then)
ANSWER_MARGIN = 1.0


def _delivery(context: Any) -> tuple[float | None, str | None]:
    """(deadline as time.monotonic(), request id) of this invocation, from its Lambda context."""
    if context is None:
        return None, None
    deadline = None
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        try:
            deadline = time.monotonic() + max(0.0, remaining() / 1000 - ANSWER_MARGIN)
        except Exception:
            deadline = None
    return deadline, getattr(context, "aws_request_id", None)


@hookimpl(trylast=True)
def lambdarun_handle_event(event: Any, context: Any, session: Session) -> dict[str, Any] | None:
    if is_call_event(event):
        return handle_call_event(event, session, context)
    return None
