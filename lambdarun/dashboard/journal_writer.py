"""The run journal's writer: one background thread per journal file, fed by futures.

:func:`record_batch` queues a batch row per ``submit``/``map`` and a done-callback per
future; the writer thread commits in batches (every :data:`FLUSH_INTERVAL` seconds or
:data:`FLUSH_ROWS` rows), so a task's completion costs its thread a tuple appended to a
queue, not an fsync. See :mod:`lambdarun.dashboard.journal` for the whole.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import queue
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from lambdarun.dashboard.journal_store import (
    DEFAULT_KEEP,
    JournalError,
    connect,
    journal_enabled,
    journal_keep,
    journal_path,
)

log = structlog.get_logger(__name__)

#: characters of stdout, stderr and traceback kept per task (the tail is kept)
MAX_OUTPUT = 32 * 1024
#: characters of an error message kept per task
MAX_MESSAGE = 4 * 1024
#: the writer commits at least this often while rows are queued (seconds)
FLUSH_INTERVAL = 0.2
#: ... or as soon as this many rows are queued
FLUSH_ROWS = 2000
#: batches kept by default


def _tail(text: Any, limit: int = MAX_OUTPUT) -> str | None:
    if text is None:
        return None
    text = str(text)
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"[... {cut} characters cut ...]\n" + text[cut:]


def _plain_info(info: Any) -> str | None:
    """The JSON of a future's ``info`` entries that are plain scalars (links, sizes)."""
    if not info:
        return None
    plain = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool)) and len(str(v)) <= 2048}
    return json.dumps(plain) if plain else None


def _task_outcome(future: concurrent.futures.Future) -> tuple[str, dict[str, Any]]:
    """Status and the columns describing how ``future`` ended (runs in the writer thread)."""
    out: dict[str, Any] = {
        "stdout": _tail(getattr(future, "stdout", None) or None),
        "stderr": _tail(getattr(future, "stderr", None) or None),
        "info": _plain_info(getattr(future, "info", None)),
    }
    info = getattr(future, "info", None) or {}
    size = info.get("result_bytes")
    out["result_bytes"] = int(size) if isinstance(size, int) else None
    if future.cancelled():
        return "cancelled", out
    exc = future.exception()
    if exc is None:
        return "succeeded", out
    remote = getattr(future, "remote_traceback", None) or getattr(exc, "remote_traceback", None)
    if not remote:
        remote = "".join(traceback.format_exception(exc))
    original = getattr(exc, "original_type", None)
    kind = type(exc)
    out["error_type"] = original if isinstance(original, str) and original else (
        kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    )
    out["error_message"] = _tail(str(exc), MAX_MESSAGE)
    out["traceback"] = _tail(remote)
    return "failed", out


