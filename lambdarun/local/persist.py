"""What a shared local stack keeps on disk so that ``lambdarun local up`` survives a restart.

Under ``<state_dir>/shared/state/`` (folders 0700, files 0600, written atomically):

* ``functions.json``: the Lambda control plane (configuration, code location, reserved
  concurrency, event-invoke config, tags), rewritten after every change
  (:class:`FunctionStore`);
* ``events.jsonl``: every accepted ``Event`` invocation not delivered yet, with its attempt
  count (:class:`EventStore`, an append-only log); forgotten once it succeeded, failed for
  good or was stopped;
* ``moto.jsonl``: a journal of the successful *writes* moto served (:class:`MotoJournal`),
  replayed through moto's WSGI application before its server listens again. moto 5.2 has no
  persistence of its own (its "recorder" logs every request, reads included, before it is
  processed, and replays over HTTP); the journal records after the response, skips reads and
  failures, and compacts S3 objects that were written then deleted.

:func:`sweep` removes what no live stack owns: extracted code no function refers to, and the
run directories of embedded stacks whose process is gone.

Files that are not the user's own, or that others may write, are refused (moved aside with a
warning, never loaded); a malformed file is moved aside too, so nothing is silently lost.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import stat
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs
import structlog

from lambdarun.private_files import private_dir, write_private

__all__ = [
    "EVENT_FILE_LIMIT",
    "EventStore",
    "FunctionStore",
    "JournalMiddleware",
    "MotoJournal",
    "PersistError",
    "ServiceState",
    "StateInUseError",
    "StoredEvent",
    "compact_entries",
    "forget_saved_state",
    "is_write",
    "open_trusted",
    "quarantine",
    "read_trusted",
    "remove_orphan_code",
    "saved_state_summary",
    "secure_dir",
    "sweep",
    "write_private",
]

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
#: one queued-event line: an Event payload is at most 1 MiB (base64: 4/3 of it) plus metadata
EVENT_FILE_LIMIT = 2 * 1024 * 1024
#: functions.json: 10,000 functions of ~8 KiB each at most
FUNCTIONS_FILE_LIMIT = 80 * 1024 * 1024
_EMBEDDED_DIR = re.compile(r"^embedded-(\d+)-[0-9a-f]+$")


class PersistError(Exception):
    """A state file that cannot be trusted or read (it is moved aside, never loaded)."""


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------


def secure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700; returns it (see :func:`private_dir`)."""
    path = private_dir(path)
    os.chmod(path, 0o700)  # also a folder of another mode we own: state is never shared
    return path


