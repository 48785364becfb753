"""Invocation records: what ``GET /_lambdarun/invocations`` shows of each invocation, kept in
a bounded book. How a finished invocation fills its record is :mod:`.report`'s."""

from __future__ import annotations

import collections
import itertools
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lambdarun.local.shapes import ApiError

STATUSES = ("running", "succeeded", "failed", "timeout", "crashed", "throttled", "queued")


class InvocationRecord:
    """What ``GET /_lambdarun/invocations`` shows of one invocation (one per Event, across
    its retries). Created when the invocation is accepted, updated in place as it runs; kept
    in a bounded deque, so recording costs an object and an append on the warm path."""

    __slots__ = (
        "seq", "request_id", "function", "type", "status", "started_at", "duration_ms",
        "billed_ms", "init_duration_ms", "error_type", "error_message", "error", "response",
        "log_path", "log_start", "attempts",
    )

    def __init__(self, seq: int, request_id: str, function: str, type_: str, status: str,
                 started_at: float) -> None:
        self.seq = seq
        self.request_id = request_id
        self.function = function
        self.type = type_
        self.status = status
        self.started_at = started_at
        self.duration_ms: float | None = None
        self.billed_ms: int | None = None
        self.init_duration_ms: float | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        #: the full error payload (function errors only)
        self.error: bytes | None = None
        #: the first RESPONSE_PREVIEW_BYTES of the response payload
        self.response: bytes | None = None
        self.log_path: Path | None = None
        self.log_start = 0
        self.attempts = 0

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "request_id": self.request_id,
            "function": self.function,
            "type": self.type,
            "status": self.status,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "billed_ms": self.billed_ms,
            "init_duration_ms": self.init_duration_ms,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
        }

    def detail(self) -> dict[str, Any]:
        out = self.summary()
        out["log"] = self.log_text()
        error: Any = None
        if self.error is not None:
            try:
                error = json.loads(self.error)
            except ValueError:
                error = self.error.decode("utf-8", "replace")
        out["error"] = error
        out["response_preview"] = (
            None if self.response is None else self.response.decode("utf-8", "replace")
        )
        return out

    def log_text(self) -> str:
        """This invocation's part of its environment's log file (START to REPORT), read up
        to its REPORT line only (the environment may have logged much more since)."""
        if self.log_path is None:
            return ""
        marker = f"REPORT RequestId: {self.request_id}".encode()
        data = b""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                while True:
                    chunk = f.read(65536)
                    if not chunk:
                        break
                    searched = max(0, len(data) - len(marker))
                    data += chunk
                    end = data.find(marker, searched)
                    if end >= 0:
                        newline = data.find(b"\n", end)
                        while newline < 0:  # the REPORT line continues in the next chunk
                            more = f.read(4096)
                            if not more:
                                break
                            data += more
                            newline = data.find(b"\n", end)
                        data = data[: newline + 1] if newline >= 0 else data
                        break
        except OSError:
            return ""
        return data.decode("utf-8", "replace")


class RecordBook:
    """The kept invocation records: a bounded deque (the oldest drop out), so recording
    costs an object and an append on the warm path."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._records: collections.deque[InvocationRecord] = collections.deque(maxlen=limit)
        self._seq = itertools.count(1)

    def new(self, request_id: str, function: str, type_: str, status: str) -> InvocationRecord:
        rec = InvocationRecord(next(self._seq), request_id, function, type_, status, time.time())
        self._records.append(rec)  # a bounded deque: the oldest record drops out
        return rec

    def records(self) -> list[InvocationRecord]:
        """The kept invocation records, oldest first (a snapshot)."""
        return list(self._records)

    def invocations_view(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /_lambdarun/invocations``: newest first, filtered, paged by ``before``."""
        function = query.get("function") or None
        status = query.get("status") or None
        try:
            limit = int(query.get("limit") or 50)
            before = int(query["before"]) if query.get("before") else None
        except ValueError as e:
            raise ApiError(400, "InvalidParameterValueException",
                           f"limit and before must be integers: {e}") from e
        if not 1 <= limit <= 1000:
            raise ApiError(400, "InvalidParameterValueException", "limit must be between 1 and 1000.")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "InvalidParameterValueException",
                           f"status must be one of {', '.join(STATUSES)}.")
        page: list[dict[str, Any]] = []
        more = False
        for rec in reversed(self.records()):
            if before is not None and rec.seq >= before:
                continue
            if (function is not None and rec.function != function) or (
                status is not None and rec.status != status
            ):
                continue
            if len(page) == limit:
                more = True
                break
            page.append(rec.summary())
        return {"invocations": page, "next_before": page[-1]["seq"] if more else None}

    def invocation_detail(self, request_id: str) -> dict[str, Any]:
        """``GET /_lambdarun/invocations/{request_id}``: the record, its log, error, response."""
        for rec in reversed(self.records()):
            if rec.request_id == request_id:
                return rec.detail()
        raise ApiError(404, "ResourceNotFoundException",
                       f"No invocation record {request_id} (the last {self.limit} are kept).")
