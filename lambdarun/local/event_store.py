"""``events.jsonl``: the accepted ``Event`` invocations of a shared stack not delivered yet
(an append-only log, compacted)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import attrs
import structlog

from lambdarun.private_files import write_private
from lambdarun.local.state_files import FORMAT_VERSION, PersistError, quarantine, secure_dir, open_trusted

log = structlog.get_logger(__name__)

#: one queued-event line: an Event payload is at most 1 MiB (base64: 4/3 of it) plus metadata
EVENT_FILE_LIMIT = 2 * 1024 * 1024


@attrs.frozen
class StoredEvent:
    """An accepted Event invocation as kept on disk.

    ``running`` is True while an attempt was under way: after a crash that attempt counts as
    failed (retried when ``attempts`` allows it, as Lambda does after a crash)."""

    function: str
    request_id: str
    payload: bytes
    client_context: str | None
    received: float
    attempts: int
    marker: str | None
    running: bool

    def to_json(self) -> bytes:
        return json.dumps({
            "version": FORMAT_VERSION,
            "function": self.function,
            "request_id": self.request_id,
            "payload": base64.b64encode(self.payload).decode(),
            "client_context": self.client_context,
            "received": self.received,
            "attempts": self.attempts,
            "marker": self.marker,
            "running": self.running,
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoredEvent:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise PersistError("unknown event format")
        try:
            event = cls(
                function=_str(doc["function"]),
                request_id=_str(doc["request_id"]),
                payload=base64.b64decode(_str(doc["payload"]), validate=True),
                client_context=_opt_str(doc.get("client_context")),
                received=float(doc["received"]),
                attempts=int(doc["attempts"]),
                marker=_opt_str(doc.get("marker")),
                running=bool(doc.get("running")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PersistError(f"malformed event: {e}") from e
        if not _REQUEST_ID.fullmatch(event.request_id) or event.attempts < 0:
            raise PersistError("malformed event: bad request id or attempt count")
        return event


_REQUEST_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


class EventStore:
    """``events.jsonl``: an append-only log of the undelivered Event invocations.

    Each :meth:`put` appends the event's current state, each :meth:`remove` a tombstone (one
    ``write(2)`` each: creating a file per event cost ~1.5 ms on this machine's disk, an append
    ~10 µs). :meth:`load` reads the log back and rewrites it with only the live events; the
    log is also rewritten that way whenever it grows past ``compact_above`` bytes and twice
    the size of the live events.
    """

    def __init__(self, directory: Path, *, compact_above: int = 8 * 1024 * 1024) -> None:
        self.path = secure_dir(directory) / "events.jsonl"
        self.compact_above = compact_above
        self._lock = threading.Lock()
        self._file: io.BufferedWriter | None = None
        self._live: dict[str, bytes] = {}
        self._live_size = 0

    def _append(self, request_id: str, line: bytes | None) -> None:
        with self._lock:
            if self._file is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
                os.fchmod(fd, 0o600)
                self._file = os.fdopen(fd, "ab", buffering=0)  # type: ignore[assignment]
            old = self._live.pop(request_id, None)
            if old is not None:
                self._live_size -= len(old)
            if line is None:
                if old is None:
                    return  # not kept here: nothing to forget
                line = json.dumps({"version": FORMAT_VERSION, "removed": request_id}).encode() + b"\n"
            else:
                self._live[request_id] = line
                self._live_size += len(line)
            self._file.write(line)  # one write(2): a killed process leaves whole lines
            size = self._file.tell()
            if size > self.compact_above and size > 2 * self._live_size:
                self._rewrite_locked()

    def put(self, event: StoredEvent) -> None:
        """Keep ``event`` (its latest state replaces the earlier ones)."""
        if not _REQUEST_ID.fullmatch(event.request_id):
            raise ValueError(f"not a request id: {event.request_id!r}")
        self._append(event.request_id, event.to_json() + b"\n")

    def remove(self, request_id: str) -> None:
        """Forget the event (delivered, failed for good, stopped, or its function deleted)."""
        self._append(request_id, None)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _rewrite_locked(self) -> None:
        write_private(self.path, b"".join(self._live.values()))
        if self._file is not None:
            self._file.close()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            self._file = os.fdopen(fd, "ab", buffering=0)  # type: ignore[assignment]

    @classmethod
    def read(cls, directory: Path) -> list[StoredEvent]:
        """The live events in ``directory/events.jsonl`` without changing anything (what a
        restart would restore), oldest first."""
        return cls._replay(directory / "events.jsonl")[0]

    @staticmethod
    def _replay(path: Path) -> tuple[list[StoredEvent], dict[str, bytes]]:
        live: dict[str, tuple[StoredEvent, bytes]] = {}
        try:
            f = open_trusted(path)
        except FileNotFoundError:
            return [], {}
        with f:
            for n, line in enumerate(f, 1):
                try:
                    if len(line) > EVENT_FILE_LIMIT:
                        raise PersistError(f"line longer than {EVENT_FILE_LIMIT} bytes")
                    doc = json.loads(line)
                    if isinstance(doc, dict) and isinstance(doc.get("removed"), str):
                        live.pop(doc["removed"], None)
                        continue
                    event = StoredEvent.from_json(line)
                except (PersistError, ValueError) as e:
                    log.warning("queued-event log line refused, not loaded", path=str(path), line=n,
                                error=str(e))
                    continue
                live[event.request_id] = (event, line if line.endswith(b"\n") else line + b"\n")
        events = sorted((e for e, _ in live.values()), key=lambda e: e.received)
        return events, {rid: line for rid, (_, line) in live.items()}

    def load(self) -> list[StoredEvent]:
        """The live events, oldest first; the log is rewritten with only these. A log this
        user does not own, that others may write or that is a link is set aside, not read;
        a malformed, torn or oversized line is skipped (and logged)."""
        with self._lock:
            try:
                events, lines = self._replay(self.path)
            except PersistError as e:
                quarantine(self.path, str(e))
                events, lines = [], {}
            self._live = lines
            self._live_size = sum(len(v) for v in lines.values())
            if self.path.exists() or lines:
                self._rewrite_locked()
            return events
