"""The call protocol: the Lambda event that carries a call and the reply that carries its outcome.

This module is the one owner of the event and reply shapes and of their version; the
runtime (:mod:`lambdarun.runtime`, the Lambda side) and every backend (the caller side)
build and parse them here. What travels *inside* (the signed call and outcome envelopes)
is :mod:`lambdarun.calls`'s. Call event::

    {"lambdarun": 1, "call": "<base64 envelope>"}        # or "call_url": "s3://.../call"
     + optional "result_url": where to store the outcome (async invokes, large outcomes)
     + optional "inline_limit": largest outcome (bytes, before base64) returned inline
     + optional "always_store": store the outcome at result_url even when it is small
     + any field a backend adds for itself (e.g. lambdarun-covalent's task binding)

Reply::

    {"lambdarun": 1, "outcome": "<base64 envelope>"}     # or "outcome_url": "s3://..."

Batch event (several calls in one invocation; version 2, an older runtime refuses it as an
unknown event) and its reply, one entry per call, in order::

    {"lambdarun": 2, "batch": [<call event>, ...]}        # at most MAX_BATCH calls
    {"lambdarun": 2, "replies": [<reply>, ...]}
     a reply may instead be {"lambdarun": 1, "error": {"type": ..., "message": ...}}: that
     call was refused before it ran (its event was malformed or untrusted)

Each call of a batch is a complete call event with its own signed envelope, task id and
attempt: the runtime verifies, claims and answers each one on its own, exactly as if it had
come alone, so a batch weakens neither the signature checks nor at-most-once.

:func:`parse_call_event` checks every field's type and encoding before anything runs (an
:class:`~lambdarun.errors.EventError` otherwise); :func:`parse_reply` refuses a reply that
is not one (:class:`~lambdarun.errors.RemoteEnvironmentError` naming the function).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from lambdarun.errors import EventError, RemoteEnvironmentError

__all__ = [
    "CALL_EVENT_VERSION",
    "DEFAULT_INLINE_LIMIT",
    "EVENT_OVERHEAD",
    "CallEvent",
    "Reply",
    "is_call_event",
    "build_call_event",
    "parse_call_event",
    "inline_fits",
    "inline_limit_for",
    "build_reply",
    "parse_reply",
    "BATCH_EVENT_VERSION",
    "MAX_BATCH",
    "is_batch_event",
    "build_batch_event",
    "parse_batch_event",
    "build_batch_reply",
    "parse_batch_reply",
    "build_refused_reply",
]

#: the version of the event and reply shapes (the ``"lambdarun"`` field of both)
CALL_EVENT_VERSION = 1
#: the version of the batch event and its reply
BATCH_EVENT_VERSION = 2
#: the most calls one batch event carries
MAX_BATCH = 1000
#: Lambda's sync response limit is 6 MB; base64 grows data by 4/3
DEFAULT_INLINE_LIMIT = 4_500_000
#: bytes of a call event beside its base64 call (field names, URLs, the task binding)
EVENT_OVERHEAD = 512


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------
# the call event
# ---------------------------------------------------------------------------------------


@attrs.frozen
class CallEvent:
    """A parsed call event: the call inline (``call``, base64: :meth:`inline_call`) or by
    reference (``call_url``)."""

    call: str | None = None
    call_url: str | None = None
    result_url: str | None = None
    inline_limit: int = DEFAULT_INLINE_LIMIT
    always_store: bool = False

    def inline_call(self) -> bytes:
        """The inline call envelope; :class:`~lambdarun.errors.EventError` when it is not
        valid base64 (nothing ran)."""
        try:
            return base64.b64decode(self.call or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EventError(f"event field 'call' is not valid base64 ({exc}); nothing ran") from exc


def is_call_event(event: Any) -> bool:
    """An event of this protocol's version carrying a call (inline or by reference)."""
    return isinstance(event, dict) and event.get("lambdarun") == CALL_EVENT_VERSION and (
        "call" in event or "call_url" in event
    )


