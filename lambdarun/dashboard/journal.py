"""The run journal: what ``run``/``submit``/``map`` submitted and how each task ended.

This module is over ~500 lines on purpose: it holds one concept (the journal's SQLite file)
with its writer thread and its reader, which share the schema and must change together.

A small SQLite database (WAL) beside the target's local state, written by the *client*
process, read by the dashboard (``lambdarun ui``) from any process:

* the dashboard plugin's ``lambdarun_tasks_submitted`` hook calls :func:`record_batch` once
  per ``submit``/``map`` with the futures it returned; it queues one batch row and adds a
  done-callback to every future (the core knows nothing of the journal);
* a background writer thread per journal file drains that queue and commits in batches
  (every :data:`FLUSH_INTERVAL` seconds or :data:`FLUSH_ROWS` rows), so a task's completion
  costs its thread a tuple appended to a queue, not an fsync;
* :class:`Journal` reads it back (batches newest first, tasks with status, elapsed time,
  result size, bounded stdout/stderr, error type and remote traceback).

The journal is on for a target that keeps its state on this machine (``Target.state_dir()``
is not None: the ``local`` target) and off elsewhere unless ``[dashboard] journal`` says
``"on"`` (``"off"`` disables it everywhere). Its file is ``[dashboard] journal_path``,
default ``<the target's state dir>/journal.db`` (the local target's is ``[local]
state_dir``); the newest ``[dashboard] journal_keep`` batches are kept.

Moved here from ``lambdarun.journal`` (issue 18): the core records nothing itself.
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

import attrs
import structlog

from lambdarun.errors import LambdarunError
from lambdarun.private_files import private_file

__all__ = [
    "JournalError",
    "BatchRecord",
    "TaskRecord",
    "Journal",
    "JournalWriter",
    "journal_path",
    "journal_enabled",
    "record_batch",
    "flush",
    "MAX_OUTPUT",
]

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
DEFAULT_KEEP = 500
JOURNAL_FILE = "journal.db"

TASK_STATUSES = ("pending", "succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    kind     TEXT NOT NULL,
    backend  TEXT NOT NULL,
    function TEXT NOT NULL,
    total    INTEGER NOT NULL,
    created  REAL NOT NULL,
    pid      INTEGER NOT NULL,
    argv     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    batch_id      TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    task_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    submitted     REAL NOT NULL,
    finished      REAL,
    elapsed_ms    REAL,
    result_bytes  INTEGER,
    stdout        TEXT,
    stderr        TEXT,
    error_type    TEXT,
    error_message TEXT,
    traceback     TEXT,
    info          TEXT,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (batch_id, status, idx);
"""


class JournalError(LambdarunError):
    """The run journal could not be opened or read."""


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------


def _dashboard_section(settings: Any) -> Any:
    sections = getattr(settings, "sections", {}) or {}
    return sections.get("dashboard")


def _target_state_dir(session: Any) -> Path | None:
    """The target's local state folder (a target capability; None: the target keeps none
    on this machine, or is a third-party target written before ``state_dir`` existed)."""
    provider = getattr(session.target, "state_dir", None)
    state_dir = provider() if provider is not None else None
    return Path(state_dir) if state_dir is not None else None


def journal_enabled(session: Any) -> bool:
    """On for a target with a local state dir (the ``local`` target), or when
    ``[dashboard] journal = "on"``; ``"off"`` disables it everywhere."""
    section = _dashboard_section(session.settings)
    mode = getattr(section, "journal", "auto") if section is not None else "auto"
    if mode == "off":
        return False
    if mode == "on":
        return True
    return _target_state_dir(session) is not None


def journal_path(session: Any) -> Path:
    """``[dashboard] journal_path``, else ``journal.db`` in the target's state dir, else in
    the ``[local] state_dir`` setting (a target without local state, journal forced on)."""
    settings = session.settings
    section = _dashboard_section(settings)
    explicit = getattr(section, "journal_path", None) if section is not None else None
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = _target_state_dir(session)
    if base is None:
        local = (getattr(settings, "sections", {}) or {}).get("local")
        if local is None or not getattr(local, "state_dir", None):
            raise JournalError(
                f"the target {settings.target!r} keeps no state on this machine: set "
                "[dashboard] journal_path to the journal's file, or [dashboard] journal = \"off\""
            )
        base = Path(local.state_dir)
    return (base.expanduser() / JOURNAL_FILE).resolve()