class JournalWriter:
    """The background writer of one journal file (one per file per process)."""

    def __init__(self, path: Path, *, keep: int = DEFAULT_KEEP) -> None:
        self.path = path
        self.keep = keep
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._conn = connect(path)
        self._idle = threading.Condition()
        self._pending = 0  # items queued and not yet committed
        self._closed = False
        self._batches: set[str] = set()  # recorded by this process: closed out at exit
        self._thread = threading.Thread(target=self._loop, name="lambdarun-journal", daemon=True)
        self._thread.start()
        self.rows_written = 0
        self.seconds_writing = 0.0

    # -- producer side (any thread) ---------------------------------------------------

    def _put(self, item: tuple[Any, ...]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    def add_batch(self, batch: tuple[Any, ...], tasks: list[tuple[Any, ...]]) -> None:
        self._batches.add(batch[0])
        self._put(("batch", batch, tasks))

    def task_done(self, batch_id: str, index: int, finished: float, future: concurrent.futures.Future) -> None:
        self._put(("done", batch_id, index, finished, future))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Commit what is queued; tasks of this process still pending will never finish
        (the process is ending): they are marked cancelled, so no run shows as running forever."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)
        try:
            if self._batches:
                ids = sorted(self._batches)
                marks = ",".join("?" * len(ids))
                self._conn.execute(
                    "UPDATE tasks SET status = 'cancelled', error_type = 'ProcessExited', error_message ="
                    " 'the calling process ended before the task finished'"
                    f" WHERE status = 'pending' AND batch_id IN ({marks})",
                    ids,
                )
        except sqlite3.Error:  # best effort at exit
            log.warning("could not close out pending tasks in the run journal", path=str(self.path), exc_info=True)
        finally:
            self._conn.close()
            with _writers_lock:
                if _writers.get(self.path) is self:
                    del _writers[self.path]

    # -- the writer thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            deadline = time.monotonic() + FLUSH_INTERVAL
            stop = False
            while len(items) < FLUSH_ROWS:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            try:
                self._write(items)
            except Exception:  # the journal must never break the caller's work
                log.warning("run journal write failed", path=str(self.path), rows=len(items), exc_info=True)
            written = len(items)
            items = item = nxt = None  # hold no finished future (nor its result) while waiting for more
            with self._idle:
                self._pending -= written
                self._idle.notify_all()
            if stop:
                return

    def _write(self, items: Sequence[tuple[Any, ...]]) -> None:
        started = time.perf_counter()
        batches, task_rows, updates = [], [], []
        for item in items:
            if item[0] == "batch":
                batches.append(item[1])
                task_rows.extend(item[2])
            else:
                _, batch_id, index, finished, future = item
                status, cols = _task_outcome(future)
                updates.append(
                    (
                        status, finished, cols["result_bytes"], cols["stdout"], cols["stderr"],
                        cols.get("error_type"), cols.get("error_message"), cols.get("traceback"),
                        cols["info"], finished, batch_id, index,
                    )
                )
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batches:
                conn.executemany(
                    "INSERT OR IGNORE INTO batches (id, kind, backend, function, total, created, pid, argv)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    batches,
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO tasks (batch_id, idx, task_id, status, submitted)"
                    " VALUES (?, ?, ?, 'pending', ?)",
                    task_rows,
                )
            if updates:
                conn.executemany(
                    "UPDATE tasks SET status = ?, finished = ?, result_bytes = ?, stdout = ?, stderr = ?,"
                    " error_type = ?, error_message = ?, traceback = ?, info = ?,"
                    " elapsed_ms = (? - submitted) * 1000.0"
                    " WHERE batch_id = ? AND idx = ?",
                    updates,
                )
            if batches:
                self._prune(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.rows_written += len(task_rows) + len(updates)
        self.seconds_writing += time.perf_counter() - started

    def _prune(self, conn: sqlite3.Connection) -> None:
        (newest,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()
        cutoff = newest - self.keep
        if cutoff <= 0:
            return
        old = [row[0] for row in conn.execute("SELECT id FROM batches WHERE seq <= ?", (cutoff,))]
        if old:
            conn.executemany("DELETE FROM tasks WHERE batch_id = ?", [(b,) for b in old])
            conn.execute("DELETE FROM batches WHERE seq <= ?", (cutoff,))


_writers: dict[Path, JournalWriter] = {}
_writers_lock = threading.Lock()


def writer_for(path: Path, *, keep: int = DEFAULT_KEEP) -> JournalWriter:
    """The process-wide writer of ``path`` (started on first use, closed at exit)."""
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = JournalWriter(path, keep=keep)
        return writer


def flush(timeout: float = 10.0) -> bool:
    """Commit everything this process has queued, in every journal; False on timeout."""
    with _writers_lock:
        writers = list(_writers.values())
    return all(w.flush(timeout) for w in writers)


@atexit.register
def _close_writers() -> None:
    with _writers_lock:
        writers = list(_writers.values())
        _writers.clear()
    for writer in writers:
        try:
            writer.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass


def _function_name(func: Any) -> str:
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__qualname__
    return f"{module}.{name}" if module else str(name)


def record_batch(
    session: Any,
    backend_id: str,
    func: Callable[..., Any],
    futures: Iterable[concurrent.futures.Future],
    *,
    kind: str = "map",
) -> str | None:
    """Journal one ``submit`` (``kind="run"``) or ``map`` and follow its futures.

    Returns the batch id, or None when the journal is off for this session (see
    :func:`journal_enabled`) or cannot be opened (logged once per call, never raised: the
    journal must not break the work it describes).
    """
    settings = session.settings
    if not journal_enabled(session):
        return None
    futures = list(futures)
    try:
        writer = writer_for(journal_path(session), keep=journal_keep(settings))
    except JournalError as exc:
        log.warning("run journal disabled for this call", error=str(exc))
        return None
    batch_id = uuid.uuid4().hex
    now = time.time()
    writer.add_batch(
        (batch_id, kind, backend_id, _function_name(func), len(futures), now, os.getpid(), " ".join(sys.argv)[:500]),
        [(batch_id, i, getattr(f, "task_id", "") or "", now) for i, f in enumerate(futures)],
    )
    done = writer.task_done
    clock = time.time
    for index, future in enumerate(futures):
        future.add_done_callback(lambda f, i=index: done(batch_id, i, clock(), f))
    return batch_id