def open_trusted(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if this user owns it, nobody else may write it and it is a
    regular file (not a link); else :class:`PersistError` (FileNotFoundError if absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise PersistError(f"cannot open {path}: {e}") from e
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PersistError(f"{path} is not a regular file")
        if st.st_uid != os.getuid():
            raise PersistError(f"{path} belongs to uid {st.st_uid}, not to this user")
        if st.st_mode & 0o022:
            raise PersistError(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")
    except BaseException:
        f.close()
        raise
    return f  # type: ignore[return-value]


def read_trusted(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` (see :func:`open_trusted`) if at most ``limit`` bytes; else
    :class:`PersistError`."""
    try:
        f = open_trusted(path)
    except FileNotFoundError as e:
        raise PersistError(f"cannot open {path}: {e}") from e
    with f:
        if os.fstat(f.fileno()).st_size > limit:
            raise PersistError(f"{path} is larger than {limit} bytes")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PersistError(f"{path} is larger than {limit} bytes")
    return data


def quarantine(path: Path, reason: str) -> None:
    """Move a refused state file aside (``<name>.refused-<time>``) and say so."""
    target = path.with_name(f"{path.name}.refused-{int(time.time() * 1000)}")
    try:
        os.replace(path, target)
    except OSError:
        target = path
    log.warning("local stack state file refused, not loaded", path=str(path),
                moved_to=str(target), reason=reason)


# ---------------------------------------------------------------------------------------
# the control plane
# ---------------------------------------------------------------------------------------


class FunctionStore:
    """``functions.json``: every function's persistent fields (a list of plain dicts; the
    service decides what a function is, this class only keeps them)."""

    def __init__(self, directory: Path) -> None:
        self.path = secure_dir(directory) / "functions.json"
        self._lock = threading.Lock()

    def save(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        """Write what ``snapshot()`` returns. Concurrent saves never write an older
        snapshot over a newer one: each takes its snapshot under the store's lock."""
        with self._lock:
            doc = {"version": FORMAT_VERSION, "saved": time.time(), "functions": snapshot()}
            write_private(self.path, json.dumps(doc, indent=1).encode(), fsync=True)

    def load(self) -> list[dict[str, Any]]:
        """The saved functions ([] when none, or when the file was refused)."""
        if not self.path.exists():
            return []
        try:
            doc = json.loads(read_trusted(self.path, FUNCTIONS_FILE_LIMIT))
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise PersistError(f"unknown format (version {doc.get('version') if isinstance(doc, dict) else None!r})")
            functions = doc.get("functions")
            if not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions):
                raise PersistError("'functions' is not a list of objects")
        except (PersistError, ValueError) as e:
            quarantine(self.path, str(e))
            return []
        return functions


# ---------------------------------------------------------------------------------------
# queued Event invocations
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# moto's state: a journal of successful writes
# ---------------------------------------------------------------------------------------

_READ_PREFIXES = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "TransactGet",
                  "Filter", "Head", "Select", "Search", "Lookup", "Check", "Test", "Simulate",
                  "Receive", "Poll")
#: JSON-protocol services not journaled: CloudWatch Logs (``cloudwatch_logs`` ships every
#: log line there; the log files stay in ``logs/``)
_SKIP_TARGETS = ("Logs_",)
_STS_ACTIONS = frozenset({"AssumeRole", "AssumeRoleWithWebIdentity", "AssumeRoleWithSAML",
                          "GetSessionToken", "GetFederationToken", "GetCallerIdentity",
                          "GetAccessKeyInfo", "DecodeAuthorizationMessage"})
_SKIP_HEADERS = frozenset({"transfer-encoding", "content-length", "connection", "keep-alive"})


def _operation(method: str, query: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The AWS operation name of a JSON (``X-Amz-Target``) or query-protocol (``Action=``)
    request; None for REST protocols (S3)."""
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    action = parse_qs(query).get("Action")
    if action:
        return action[-1]
    ctype = (headers.get("Content-Type") or headers.get("content-type") or "").lower()
    if method == "POST" and ctype.startswith("application/x-www-form-urlencoded") and len(body) < 1 << 20:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[-1]
    return None


def is_write(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a request to moto changes its state (and so belongs in the journal)."""
    if method in ("GET", "HEAD", "OPTIONS") or path.startswith("/moto-api"):
        return False
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
    if target.startswith(_SKIP_TARGETS):
        return False
    op = _operation(method, query, headers, body)
    if op is None:  # REST (S3): every PUT/POST/DELETE except SelectObjectContent
        return "select" not in parse_qs(query, keep_blank_values=True)
    return op not in _STS_ACTIONS and not op.startswith(_READ_PREFIXES)


class MotoJournal:
    """Append-only journal of moto's successful writes, replayed into a fresh moto.

    :param path: the journal file (``moto.jsonl``).
    :param compact_above: compact online once the file exceeds this many bytes and twice its
        size after the previous compaction.
    """

    def __init__(self, path: Path, *, compact_above: int = 64 * 1024 * 1024) -> None:
        secure_dir(path.parent)
        self.path = path
        self.compact_above = compact_above
        self._lock = threading.Lock()
        self._file: io.BufferedWriter | None = None
        self._compacted_size = 0

    # -- writing ---------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._file is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
                os.fchmod(fd, 0o600)
                self._file = os.fdopen(fd, "ab", buffering=0)  # type: ignore[assignment]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def append(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> None:
        line = json.dumps({
            "m": method, "p": path, "q": query,
            "h": {k: v for k, v in headers.items() if k.lower() not in _SKIP_HEADERS},
            "b": base64.b64encode(body).decode(),
        }).encode() + b"\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)  # one write(2): a killed process leaves whole lines
            size = self._file.tell()
            if size > self.compact_above and size > 2 * self._compacted_size:
                self._compact_locked()

    def clear(self) -> None:
        """Forget everything (moto was reset)."""
        with self._lock:
            if self._file is not None:
                self._file.truncate(0)
            self._compacted_size = 0

    # -- reading -----------------------------------------------------------------------

    def _scan(self, body: Callable[[dict[str, Any]], bool]) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(line, entry) of every well-formed line, streamed; ``entry["body"]`` is decoded
        when ``body(entry)`` says so. A torn or malformed line is skipped; a journal that is
        not this user's own private file is set aside, not read."""
        try:
            f = open_trusted(self.path)
        except FileNotFoundError:
            return
        except PersistError as e:
            quarantine(self.path, str(e))
            return
        with f:
            for n, line in enumerate(f, 1):
                try:
                    entry = json.loads(line)
                    if not (isinstance(entry, dict) and isinstance(entry.get("m"), str)
                            and isinstance(entry.get("p"), str) and isinstance(entry.get("h"), dict)
                            and isinstance(entry.get("q", ""), str) and isinstance(entry.get("b", ""), str)):
                        raise ValueError("not a journal entry")
                    raw_body = entry.pop("b", "")
                    entry["body"] = base64.b64decode(raw_body, validate=True) if body(entry) else b""
                except ValueError as e:
                    log.warning("skipping a malformed moto journal line", line=n, error=str(e))
                    continue
                yield line if line.endswith(b"\n") else line + b"\n", entry

    def entries(self) -> Iterator[dict[str, Any]]:
        """The journal's entries, with their bodies (see :meth:`_scan`)."""
        for _line, entry in self._scan(lambda e: True):
            yield entry

    def replay(self, app: Any) -> tuple[int, int]:
        """Send every entry to the WSGI ``app`` (moto's, before it serves); compacts the
        journal first. Returns (replayed, failed)."""
        from werkzeug.test import EnvironBuilder, run_wsgi_app

        with self._lock:
            self._compact_locked()
        ok = failed = 0
        # moto's dispatcher works out the service of every request anew (a third of the
        # replay time); requests signed for the same service, host and target go to the same
        # backend application, so ask it once per kind
        route = getattr(app, "get_application", None)
        backends: dict[tuple[str, ...], Any] = {}
        for entry in self.entries():
            headers = {k: v for k, v in entry["h"].items() if k.lower() not in _SKIP_HEADERS}
            builder = EnvironBuilder(path=entry["p"], method=entry["m"], headers=headers,
                                     query_string=entry.get("q") or "", data=entry["body"])
            try:
                environ = builder.get_environ()
                target = app
                if route is not None:
                    kind = _request_kind(entry)
                    target = backends.get(kind)
                    if target is None:
                        target = backends[kind] = route(environ)
                _body, status, _headers = run_wsgi_app(target, environ, buffered=True)
            finally:
                builder.close()
            if 200 <= int(status.split()[0]) < 300:
                ok += 1
            else:
                failed += 1
                log.debug("moto journal entry did not replay", method=entry["m"], path=entry["p"],
                          status=status)
        return ok, failed

    # -- compaction --------------------------------------------------------------------

    def compact(self) -> None:
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        # first pass: what to keep (bodies only where compaction reads them: DeleteObjects)
        light = [entry for _line, entry in self._scan(
            lambda e: e["m"] == "POST" and "delete" in parse_qs(e.get("q") or "", keep_blank_values=True))]
        keep = compact_entries(light)
        if len(keep) == len(light) and self.path.exists():
            self._compacted_size = self.path.stat().st_size
            return
        # second pass: copy the kept lines as they are
        wanted = set(keep)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.compact.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for i, (line, _entry) in enumerate(self._scan(lambda e: False)):
                    if i in wanted:
                        out.write(line)
                        size += len(line)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self._file is not None:  # keep appending to the new file
            self._file.close()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            self._file = os.fdopen(fd, "ab", buffering=0)  # type: ignore[assignment]
        self._compacted_size = size
        log.debug("moto journal compacted", kept=len(keep), dropped=len(light) - len(keep))


_SCOPE = re.compile(r"Credential=[^/,]*/[^/,]*/([^/,]*)/([^/,]*)/aws4_request")


def _request_kind(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """What decides which moto backend serves a request: the signing service and region, the
    host, the ``X-Amz-Target`` prefix and the path's first segment."""
    headers = {k.lower(): str(v) for k, v in entry["h"].items()}
    scope = _SCOPE.search(headers.get("authorization", ""))
    return (
        scope.group(2) if scope else "", scope.group(1) if scope else "",
        headers.get("host", ""), headers.get("x-amz-target", "").split(".", 1)[0],
        entry["p"].lstrip("/").split("/", 1)[0],
    )


def _s3_target(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """(bucket, key) of a path-style S3 request ("" key for a bucket request); None when
    the request is not S3 or not path-style."""
    auth = str(entry["h"].get("Authorization") or entry["h"].get("authorization") or "")
    if "/s3/aws4_request" not in auth:
        return None
    host = str(entry["h"].get("Host") or entry["h"].get("host") or "")
    hostname = host.rsplit(":", 1)[0]
    if hostname not in ("127.0.0.1", "localhost", "[::1]"):
        return None  # virtual-host style: left alone
    bucket, _, key = entry["p"].lstrip("/").partition("/")
    return unquote(bucket), unquote(key)


def _deleted_keys(body: bytes) -> list[str] | None:
    """Keys of a DeleteObjects body without VersionId; None if it names versions or is not
    understood."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    keys = []
    for obj in root.iter():
        if obj.tag.rsplit("}", 1)[-1] != "Object":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in obj}
        if "VersionId" in fields or "Key" not in fields:
            return None
        keys.append(fields["Key"])
    return keys


def compact_entries(entries: list[Mapping[str, Any]]) -> list[int]:
    """Indices of the entries to keep.

    Drops S3 ``PutObject``s (path-style, unversioned buckets) whose object was overwritten
    or deleted later with nothing in between that depends on its content (a copy, a tag, a
    multipart step: those keep it), and a delete whose object no kept entry created.
    Everything else is kept as is.
    """
    drop: set[int] = set()
    pending: dict[tuple[str, str], list[int]] = {}  # droppable puts of a key
    live_kept: dict[tuple[str, str], bool] = {}  # the key's content comes from a kept entry
    versioned: set[str] = set()

    def pin(key: tuple[str, str]) -> None:
        pending.pop(key, None)
        live_kept[key] = True

    def delete(key: tuple[str, str]) -> bool:
        """Drop the key's pending puts; True if the delete itself is needed on replay."""
        drop.update(pending.pop(key, ()))
        needed = live_kept.get(key, True)  # unseen: created by something not tracked
        live_kept[key] = False
        return needed

    for i, entry in enumerate(entries):
        target = _s3_target(entry)
        if target is None:
            continue
        bucket, key = target
        method, query = entry["m"], entry.get("q") or ""
        headers = {k.lower(): v for k, v in entry["h"].items()}
        params = parse_qs(query, keep_blank_values=True)
        if not key:  # a bucket-level request
            if "versioning" in params or "object-lock" in params:
                versioned.add(bucket)
                for k in [k for k in pending if k[0] == bucket]:
                    pin(k)
            elif method == "POST" and "delete" in params and bucket not in versioned:
                keys = _deleted_keys(entry["body"])
                if keys is None:
                    for k in [k for k in pending if k[0] == bucket]:
                        pin(k)
                    continue
                needed = [delete((bucket, k)) for k in keys]
                if not any(needed):
                    drop.add(i)
            continue
        source = headers.get("x-amz-copy-source")
        if source:
            src_bucket, _, src_key = unquote(source.split("?", 1)[0]).lstrip("/").partition("/")
            pin((src_bucket, src_key))
            pin((bucket, key))
            continue
        if bucket in versioned:
            continue
        if method == "PUT" and not query:
            drop.update(pending.pop((bucket, key), ()))
            pending[(bucket, key)] = [i]
            live_kept[(bucket, key)] = False
        elif method == "DELETE" and not query:
            if not delete((bucket, key)):
                drop.add(i)
        else:
            pin((bucket, key))
    return [i for i in range(len(entries)) if i not in drop]


# ---------------------------------------------------------------------------------------
# cleaning up
# ---------------------------------------------------------------------------------------


def remove_orphan_code(functions_dir: Path, referenced: Iterable[Path]) -> int:
    """Remove ``functions_dir/<name>/code-*`` directories not in ``referenced`` (and the
    emptied ``<name>`` directories). Returns the number of code directories removed."""
    keep = {Path(p).resolve() for p in referenced}
    removed = 0
    if not functions_dir.is_dir():
        return 0
    for fn_dir in functions_dir.iterdir():
        if not fn_dir.is_dir() or fn_dir.is_symlink():
            continue
        for code in fn_dir.iterdir():
            if code.name.startswith("code-") and code.resolve() not in keep:
                shutil.rmtree(code, ignore_errors=True)
                removed += 1
        try:
            fn_dir.rmdir()  # only when empty
        except OSError:
            pass
    return removed


def sweep(state_dir: Path, *, shared_code: bool = False) -> dict[str, int]:
    """Remove what no running stack owns under ``state_dir``:

    * ``embedded-<pid>-<id>/`` run directories whose process is gone (an embedded stack
      removes its own when it stops; not when it is killed);
    * with ``shared_code`` (only when no shared stack runs: ``local down``), the extracted
      code under ``shared/functions/`` that no saved function uses. When the saved functions
      cannot be read, no code is removed.

    Nothing else (``stack.json``, keys, logs, saved state) is touched. Returns the counts.
    """
    from lambdarun.local.stack import pid_running  # the one zombie-aware check (stack imports us)

    removed_runs = 0
    if state_dir.is_dir():
        for entry in state_dir.iterdir():
            match = _EMBEDDED_DIR.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not pid_running(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed_runs += 1
    removed_code = 0
    if shared_code:
        shared = state_dir / "shared"
        saved = shared / "state" / "functions.json"
        try:
            doc = json.loads(read_trusted(saved, FUNCTIONS_FILE_LIMIT)) if saved.exists() else {"functions": []}
            referenced = [
                Path(f["code_dir"]) for f in doc["functions"]
                if not f.get("local_code") and isinstance(f.get("code_dir"), str)
            ]
        except (PersistError, ValueError, KeyError, TypeError) as e:
            # which code is in use is unknown: remove none (the next `up` decides)
            log.warning("not removing extracted code: saved functions unreadable", error=str(e))
        else:
            removed_code = remove_orphan_code(shared / "functions", referenced)
    if removed_runs or removed_code:
        log.info("removed stale local stack files", run_dirs=removed_runs, code_dirs=removed_code)
    return {"run_dirs": removed_runs, "code_dirs": removed_code}


def forget_saved_state(state_dir: Path) -> None:
    """Remove what a shared stack saved for the next start (functions, queued events, moto's
    journal, extracted code), and nothing else of ``state_dir``."""
    shared = state_dir / "shared"
    state = shared / "state"
    for name in ("functions.json", "moto.jsonl"):
        try:
            (state / name).unlink()
        except FileNotFoundError:
            pass
    shutil.rmtree(state / "events", ignore_errors=True)
    shutil.rmtree(shared / "functions", ignore_errors=True)
    log.info("saved local stack state forgotten", state_dir=str(state_dir))


def saved_state_summary(state_dir: Path) -> str:
    """What a shared stack saved in ``state_dir``, in words ("" when nothing): for
    ``lambdarun local status``. Reads only; an unreadable file counts as nothing."""
    state = state_dir / "shared" / "state"
    parts = []
    try:
        doc = json.loads(read_trusted(state / "functions.json", FUNCTIONS_FILE_LIMIT))
        functions = len(doc["functions"])
    except (PersistError, ValueError, KeyError, TypeError):
        functions = 0
    if functions:
        parts.append(f"{functions} function{'s' if functions != 1 else ''}")
    try:
        events = len(EventStore.read(state))
    except PersistError:
        events = 0
    if events:
        parts.append(f"{events} queued event{'s' if events != 1 else ''}")
    journal = state / "moto.jsonl"
    if journal.is_file() and journal.stat().st_size:
        parts.append(f"moto data ({journal.stat().st_size / 1e6:.1f} MB journal)")
    return ", ".join(parts)


class JournalMiddleware:
    """WSGI middleware in front of moto: appends each successful write to ``journal``;
    a successful ``POST /moto-api/reset`` empties it."""

    def __init__(self, app: Any, journal: MotoJournal) -> None:
        self.app = app
        self.journal = journal

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method in ("GET", "HEAD", "OPTIONS"):
            return self.app(environ, start_response)
        stream = environ["wsgi.input"]
        if environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            body = stream.read(length) if length > 0 else b""
        # the body is read whole: from here on it has a length and is not chunked any more
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items() if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        query = environ.get("QUERY_STRING", "")
        status: list[str] = []

        def capture(code: str, response_headers: Any, exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, response_headers, exc_info) if exc_info else start_response(code, response_headers)

        result = self.app(environ, capture)
        ok = bool(status) and status[-1][:1] == "2"
        if ok and path == "/moto-api/reset":
            self.journal.clear()
        elif ok and is_write(method, path, query, headers, body):
            self.journal.append(method, environ.get("RAW_URI", "").split("?", 1)[0] or path, query,
                                headers, body)
        return result


class StateInUseError(PersistError):
    """Another live process holds the state directory (another ``local up`` on it)."""


@attrs.define(eq=False)
class ServiceState:
    """The persistent state of one local Lambda service (``<run_dir>/state/``), held with an
    exclusive ``flock`` on ``state/.lock`` from :meth:`open` to :meth:`close` (the kernel
    releases it when the process dies, however it dies)."""

    directory: Path
    functions: FunctionStore
    events: EventStore
    lock_fd: int
    _closed: bool = False
    _close_lock: threading.Lock = attrs.field(factory=threading.Lock)

    @classmethod
    def open(cls, directory: Path) -> ServiceState:
        """Lock and open ``directory``; :class:`StateInUseError` when another process has it."""
        import fcntl

        directory = secure_dir(directory)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateInUseError(f"{directory} is in use by another local stack") from None
        return cls(directory, FunctionStore(directory), EventStore(directory), fd)

    def close(self) -> None:
        """Close the files and release the lock (once; later calls do nothing)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.events.close()
        os.close(self.lock_fd)
