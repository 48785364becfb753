"""SQLite store: WAL checkpoints run on the store's background thread, not inside an append."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from lambdarun_durable.stores import SQLiteCheckpointStore


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "durable-sqlite-checkpointer"]


def test_wal_is_checkpointed_in_the_background_and_nothing_is_lost(tmp_path: Any) -> None:
    path = str(tmp_path / "wal.db")
    store = SQLiteCheckpointStore(path)
    before = len(_threads())
    try:
        store.create("e", {"status": "RUNNING"})
        version = 1
        blob = "x" * 100_000
        for i in range(60):  # ~6 MB of records: past the 4 MB checkpoint threshold
            version = store.append("e", [{"n": i, "blob": blob}], expected_version=version)
        # the writer connections never checkpoint themselves
        assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        deadline = time.monotonic() + 10
        while store.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.checkpoints >= 1
        assert len(_threads()) == before + 1
        # every acknowledged append is there, from another connection too
        cp = store.load("e")
        assert cp.version == 61 and [r["n"] for r in cp.records] == list(range(60))
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT COUNT(*) FROM records WHERE execution_id='e'").fetchone()[0] == 60
        finally:
            other.close()
    finally:
        store.close()
    assert len(_threads()) == before  # close() stops the checkpointer


def test_store_reused_after_close_checkpoints_again(tmp_path: Any) -> None:
    store = SQLiteCheckpointStore(str(tmp_path / "reuse.db"))
    try:
        store.create("e", {"status": "RUNNING"})
        version = 1
        for i in range(45):
            version = store.append("e", [{"blob": "y" * 100_000}], expected_version=version)
        store.close()
        first = store.checkpoints
        for i in range(45):
            version = store.append("e", [{"blob": "z" * 100_000}], expected_version=version)
        deadline = time.monotonic() + 10
        while store.checkpoints == first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.checkpoints > first
        assert len(store.load("e").records) == 90
    finally:
        store.close()
