"""AWS-shaped errors and the small request/response helpers every Lambda operation uses.

:class:`ApiError` is how any module of the service refuses a request: the REST front
(:mod:`.api`) turns it into the status, ``X-Amzn-ErrorType`` and JSON body AWS sends.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from lambdarun.local.options import ACCOUNT_ID

#: what an operation returns: (HTTP status, body, extra headers)
Reply = tuple[int, bytes, dict[str, str]]


class ApiError(Exception):
    """An AWS-shaped error response."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> bytes:
        doc = {"Type": "User", "Message": self.message, "message": self.message}
        doc.update(self.extra)
        return json.dumps(doc).encode()


def not_found(name: str, region: str) -> ApiError:
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
    return ApiError(404, "ResourceNotFoundException", f"Function not found: {arn}")


def unknown_operation(method: str, what: str) -> ApiError:
    return ApiError(404, "UnknownOperationException", f"Unknown operation {method} {what}")


def function_name(raw: str) -> tuple[str, str | None]:
    """Name and qualifier from a name, a partial ARN or a full ARN (optionally ``:qualifier``)."""
    raw = unquote(raw)
    qualifier = None
    if ":function:" in raw:
        raw = raw.split(":function:", 1)[1]
    if ":" in raw:
        raw, qualifier = raw.split(":", 1)
    return raw, qualifier


def json_body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError as e:
        raise ApiError(400, "InvalidRequestContentException", f"Could not parse request body into json: {e}") from e
    if not isinstance(doc, dict):
        raise ApiError(400, "InvalidRequestContentException", "The request body must be a JSON object.")
    return doc


def ok(doc: Any) -> Reply:
    return 200, json.dumps(doc).encode(), {}