def inline_fits(envelope: bytes, limit: int) -> bool:
    """Whether an event carrying ``envelope`` inline (base64) stays within ``limit`` bytes."""
    return EVENT_OVERHEAD + math.ceil(len(envelope) / 3) * 4 <= limit


def inline_limit_for(payload_limit: int) -> int:
    """The largest outcome (bytes, before base64) whose reply fits ``payload_limit``."""
    return max(0, (payload_limit - EVENT_OVERHEAD) * 3 // 4)


def build_call_event(
    *,
    call: bytes | None = None,
    call_url: str | None = None,
    result_url: str | None = None,
    inline_limit: int | None = None,
    always_store: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The event of one call: exactly one of ``call`` (the envelope, sent inline) or
    ``call_url`` (where it is stored). ``extra`` adds a backend's own fields."""
    if (call is None) == (call_url is None):
        raise ValueError("a call event carries exactly one of call and call_url")
    event: dict[str, Any] = {"lambdarun": CALL_EVENT_VERSION, **(extra or {})}
    if result_url is not None:
        event["result_url"] = result_url
    if inline_limit is not None:
        event["inline_limit"] = inline_limit
    if always_store:
        event["always_store"] = True
    if call is not None:
        event["call"] = _b64(call)
    else:
        event["call_url"] = call_url
    return event


def _field(event: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = event.get(name, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EventError(
            f"event field {name!r} must be {expected}, not {type(value).__name__}; send calls "
            "through lambdarun (the event was refused, nothing ran)"
        )
    return value


def parse_call_event(event: Mapping[str, Any]) -> CallEvent:
    """The fields of a call event, each checked (type, range; the inline call's encoding
    when it is read, :meth:`CallEvent.inline_call`); raises
    :class:`~lambdarun.errors.EventError` before anything is read or run. Locations are
    *not* trusted here: open them with ``session.open_event_url``."""
    call = _field(event, "call", str)
    call_url = _field(event, "call_url", str)
    result_url = _field(event, "result_url", str)
    inline_limit = _field(event, "inline_limit", int, DEFAULT_INLINE_LIMIT)
    always_store = _field(event, "always_store", bool, False)
    if inline_limit < 0:
        raise EventError(f"event field 'inline_limit' must be 0 or more, not {inline_limit}")
    return CallEvent(call=call, call_url=call_url, result_url=result_url, inline_limit=inline_limit,
                     always_store=always_store)


# ---------------------------------------------------------------------------------------
# the reply
# ---------------------------------------------------------------------------------------


@attrs.frozen
class Reply:
    """A parsed reply: the outcome inline (``outcome``) or where it was stored, or (in a
    batch reply) ``refused``: the (type name, message) of why that call was refused
    before it ran."""

    outcome: bytes | None = None
    outcome_url: str | None = None
    refused: tuple[str, str] | None = None


def build_reply(*, outcome: bytes | None = None, outcome_url: str | None = None, **extra: Any) -> dict[str, Any]:
    """The reply to a call: exactly one of ``outcome`` (inline) or ``outcome_url``."""
    if (outcome is None) == (outcome_url is None):
        raise ValueError("a reply carries exactly one of outcome and outcome_url")
    if outcome is not None:
        return {"lambdarun": CALL_EVENT_VERSION, "outcome": _b64(outcome), **extra}
    return {"lambdarun": CALL_EVENT_VERSION, "outcome_url": outcome_url, **extra}


def parse_reply(payload: bytes, *, function_name: str) -> Reply:
    """The reply of ``function_name`` to a call; anything else is a
    :class:`~lambdarun.errors.RemoteEnvironmentError` (the function is not a lambdarun
    runtime function, or something in between answered)."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise RemoteEnvironmentError(
            f"the Lambda function {function_name!r} returned a response that is not "
            f"JSON ({payload[:200]!r}); is its handler lambdarun.runtime.handler?"
        ) from exc
    return _reply_of(body, function_name)


def _reply_of(body: Any, function_name: str) -> Reply:
    if isinstance(body, dict) and "outcome" in body:
        try:
            return Reply(outcome=base64.b64decode(body["outcome"], validate=True))
        except (TypeError, ValueError) as exc:
            raise RemoteEnvironmentError(
                f"the Lambda function {function_name!r} returned an outcome that is not "
                f"base64 ({exc}); is its handler lambdarun.runtime.handler?"
            ) from exc
    if isinstance(body, dict) and "outcome_url" in body:
        if not isinstance(body["outcome_url"], str):
            raise RemoteEnvironmentError(
                f"the Lambda function {function_name!r} returned an outcome_url that is not a string"
            )
        return Reply(outcome_url=body["outcome_url"])
    raise RemoteEnvironmentError(
        f"the Lambda function {function_name!r} returned {str(body)[:200]!r} instead "
        "of a lambdarun outcome; is its handler lambdarun.runtime.handler?"
    )


# ---------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------


def is_batch_event(event: Any) -> bool:
    """An event of the batch version (its calls are checked by :func:`parse_batch_event`)."""
    return isinstance(event, dict) and event.get("lambdarun") == BATCH_EVENT_VERSION and "batch" in event


def build_batch_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The event carrying several call events (each from :func:`build_call_event`)."""
    if not 1 <= len(events) <= MAX_BATCH:
        raise ValueError(f"a batch carries 1 to {MAX_BATCH} calls, not {len(events)}")
    return {"lambdarun": BATCH_EVENT_VERSION, "batch": list(events)}


def parse_batch_event(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The call events of a batch event: a list of 1 to :data:`MAX_BATCH` objects, else
    :class:`~lambdarun.errors.EventError` (nothing ran). Each call event is checked when it
    is handled (:func:`parse_call_event`), on its own."""
    calls = event.get("batch")
    if not isinstance(calls, list) or not 1 <= len(calls) <= MAX_BATCH:
        shown = len(calls) if isinstance(calls, list) else type(calls).__name__
        raise EventError(
            f"event field 'batch' must be a list of 1 to {MAX_BATCH} call events, not {shown}; "
            "send calls through lambdarun (the event was refused, nothing ran)"
        )
    if not all(isinstance(call, dict) for call in calls):
        raise EventError("every entry of a batch event must be a call event object (the event was refused, nothing ran)")
    return calls


def build_refused_reply(error: BaseException) -> dict[str, Any]:
    """The reply, in a batch, to a call refused before it ran."""
    return {
        "lambdarun": CALL_EVENT_VERSION,
        "error": {"type": f"{type(error).__module__}.{type(error).__qualname__}", "message": str(error)[:2000]},
    }


def build_batch_reply(replies: list[dict[str, Any]]) -> dict[str, Any]:
    return {"lambdarun": BATCH_EVENT_VERSION, "replies": list(replies)}


def parse_batch_reply(payload: bytes, *, function_name: str, count: int) -> list[Reply]:
    """The ``count`` replies of ``function_name`` to a batch, in order; anything else is a
    :class:`~lambdarun.errors.RemoteEnvironmentError` (e.g. a runtime too old for batches)."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise RemoteEnvironmentError(
            f"the Lambda function {function_name!r} answered a batch with something that is not "
            f"JSON ({payload[:200]!r}); is its handler lambdarun.runtime.handler?"
        ) from exc
    replies = body.get("replies") if isinstance(body, dict) else None
    if not isinstance(replies, list) or len(replies) != count:
        raise RemoteEnvironmentError(
            f"the Lambda function {function_name!r} answered a batch of {count} calls with "
            f"{str(body)[:200]!r}; update lambdarun in the function (batches need lambdarun "
            "0.4 or later on both sides) or map with chunksize=1"
        )
    parsed = []
    for reply in replies:
        if isinstance(reply, dict) and "error" in reply and isinstance(reply["error"], dict):
            error = reply["error"]
            parsed.append(Reply(refused=(str(error.get("type", "")), str(error.get("message", "")))))
        else:
            parsed.append(_reply_of(reply, function_name))
    return parsed
