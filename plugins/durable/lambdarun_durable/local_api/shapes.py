"""Shapes of the durable-execution API as botocore's Lambda model has them: operations in
REST responses (timestamps in epoch seconds) and in invocation events (epoch ms), AWS's
error replies, request parsing."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from lambdarun_durable.records import public_op

#: (HTTP status, body, headers), what a service extension answers
Reply = tuple[int, bytes, dict[str, str]]

OPERATION_TYPES = frozenset({"EXECUTION", "CONTEXT", "STEP", "WAIT", "CALLBACK", "CHAINED_INVOKE"})
ACTIONS = frozenset({"START", "SUCCEED", "FAIL", "RETRY", "CANCEL"})
STATUSES = frozenset({"RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED"})

_TIMESTAMPS = (("StartTimestamp",), ("EndTimestamp",), ("StepDetails", "NextAttemptTimestamp"),
               ("WaitDetails", "ScheduledEndTimestamp"))


class ApiFailure(Exception):
    """An AWS-shaped error reply."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def reply(self) -> Reply:
        body = json.dumps({"Type": "User", "Message": self.message, "message": self.message}).encode()
        return self.status, body, {"X-Amzn-ErrorType": self.code, "x-amzn-RequestId": str(uuid.uuid4())}


def invalid(message: str) -> ApiFailure:
    return ApiFailure(400, "InvalidParameterValueException", message)


def not_found(arn: str) -> ApiFailure:
    return ApiFailure(404, "ResourceNotFoundException", f"Durable execution not found: {arn}")


def ok(doc: Any, status: int = 200) -> Reply:
    return status, json.dumps(doc, default=_json_default).encode(), {}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.timestamp()  # REST timestamps: epoch seconds
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def operation(op: Mapping[str, Any], *, millis: bool) -> dict[str, Any]:
    """An engine operation without its private keys; timestamps in epoch ms (``millis``:
    the invocation event) or epoch seconds (REST responses)."""
    out = public_op(op)
    for key, value in list(out.items()):
        if isinstance(value, dict):
            out[key] = public_op(value)
    if not millis:
        for path in _TIMESTAMPS:
            holder = out
            for key in path[:-1]:
                holder = holder.get(key) if isinstance(holder.get(key), dict) else None
                if holder is None:
                    break
            if holder is not None and isinstance(holder.get(path[-1]), (int, float)):
                holder[path[-1]] = holder[path[-1]] / 1000
    return out


def seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def body_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError as e:
        raise ApiFailure(400, "InvalidRequestContentException",
                         f"Could not parse request body into json: {e}") from e
    if not isinstance(doc, dict):
        raise ApiFailure(400, "InvalidRequestContentException", "The request body must be a JSON object.")
    return doc


def int_param(query: Mapping[str, str], name: str, default: int, *, low: int = 1, high: int = 1000) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer, not {raw!r}.") from None
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}.")
    return value


def bool_param(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() not in ("true", "false"):
        raise invalid(f"{name} must be true or false, not {raw!r}.")
    return raw.lower() == "true"


def time_param(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid(f"{name} must be a timestamp, not {raw!r}.") from None


def error_object(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise invalid("Error must be a structure (ErrorMessage, ErrorType, ErrorData, StackTrace).")
    out = {k: raw[k] for k in ("ErrorMessage", "ErrorType", "ErrorData", "StackTrace") if raw.get(k) is not None}
    for key in ("ErrorMessage", "ErrorType", "ErrorData"):
        if key in out and not isinstance(out[key], str):
            raise invalid(f"Error.{key} must be a string.")
    if "StackTrace" in out and not isinstance(out["StackTrace"], list):
        raise invalid("Error.StackTrace must be a list of strings.")
    return out


_CLIENT_TOKEN = re.compile(r"[\x21-\x7E]{1,64}")


def pause_request(body: bytes, *, pause: bool) -> dict[str, Any]:
    """A Pause/ResumeDurableExecution body checked against botocore's model: ``ClientToken``
    (1-64 printable ASCII), ``Reason`` (string, at most 1024), and for a pause
    ``ExecutionTimeoutPaused`` (boolean, default true). Unknown members are ignored."""
    req = body_json(body)
    token, reason = req.get("ClientToken"), req.get("Reason")
    if token is not None and not (isinstance(token, str) and _CLIENT_TOKEN.fullmatch(token)):
        raise invalid("ClientToken must be 1 to 64 printable ASCII characters.")
    if reason is not None and not (isinstance(reason, str) and len(reason) <= 1024):
        raise invalid("Reason must be a string of at most 1024 characters.")
    out: dict[str, Any] = {"ClientToken": token, "Reason": reason}
    if pause:
        timeout_paused = req.get("ExecutionTimeoutPaused", True)
        if not isinstance(timeout_paused, bool):
            raise invalid("ExecutionTimeoutPaused must be a boolean.")
        out["ExecutionTimeoutPaused"] = timeout_paused
    return out


def page(items: list[Any], marker: str | None, size: int) -> tuple[list[Any], str | None]:
    """One page of ``items`` from ``marker`` (a previous page's ``NextMarker``: an offset),
    and the next page's marker (None on the last page)."""
    start = 0
    if marker:
        try:
            start = int(marker)
        except ValueError:
            start = -1
        if start < 0:
            raise invalid(f"Invalid Marker {marker!r}: pass the NextMarker of the previous page.")
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)
