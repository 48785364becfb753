"""Checkpoint stores implementing :class:`lambdarun.types.CheckpointStore`.

* ``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` (SQLAlchemy convention): one file, WAL,
  one transaction and one row (a JSON array) per ``append``, so a batch of 1000 records is
  one fsync.
* ``dynamodb://table``: one item per execution (``sk="#META"``, holds version and state) and
  one item per append holding that batch's records (split at ~350 KB); every append is one
  ``TransactWriteItems`` whose first action is conditional on the loaded version.
* ``s3://bucket/prefix``: one object per append, ``<prefix>/<id>/v<version>.json``, written
  with ``IfNoneMatch="*"`` so exactly one writer can create each version.

All raise :class:`~lambdarun.errors.CheckpointConflictError` on a version mismatch and
:class:`~lambdarun.errors.ExecutionNotFoundError` for an unknown execution.

Each store also keeps one driver lease per execution, apart from its versioned data
(a ``leases`` row, a ``sk="#LEASE"`` item, a ``<id>/lease.json`` object), written with the
store's compare-and-set (a SQLite write transaction, a DynamoDB condition, S3
``IfNoneMatch``/``IfMatch``), so of two drivers racing for a lease exactly one wins.
"""

from __future__ import annotations

import datetime
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import attrs
import structlog

from lambdarun.errors import (
    CheckpointConflictError,
    CheckpointError,
    ExecutionNotFoundError,
    LeaseHeldError,
    LeaseLostError,
)
from lambdarun.private_files import private_file
from lambdarun.types import Checkpoint, Lease

log = structlog.get_logger(__name__)

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


def _not_found(execution_id: str, url: str) -> ExecutionNotFoundError:
    return ExecutionNotFoundError(
        f"No durable execution {execution_id!r} in {url}; check the ARN "
        "(`lambdarun durable list`) and the durable store_url setting."
    )


def _conflict(execution_id: str, expected: int, actual: int | None) -> CheckpointConflictError:
    return CheckpointConflictError(
        f"Execution {execution_id!r} is at version {actual}, not the expected {expected}: another "
        "writer checkpointed it first. Reload it and retry (the durable engine does this for "
        "service updates and refuses concurrent invocations)."
    )


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).isoformat(timespec="seconds")


_MAX_HOLDER = 256


def _check_lease_args(holder: str, ttl: float | None = None) -> None:
    if not isinstance(holder, str) or not holder or len(holder) > _MAX_HOLDER:
        raise CheckpointError(
            f"A lease holder id must be a non-empty string of at most {_MAX_HOLDER} characters, "
            f"not {str(holder)[:80]!r}"
        )
    if ttl is not None and not (isinstance(ttl, (int, float)) and ttl > 0 and ttl < 86_400):
        raise CheckpointError(f"A lease ttl must be a number of seconds in (0, 86400), not {ttl!r}")


def _malformed_lease(execution_id: str, where: str) -> CheckpointError:
    return CheckpointError(
        f"The lease of execution {execution_id!r} ({where}) is malformed; if no driver is running it, "
        "delete that lease entry and resume the execution."
    )


def lease_held_error(lease: Lease) -> LeaseHeldError:
    """The typed error a second driver gets: who holds the lease, since when, until when."""
    return LeaseHeldError(
        f"Execution {lease.execution_id!r} is driven by {lease.holder} since {_iso(lease.acquired_at)} "
        f"(last heartbeat {_iso(lease.heartbeat_at)}; the lease expires {_iso(lease.expires_at)} unless "
        "renewed). Only one driver may drive an execution: wait for it (`lambdarun durable resume ARN "
        "--wait SECONDS`, or the durable.lease_wait setting) or follow it with `lambdarun durable describe ARN`.",
        lease=lease,
    )


def lease_lost_error(execution_id: str, holder: str, current: Lease | None) -> LeaseLostError:
    now = f"{current.holder} holds it since {_iso(current.acquired_at)}" if current else "nobody holds it"
    return LeaseLostError(
        f"The lease on execution {execution_id!r} is no longer held by {holder} ({now}): its heartbeat "
        "stopped for longer than durable.lease_ttl and another driver may have taken over. This driver "
        "stops; `lambdarun durable describe ARN` shows the execution."
    )


