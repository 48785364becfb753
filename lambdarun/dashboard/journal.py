"""The run journal: what ``run``/``submit``/``map`` submitted and how each task ended.

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

By concept: :mod:`~lambdarun.dashboard.journal_store` (the file: settings, schema,
connection), :mod:`~lambdarun.dashboard.journal_writer` (the writer thread and
:func:`record_batch`), and this module (the reader, and every public name of the journal).

The journal is on for a target that keeps its state on this machine (``Target.state_dir()``
is not None: the ``local`` target) and off elsewhere unless ``[dashboard] journal`` says
``"on"`` (``"off"`` disables it everywhere). Its file is ``[dashboard] journal_path``,
default ``<the target's state dir>/journal.db`` (the local target's is ``[local]
state_dir``); the newest ``[dashboard] journal_keep`` batches are kept.

Moved here from ``lambdarun.journal`` (issue 18): the core records nothing itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from lambdarun.dashboard.journal_store import (
    DEFAULT_KEEP,
    JOURNAL_FILE,
    TASK_STATUSES,
    JournalError,
    connect,
    journal_enabled,
    journal_path,
)
from lambdarun.dashboard.journal_writer import (
    FLUSH_INTERVAL,
    FLUSH_ROWS,
    MAX_MESSAGE,
    MAX_OUTPUT,
    JournalWriter,
    flush,
    record_batch,
    writer_for,
)

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
    "MAX_MESSAGE",
    "FLUSH_INTERVAL",
    "FLUSH_ROWS",
    "DEFAULT_KEEP",
    "JOURNAL_FILE",
    "TASK_STATUSES",
    "writer_for",
]


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
                self._connection = connect(self.path)
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
