"""``moto.jsonl``: a journal of the successful writes moto served, replayed through moto's
WSGI application before its server listens again (moto 5.2 has no persistence of its own),
and the WSGI middleware that writes it."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import structlog

from lambdarun.local.state_files import PersistError, quarantine, secure_dir, open_trusted

log = structlog.get_logger(__name__)


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
