"""``sqlite:///relative.db`` / ``sqlite:////abs/path.db``: the default checkpoint store.

One file, WAL, one transaction and one row (a JSON array) per ``append``, so a batch of
1000 records is one fsync. The lease is a ``leases`` row written in a write transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from lambdarun.errors import CheckpointConflictError
from lambdarun.private_files import private_file
from lambdarun.types import Checkpoint, Lease

from lambdarun_durable.stores.base import (
    check_lease_args,
    conflict_error,
    dumps,
    lease_held_error,
    lease_lost_error,
    loads,
    malformed_lease_error,
    not_found_error,
)


class SQLiteCheckpointStore:
    """A single SQLite file in WAL mode; safe for threads and for several processes."""

    def __init__(self, path: str, *, synchronous: str = "FULL", url: str | None = None) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._all_lock = threading.Lock()
        # 0600 in a 0700 folder: checkpoints hold step results and inputs
        if path != ":memory:" and not path.startswith("file:"):
            private_file(path)
        conn = self._conn()
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS executions (
                id TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL,
                status TEXT, created REAL NOT NULL, nrecords INTEGER NOT NULL DEFAULT 0); -- nrecords: batches
            CREATE INDEX IF NOT EXISTS executions_created ON executions(created);
            CREATE TABLE IF NOT EXISTS records (
                execution_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
                PRIMARY KEY (execution_id, seq)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS leases (
                id TEXT PRIMARY KEY, holder TEXT NOT NULL, acquired REAL NOT NULL,
                expires REAL NOT NULL, heartbeat REAL NOT NULL);
            """
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._all_lock:
                self._all.append((threading.current_thread(), conn))
        return conn

    def create(self, execution_id: str, state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> Checkpoint:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO executions(id, version, state, status, created, nrecords) VALUES (?,?,?,?,?,?)",
                (execution_id, 1, dumps(dict(state)), state.get("status"), time.time(), 1 if records else 0),
            )
            if records:
                conn.execute(
                    "INSERT INTO records(execution_id, seq, data) VALUES (?,?,?)",
                    (execution_id, 0, dumps([dict(r) for r in records])),
                )
            conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")
            raise CheckpointConflictError(f"Execution {execution_id!r} already exists in {self.url}") from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Checkpoint(execution_id, 1, dict(state), tuple(records))

    def load(self, execution_id: str) -> Checkpoint:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT version, state FROM executions WHERE id=?", (execution_id,)).fetchone()
            if row is None:
                raise not_found_error(execution_id, self.url)
            rows = conn.execute(
                "SELECT data FROM records WHERE execution_id=? ORDER BY seq", (execution_id,)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        records: list[Any] = []
        for (data,) in rows:
            records.extend(loads(data))
        return Checkpoint(execution_id, row[0], loads(row[1]), tuple(records))

    def load_state(self, execution_id: str) -> Checkpoint:
        row = self._conn().execute("SELECT version, state FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is None:
            raise not_found_error(execution_id, self.url)
        return Checkpoint(execution_id, row[0], loads(row[1]), ())

    def _write(
        self,
        execution_id: str,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None,
        state: Mapping[str, Any] | None,
        replace_records: bool,
    ) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not replace_records:
                # the common case in three statements: the version check and bump in one UPDATE
                # (RETURNING the batch count), the batch's row, COMMIT
                n = 1 if records else 0
                if state is not None:
                    rows = conn.execute(
                        "UPDATE executions SET version=version+1, nrecords=nrecords+?, state=?, status=? "
                        "WHERE id=? AND version=? RETURNING nrecords",
                        (n, dumps(dict(state)), state.get("status"), execution_id, expected_version),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        "UPDATE executions SET version=version+1, nrecords=nrecords+? "
                        "WHERE id=? AND version=? RETURNING nrecords",
                        (n, execution_id, expected_version),
                    ).fetchall()
                if not rows:
                    row = conn.execute("SELECT version FROM executions WHERE id=?", (execution_id,)).fetchone()
                    if row is None:
                        raise not_found_error(execution_id, self.url)
                    raise conflict_error(execution_id, expected_version, row[0])
                if records:  # one row per batch: one insert, one JSON array
                    conn.execute(
                        "INSERT INTO records(execution_id, seq, data) VALUES (?,?,?)",
                        (execution_id, rows[0][0] - 1, dumps([dict(r) for r in records])),
                    )
                conn.execute("COMMIT")
                return expected_version + 1
            row = conn.execute("SELECT version, nrecords FROM executions WHERE id=?", (execution_id,)).fetchone()
            if row is None:
                raise not_found_error(execution_id, self.url)
            version, nrecords = row
            if version != expected_version:
                raise conflict_error(execution_id, expected_version, version)
            conn.execute("DELETE FROM records WHERE execution_id=?", (execution_id,))
            nrecords = 0
            if records:
                conn.execute(
                    "INSERT INTO records(execution_id, seq, data) VALUES (?,?,?)",
                    (execution_id, nrecords, dumps([dict(r) for r in records])),
                )
                nrecords += 1
            if state is not None:
                conn.execute(
                    "UPDATE executions SET version=?, state=?, status=?, nrecords=? WHERE id=?",
                    (version + 1, dumps(dict(state)), state.get("status"), nrecords, execution_id),
                )
            else:
                conn.execute(
                    "UPDATE executions SET version=?, nrecords=? WHERE id=?", (version + 1, nrecords, execution_id)
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return version + 1

    def append(
        self,
        execution_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        expected_version: int,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        return self._write(execution_id, expected_version, records, state, False)

    def replace(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        *,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        return self._write(execution_id, expected_version, records, state, records is not None)

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Checkpoint]:
        conn = self._conn()
        if status is None:
            rows = conn.execute(
                "SELECT id, version, state FROM executions ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT id, version, state FROM executions WHERE status=? ORDER BY created DESC LIMIT ?",
                (status, limit),
            ).fetchall()
        return [Checkpoint(r[0], r[1], loads(r[2]), ()) for r in rows]

    def delete(self, execution_id: str) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM records WHERE execution_id=?", (execution_id,))
        conn.execute("DELETE FROM executions WHERE id=?", (execution_id,))
        conn.execute("DELETE FROM leases WHERE id=?", (execution_id,))
        conn.execute("COMMIT")

    # -- lease: one write transaction (BEGIN IMMEDIATE) per change
    def _lease_row(self, conn: sqlite3.Connection, execution_id: str) -> Lease | None:
        row = conn.execute(
            "SELECT holder, acquired, expires, heartbeat FROM leases WHERE id=?", (execution_id,)
        ).fetchone()
        if row is None:
            return None
        try:
            return Lease(execution_id, str(row[0]), float(row[1]), float(row[2]), float(row[3]))
        except (TypeError, ValueError):
            raise malformed_lease_error(execution_id, f"row {execution_id!r} of table leases in {self.path}") from None

    def _lease_txn(self, execution_id: str, change: Any) -> Any:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = change(conn, self._lease_row(conn, execution_id), time.time())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def _put_lease(self, conn: sqlite3.Connection, lease: Lease) -> Lease:
        conn.execute(
            "INSERT OR REPLACE INTO leases(id, holder, acquired, expires, heartbeat) VALUES (?,?,?,?,?)",
            (lease.execution_id, lease.holder, lease.acquired_at, lease.expires_at, lease.heartbeat_at),
        )
        return lease

    def acquire_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        check_lease_args(holder, ttl)

        def change(conn: sqlite3.Connection, cur: Lease | None, now: float) -> Lease:
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise lease_held_error(cur)
            acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
            return self._put_lease(conn, Lease(execution_id, holder, acquired, now + ttl, now))

        return self._lease_txn(execution_id, change)

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        check_lease_args(holder, ttl)

        def change(conn: sqlite3.Connection, cur: Lease | None, now: float) -> Lease:
            if cur is None or cur.holder != holder:
                raise lease_lost_error(execution_id, holder, cur)
            return self._put_lease(conn, attrs.evolve(cur, expires_at=now + ttl, heartbeat_at=now))

        return self._lease_txn(execution_id, change)

    def release_lease(self, execution_id: str, holder: str) -> None:
        check_lease_args(holder)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM leases WHERE id=? AND holder=?", (execution_id, holder))
        conn.execute("COMMIT")

    def get_lease(self, execution_id: str) -> Lease | None:
        return self._lease_row(self._conn(), execution_id)

    def close(self) -> None:
        """Close the connections of this thread and of threads that have ended (map branches
        write from worker threads). A live thread's connection is never closed from here: it
        may be in the middle of a query (closing it under one crashed the interpreter), so it
        is dropped instead and closes when that thread lets go of it."""
        with self._all_lock:
            conns, self._all = self._all, []
        mine = getattr(self._local, "conn", None)
        for thread, conn in conns:
            if conn is mine or not thread.is_alive():
                conn.close()
        self._local = threading.local()
