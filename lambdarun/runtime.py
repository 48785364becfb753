"""The Lambda side: ``lambdarun.runtime.handler`` is the handler of the lambdarun function.

Each event is offered to the ``lambdarun_handle_event`` hook; the core answers call events
(their shape and the reply's are :mod:`lambdarun.protocol`'s), and backends answer their own
event shapes.

Every field is checked before anything runs: a field of the wrong type or encoding is an
:class:`~lambdarun.errors.EventError`, and ``call_url``/``result_url`` must lie under the
function's own storage prefix (its ``storage_url``; never ``file://``), else
:class:`~lambdarun.errors.UntrustedLocationError`. Without a signing key (and without
``allow_unsigned``) every call is refused with
:class:`~lambdarun.errors.SigningKeyMissingError`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.calls import bound_meta, execute_call, pack_failure, signing_key
from lambdarun.environment import function_environment  # re-exported (its owner: lambdarun.environment)
from lambdarun.envelope import unpack
from lambdarun.errors import EventError, LambdarunError, PayloadTooLargeError
from lambdarun.hookspecs import hookimpl
from lambdarun.protocol import (
    CALL_EVENT_VERSION,
    DEFAULT_INLINE_LIMIT,
    build_batch_reply,
    build_refused_reply,
    build_reply,
    is_batch_event,
    is_call_event,
    parse_batch_event,
    parse_call_event,
)

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

_session: Session | None = None
_session_lock = threading.Lock()


class UnhandledEventError(LambdarunError):
    """No installed plugin recognised the Lambda event."""


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


def handle_call_event(event: dict[str, Any], session: Session, context: Any = None) -> dict[str, Any]:
    # everything the event says is checked before anything is read, run or written
    signing_key(session)  # no key and no allow_unsigned: refuse every call, typed
    parsed = parse_call_event(event)
    result_url = parsed.result_url
    result_location = session.open_event_url(result_url, field="result_url") if result_url else None
    if parsed.call is not None:
        data = parsed.inline_call()
    else:
        storage, key = session.open_event_url(parsed.call_url, field="call_url")
        data = storage.get(key)
    deadline, request_id = _delivery(context)
    outcome = execute_call(session, data, deadline=deadline, request_id=request_id)
    if result_location is not None and (parsed.always_store or len(outcome) > parsed.inline_limit):
        storage, key = result_location
        storage.put(key, outcome)
        return build_reply(outcome_url=result_url)
    if len(outcome) > parsed.inline_limit:
        # no place to spill: say so through the outcome channel rather than failing opaquely
        outcome = pack_failure(
            session,
            PayloadTooLargeError(
                f"the result ({len(outcome)} bytes) is over the inline limit ({parsed.inline_limit}) "
                "and the call gave no result_url to store it; configure storage"
            ),
            meta=bound_meta(unpack(outcome).meta) or {"refused": True},
        )
    return build_reply(outcome=outcome)


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


def handle_batch_event(event: dict[str, Any], session: Session, context: Any = None) -> dict[str, Any]:
    """Answer each call of a batch in order, each exactly as if it had come alone (verified,
    claimed, run at most once, its outcome signed and bound to its task and attempt). A call
    refused before it ran (malformed, untrusted location, unreadable) gets an ``error``
    reply; the others still run."""
    signing_key(session)  # no key and no allow_unsigned: refuse the whole batch, typed
    replies = []
    for call in parse_batch_event(event):
        try:
            if not is_call_event(call):
                raise EventError(
                    "a batch entry is not a call event of this lambdarun version (nothing of it ran)"
                )
            replies.append(handle_call_event(call, session, context))
        except Exception as exc:  # noqa: BLE001 - this call is refused; the others go on
            log.warning("refused a call of a batch", error=f"{type(exc).__name__}: {exc}")
            replies.append(build_refused_reply(exc))
    return build_batch_reply(replies)


@hookimpl(trylast=True)
def lambdarun_handle_event(event: Any, context: Any, session: Session) -> dict[str, Any] | None:
    if is_call_event(event):
        return handle_call_event(event, session, context)
    if is_batch_event(event):
        return handle_batch_event(event, session, context)
    return None