def _keep(settings: Any) -> int:
    section = _dashboard_section(settings)
    return int(getattr(section, "journal_keep", DEFAULT_KEEP) or DEFAULT_KEEP) if section is not None else DEFAULT_KEEP


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    try:
        private_file(path)  # 0600 in a 0700 folder: runs hold arguments, outputs, tracebacks
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise JournalError(
            f"cannot open the run journal {path}: {exc}; set [dashboard] journal_path to a writable "
            "file or [dashboard] journal = \"off\""
        ) from exc
    return conn


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
        self._conn = _connect(path)
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
        writer = writer_for(journal_path(session), keep=_keep(settings))
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


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------


@attrs.frozen
class BatchRecord:
    """One ``submit``/``map`` call and the progress of its tasks."""

    seq: int
    id: str
    kind: str
    backend: str
    function: str
    total: int
    created: float
    pid: int
    argv: str
    counts: dict[str, int]

    @property
    def done(self) -> int:
        return self.total - self.counts.get("pending", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def status(self) -> str:
        if self.counts.get("pending", 0):
            return "running"
        if self.counts.get("failed", 0) or self.counts.get("cancelled", 0):
            return "failed"
        return "succeeded"


@attrs.frozen
class TaskRecord:
    """One task of a batch."""

    batch_id: str
    index: int
    task_id: str
    status: str
    submitted: float
    finished: float | None
    elapsed_ms: float | None
    result_bytes: int | None
    stdout: str | None
    stderr: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    info: dict[str, Any]


_TASK_COLUMNS = (
    "batch_id, idx, task_id, status, submitted, finished, elapsed_ms, result_bytes, stdout, stderr,"
    " error_type, error_message, traceback, info"
)


def _task(row: Sequence[Any]) -> TaskRecord:
    *head, info = row
    return TaskRecord(*head, info=json.loads(info) if info else {})


class Journal:
    """Read access to a journal file (any process; WAL readers never block the writer)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def for_session(cls, session: Any) -> Journal:
        """The journal ``session`` writes (see :func:`journal_path`)."""
        return cls(journal_path(session))

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:  # one connection shared by the dashboard's request threads
            if self._connection is None:
                if not self.path.exists():
                    return []
                self._connection = _connect(self.path)
            try:
                return self._connection.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the run journal {self.path}: {exc}") from exc

    def _counts(self, ids: Sequence[str]) -> dict[str, dict[str, int]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        out: dict[str, dict[str, int]] = {i: {} for i in ids}
        for batch_id, status, n in self._rows(
            f"SELECT batch_id, status, COUNT(*) FROM tasks WHERE batch_id IN ({marks}) GROUP BY 1, 2", ids
        ):
            out[batch_id][status] = n
        return out

    def batches(self, *, limit: int = 50, before: int | None = None, backend: str | None = None) -> list[BatchRecord]:
        """Batches newest first; ``before`` is the ``seq`` to page back from."""
        where, args = [], []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if backend:
            where.append("backend = ?")
            args.append(backend)
        sql = "SELECT seq, id, kind, backend, function, total, created, pid, argv FROM batches"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._rows(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit])
        counts = self._counts([r[1] for r in rows])
        return [BatchRecord(*r, counts=counts.get(r[1], {})) for r in rows]

    def batch(self, batch_id: str) -> BatchRecord | None:
        rows = self._rows(
            "SELECT seq, id, kind, backend, function, total, created, pid, argv FROM batches WHERE id = ?", (batch_id,)
        )
        if not rows:
            return None
        return BatchRecord(*rows[0], counts=self._counts([batch_id]).get(batch_id, {}))

    def tasks(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskRecord]:
        """Tasks of a batch in input order, optionally only those with ``status``."""
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE batch_id = ?"
        args: list[Any] = [batch_id]
        if status:
            sql += " AND status = ?"
            args.append(status)
        rows = self._rows(sql + " ORDER BY idx LIMIT ? OFFSET ?", [*args, limit, offset])
        return [_task(r) for r in rows]

    def task(self, batch_id: str, index: int) -> TaskRecord | None:
        rows = self._rows(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE batch_id = ? AND idx = ?", (batch_id, index))
        return _task(rows[0]) if rows else None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