# =====================================================================================
# SQLite
# =====================================================================================


class SQLiteCheckpointStore:
    """A single SQLite file in WAL mode; safe for threads and for several processes."""

    def __init__(self, path: str, *, synchronous: str = "FULL", url: str | None = None) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
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
                self._all.append(conn)
        return conn

    def create(self, execution_id: str, state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> Checkpoint:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO executions(id, version, state, status, created, nrecords) VALUES (?,?,?,?,?,?)",
                (execution_id, 1, _dumps(dict(state)), state.get("status"), time.time(), 1 if records else 0),
            )
            if records:
                conn.execute(
                    "INSERT INTO records(execution_id, seq, data) VALUES (?,?,?)",
                    (execution_id, 0, _dumps([dict(r) for r in records])),
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
                raise _not_found(execution_id, self.url)
            rows = conn.execute(
                "SELECT data FROM records WHERE execution_id=? ORDER BY seq", (execution_id,)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        records: list[Any] = []
        for (data,) in rows:
            records.extend(_loads(data))
        return Checkpoint(execution_id, row[0], _loads(row[1]), tuple(records))

    def load_state(self, execution_id: str) -> Checkpoint:
        row = self._conn().execute("SELECT version, state FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is None:
            raise _not_found(execution_id, self.url)
        return Checkpoint(execution_id, row[0], _loads(row[1]), ())

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
            row = conn.execute("SELECT version, nrecords FROM executions WHERE id=?", (execution_id,)).fetchone()
            if row is None:
                raise _not_found(execution_id, self.url)
            version, nrecords = row
            if version != expected_version:
                raise _conflict(execution_id, expected_version, version)
            if replace_records:
                conn.execute("DELETE FROM records WHERE execution_id=?", (execution_id,))
                nrecords = 0
            if records:  # one row per batch: one insert, one JSON array
                conn.execute(
                    "INSERT INTO records(execution_id, seq, data) VALUES (?,?,?)",
                    (execution_id, nrecords, _dumps([dict(r) for r in records])),
                )
                nrecords += 1
            if state is not None:
                conn.execute(
                    "UPDATE executions SET version=?, state=?, status=?, nrecords=? WHERE id=?",
                    (version + 1, _dumps(dict(state)), state.get("status"), nrecords, execution_id),
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
        return [Checkpoint(r[0], r[1], _loads(r[2]), ()) for r in rows]

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
            raise _malformed_lease(execution_id, f"row {execution_id!r} of table leases in {self.path}") from None

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
        _check_lease_args(holder, ttl)

        def change(conn: sqlite3.Connection, cur: Lease | None, now: float) -> Lease:
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise lease_held_error(cur)
            acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
            return self._put_lease(conn, Lease(execution_id, holder, acquired, now + ttl, now))

        return self._lease_txn(execution_id, change)

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        _check_lease_args(holder, ttl)

        def change(conn: sqlite3.Connection, cur: Lease | None, now: float) -> Lease:
            if cur is None or cur.holder != holder:
                raise lease_lost_error(execution_id, holder, cur)
            return self._put_lease(conn, attrs.evolve(cur, expires_at=now + ttl, heartbeat_at=now))

        return self._lease_txn(execution_id, change)

    def release_lease(self, execution_id: str, holder: str) -> None:
        _check_lease_args(holder)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM leases WHERE id=? AND holder=?", (execution_id, holder))
        conn.execute("COMMIT")

    def get_lease(self, execution_id: str) -> Lease | None:
        return self._lease_row(self._conn(), execution_id)

    def close(self) -> None:
        """Close every thread's connection (map branches write from worker threads)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


# =====================================================================================
# DynamoDB
# =====================================================================================

_ITEM_BUDGET = 350_000  # bytes of JSON per record item (DynamoDB items are <= 400 KB)


def _chunks(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The batch as one JSON array, cut into <= 350 KB pieces (rejoined by ``load``)."""
    text = _dumps([dict(r) for r in records])
    return [text[i : i + _ITEM_BUDGET] for i in range(0, len(text), _ITEM_BUDGET)] if records else []


class DynamoDBCheckpointStore:
    """Executions in one DynamoDB table (``pk`` string hash key, ``sk`` string range key)."""

    def __init__(self, table: str, client: Any, *, create_table: bool = True) -> None:
        self.table = table
        self.client = client
        self.url = f"dynamodb://{table}"
        if create_table:
            self.ensure_table()

    def ensure_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
            return
        except self.client.exceptions.ResourceNotFoundException:
            pass
        try:
            self.client.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except self.client.exceptions.ResourceInUseException:
            pass
        self.client.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def _record_puts(self, execution_id: str, version: int, records: Sequence[Mapping[str, Any]]) -> list[dict]:
        return [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": execution_id},
                        "sk": {"S": f"R#{version:012d}#{i:04d}"},
                        "records": {"S": chunk},
                    },
                }
            }
            for i, chunk in enumerate(_chunks(records))
        ]

    def create(self, execution_id: str, state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> Checkpoint:
        meta = {
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": {"S": execution_id},
                    "sk": {"S": "#META"},
                    "version": {"N": "1"},
                    "base": {"N": "0"},
                    "state": {"S": _dumps(dict(state))},
                    "status": {"S": str(state.get("status") or "")},
                    "created": {"N": repr(time.time())},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        self._transact([meta, *self._record_puts(execution_id, 1, records)], execution_id, 0, create=True)
        return Checkpoint(execution_id, 1, dict(state), tuple(records))

    def _transact(self, items: list[dict], execution_id: str, expected: int, create: bool = False) -> None:
        if len(items) > 100:
            raise CheckpointError(
                f"One checkpoint batch for {execution_id!r} needs {len(items)} DynamoDB items (max 100); "
                "lower the durable batch size."
            )
        try:
            self.client.transact_write_items(TransactItems=items)
        except self.client.exceptions.TransactionCanceledException as e:
            reasons = e.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                if create:
                    raise CheckpointConflictError(f"Execution {execution_id!r} already exists in {self.url}") from None
                actual = self._version_or_none(execution_id)
                if actual is None:
                    raise _not_found(execution_id, self.url) from None
                raise _conflict(execution_id, expected, actual) from None
            raise

    def _version_or_none(self, execution_id: str) -> int | None:
        item = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": execution_id}, "sk": {"S": "#META"}}, ConsistentRead=True
        ).get("Item")
        return int(item["version"]["N"]) if item else None

    def load(self, execution_id: str) -> Checkpoint:
        items: list[dict] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": execution_id}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        meta = next((i for i in items if i["sk"]["S"] == "#META"), None)
        if meta is None:
            raise _not_found(execution_id, self.url)
        version = int(meta["version"]["N"])
        base = int(meta.get("base", {"N": "0"})["N"])
        pieces: dict[int, list[str]] = {}
        for item in items:  # sorted by sk: version, then piece
            sk = item["sk"]["S"]
            if not sk.startswith("R#"):
                continue
            v = int(sk[2:14])
            if v <= version and (base == 0 or v >= base):
                pieces.setdefault(v, []).append(item["records"]["S"])
        records: list[Any] = []
        for v in sorted(pieces):
            records.extend(_loads("".join(pieces[v])))
        return Checkpoint(execution_id, version, _loads(meta["state"]["S"]), tuple(records))

    def _update_meta(self, execution_id: str, expected: int, state: Mapping[str, Any] | None, base: int | None) -> dict:
        sets = ["version = :nv"]
        values: dict[str, Any] = {":nv": {"N": str(expected + 1)}, ":ev": {"N": str(expected)}}
        names: dict[str, str] = {}
        if state is not None:
            sets += ["#st = :st", "#status = :status"]
            values[":st"] = {"S": _dumps(dict(state))}
            values[":status"] = {"S": str(state.get("status") or "")}
            names["#st"] = "state"
            names["#status"] = "status"
        if base is not None:
            sets.append("#base = :base")
            values[":base"] = {"N": str(base)}
            names["#base"] = "base"
        upd: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": execution_id}, "sk": {"S": "#META"}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "version = :ev",
            "ExpressionAttributeValues": values,
        }
        if names:
            upd["ExpressionAttributeNames"] = names
        return {"Update": upd}

    def append(
        self,
        execution_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        expected_version: int,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        items = [self._update_meta(execution_id, expected_version, state, None)]
        items += self._record_puts(execution_id, expected_version + 1, records)
        self._transact(items, execution_id, expected_version)
        return expected_version + 1

    def replace(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        *,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        new = expected_version + 1
        items = [self._update_meta(execution_id, expected_version, state, new if records is not None else None)]
        if records is not None:
            items += self._record_puts(execution_id, new, records)
        self._transact(items, execution_id, expected_version)
        return new

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Checkpoint]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "sk = :m",
            "ExpressionAttributeValues": {":m": {"S": "#META"}},
        }
        metas: list[dict] = []
        while True:
            page = self.client.scan(**kwargs)
            metas.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if status is not None:
            metas = [m for m in metas if m.get("status", {}).get("S") == status]
        metas.sort(key=lambda m: float(m["created"]["N"]), reverse=True)
        return [
            Checkpoint(m["pk"]["S"], int(m["version"]["N"]), _loads(m["state"]["S"]), ()) for m in metas[:limit]
        ]

    # -- lease: the item sk="#LEASE", written with conditions
    def _lease_key(self, execution_id: str) -> dict[str, Any]:
        return {"pk": {"S": execution_id}, "sk": {"S": "#LEASE"}}

    def _lease_of(self, execution_id: str, item: Mapping[str, Any]) -> Lease:
        try:
            return Lease(
                execution_id,
                item["holder"]["S"],
                float(item["acquired"]["N"]),
                float(item["expires"]["N"]),
                float(item["heartbeat"]["N"]),
            )
        except (KeyError, TypeError, ValueError):
            raise _malformed_lease(execution_id, f"item pk={execution_id!r} sk='#LEASE' in {self.url}") from None

    def get_lease(self, execution_id: str) -> Lease | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._lease_key(execution_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else self._lease_of(execution_id, item)

    def acquire_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        _check_lease_args(holder, ttl)
        for _ in range(3):
            cur = self.get_lease(execution_id)
            now = time.time()
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise lease_held_error(cur)
            lease = self._put_lease_if_free(execution_id, holder, ttl, cur, now)
            if lease is not None:
                return lease
        raise CheckpointError(f"Could not take the lease on {execution_id!r}: too much contention; retry")

    def _put_lease_if_free(self, execution_id: str, holder: str, ttl: float, cur: Lease | None, now: float) -> Lease | None:
        acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
        lease = Lease(execution_id, holder, acquired, now + ttl, now)
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    **self._lease_key(execution_id),
                    "holder": {"S": holder},
                    "acquired": {"N": repr(lease.acquired_at)},
                    "expires": {"N": repr(lease.expires_at)},
                    "heartbeat": {"N": repr(lease.heartbeat_at)},
                },
                # free, ours, or expired at the time of this write: the store decides, atomically
                ConditionExpression="attribute_not_exists(pk) OR holder = :h OR expires <= :now",
                ExpressionAttributeValues={":h": {"S": holder}, ":now": {"N": repr(now)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            cur = self.get_lease(execution_id)
            if cur is None:  # released in between: try again
                return None
            raise lease_held_error(cur) from None
        return lease

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        _check_lease_args(holder, ttl)
        now = time.time()
        try:
            item = self.client.update_item(
                TableName=self.table,
                Key=self._lease_key(execution_id),
                UpdateExpression="SET expires = :e, heartbeat = :now",
                ConditionExpression="holder = :h",
                ExpressionAttributeValues={":h": {"S": holder}, ":e": {"N": repr(now + ttl)}, ":now": {"N": repr(now)}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException:
            raise lease_lost_error(execution_id, holder, self.get_lease(execution_id)) from None
        return self._lease_of(execution_id, item)

    def release_lease(self, execution_id: str, holder: str) -> None:
        _check_lease_args(holder)
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=self._lease_key(execution_id),
                ConditionExpression="holder = :h",
                ExpressionAttributeValues={":h": {"S": holder}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # not ours (any more): nothing to give up

    def delete(self, execution_id: str) -> None:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": execution_id}},
            ProjectionExpression="pk, sk",
        ):
            for item in page.get("Items", []):
                self.client.delete_item(TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]})

    def close(self) -> None:
        pass


# =====================================================================================
# S3
# =====================================================================================


class S3CheckpointStore:
    """One JSON object per version under ``s3://bucket/prefix/<execution id>/``."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, execution_id: str, version: int | None = None) -> str:
        safe = execution_id.replace("/", "%2F").replace(":", "%3A").replace("$", "%24")
        base = f"{self.prefix}/{safe}/" if self.prefix else f"{safe}/"
        return base if version is None else f"{base}v{version:012d}.json"

    def _put_new(self, execution_id: str, version: int, body: dict[str, Any], expected: int) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(execution_id, version), Body=_dumps(body).encode(), IfNoneMatch="*"
            )
        except self.client.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                if version == 1:
                    raise CheckpointConflictError(f"Execution {execution_id!r} already exists in {self.url}") from None
                raise _conflict(execution_id, expected, None) from None
            raise

    def _versions(self, execution_id: str) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(execution_id)
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if name.startswith("v") and name.endswith(".json"):
                    out.append((int(name[1:-5]), obj["Key"]))
        out.sort()
        return out

    def create(self, execution_id: str, state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> Checkpoint:
        self._put_new(execution_id, 1, {"state": dict(state), "records": list(records), "replace": True}, 0)
        return Checkpoint(execution_id, 1, dict(state), tuple(records))

    def load(self, execution_id: str) -> Checkpoint:
        versions = self._versions(execution_id)
        if not versions:
            raise _not_found(execution_id, self.url)
        bodies = [_loads(self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read()) for _, k in versions]
        start = max(i for i, b in enumerate(bodies) if b.get("replace"))
        records: list[Any] = []
        state: dict[str, Any] = {}
        for b in bodies[start:]:
            records.extend(b.get("records") or [])
        for b in bodies:
            if b.get("state") is not None:
                state = b["state"]
        return Checkpoint(execution_id, versions[-1][0], state, tuple(records))

    def append(
        self,
        execution_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        expected_version: int,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        self._check_version(execution_id, expected_version)
        body = {"state": dict(state) if state is not None else None, "records": list(records)}
        self._put_new(execution_id, expected_version + 1, body, expected_version)
        return expected_version + 1

    def replace(
        self,
        execution_id: str,
        state: Mapping[str, Any],
        *,
        expected_version: int,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        self._check_version(execution_id, expected_version)
        body = {"state": dict(state), "records": list(records or []), "replace": records is not None}
        self._put_new(execution_id, expected_version + 1, body, expected_version)
        return expected_version + 1

    def _check_version(self, execution_id: str, expected: int) -> None:
        versions = self._versions(execution_id)
        if not versions:
            raise _not_found(execution_id, self.url)
        if versions[-1][0] != expected:
            raise _conflict(execution_id, expected, versions[-1][0])

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Checkpoint]:
        out: list[Checkpoint] = []
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            for cp in page.get("CommonPrefixes", []):
                eid = cp["Prefix"][len(prefix):].rstrip("/")
                eid = eid.replace("%2F", "/").replace("%3A", ":").replace("%24", "$")
                try:
                    c = self.load(eid)
                except ExecutionNotFoundError:  # a lease without its execution
                    continue
                if status is None or c.state.get("status") == status:
                    out.append(Checkpoint(eid, c.version, c.state, ()))
        out.sort(key=lambda c: c.state.get("StartTimestamp") or 0, reverse=True)
        return out[:limit]

    def delete(self, execution_id: str) -> None:
        keys = [{"Key": k} for _, k in self._versions(execution_id)]
        keys.append({"Key": self._key(execution_id) + "lease.json"})
        self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    # -- lease: the object <id>/lease.json, written with IfNoneMatch="*" / IfMatch=<etag>
    def _read_lease(self, execution_id: str) -> tuple[Lease | None, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(execution_id) + "lease.json")
        except self.client.exceptions.NoSuchKey:
            return None, None
        try:
            body = _loads(obj["Body"].read())
            lease = Lease(
                execution_id, str(body["holder"]), float(body["acquired"]), float(body["expires"]),
                float(body["heartbeat"]),
            )
        except (KeyError, TypeError, ValueError):
            raise _malformed_lease(execution_id, f"s3://{self.bucket}/{self._key(execution_id)}lease.json") from None
        return lease, obj["ETag"]

    def _write_lease(self, lease: Lease, etag: str | None) -> bool:
        """Compare-and-set: create (no etag) or replace the object read with ``etag``."""
        body = {
            "holder": lease.holder,
            "acquired": lease.acquired_at,
            "expires": lease.expires_at,
            "heartbeat": lease.heartbeat_at,
            "nonce": secrets.token_hex(8),  # every write gets a new ETag
        }
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(lease.execution_id) + "lease.json", Body=_dumps(body).encode(), **cond
            )
        except self.client.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey", "404"):
                return False
            raise
        return True

    def get_lease(self, execution_id: str) -> Lease | None:
        return self._read_lease(execution_id)[0]

    def acquire_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        _check_lease_args(holder, ttl)
        for _ in range(3):
            cur, etag = self._read_lease(execution_id)
            now = time.time()
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise lease_held_error(cur)
            acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
            lease = Lease(execution_id, holder, acquired, now + ttl, now)
            if self._write_lease(lease, etag):
                return lease
        cur = self.get_lease(execution_id)
        if cur is None:
            raise CheckpointError(f"Could not take the lease on {execution_id!r}: too much contention; retry")
        raise lease_held_error(cur)

    def renew_lease(self, execution_id: str, holder: str, ttl: float) -> Lease:
        _check_lease_args(holder, ttl)
        cur, etag = self._read_lease(execution_id)
        if cur is None or cur.holder != holder:
            raise lease_lost_error(execution_id, holder, cur)
        now = time.time()
        lease = attrs.evolve(cur, expires_at=now + ttl, heartbeat_at=now)
        if not self._write_lease(lease, etag):
            raise lease_lost_error(execution_id, holder, self.get_lease(execution_id))
        return lease

    def release_lease(self, execution_id: str, holder: str) -> None:
        _check_lease_args(holder)
        cur, etag = self._read_lease(execution_id)
        if cur is None or cur.holder != holder:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(execution_id) + "lease.json", IfMatch=etag)
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise

    def close(self) -> None:
        pass


# =====================================================================================
# URL dispatch
# =====================================================================================


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise CheckpointError(f"Not a SQLite store URL: {url!r}; use sqlite:///relative.db or sqlite:////abs.db")
    return url[len("sqlite:///"):]


def open_store(url: str, session: Any = None, *, client: Any = None) -> Any:
    """Open the store for ``url``; boto3 clients come from ``client`` or the session's target."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return SQLiteCheckpointStore(sqlite_path(url), url=url)
    if scheme in ("dynamodb", "s3"):
        service = "dynamodb" if scheme == "dynamodb" else "s3"
        if client is None:
            if session is not None:
                client = session.target.client(service)
            else:
                import boto3

                client = boto3.client(service)
        parsed = urlparse(url)
        if scheme == "dynamodb":
            return DynamoDBCheckpointStore(parsed.netloc, client)
        return S3CheckpointStore(parsed.netloc, parsed.path.lstrip("/"), client)
    raise CheckpointError(
        f"Unsupported durable store URL {url!r}: use sqlite:///path.db, dynamodb://table or s3://bucket/prefix"
    )
