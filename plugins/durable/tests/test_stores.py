"""CheckpointStore conformance: SQLite, DynamoDB (moto server) and S3 (moto server)."""

from __future__ import annotations

from typing import Any

import pytest

from lambdarun.errors import CheckpointConflictError, ExecutionNotFoundError

pytestmark = pytest.mark.timeout(30)


def test_create_load_append_replace(any_store: Any) -> None:
    cp = any_store.create("arn:aws:lambda:x:1:function:f:$LATEST/durable-execution/n/1", {"status": "RUNNING"})
    eid = cp.execution_id
    assert cp.version == 1
    loaded = any_store.load(eid)
    assert (loaded.version, dict(loaded.state), loaded.records) == (1, {"status": "RUNNING"}, ())
    v2 = any_store.append(eid, [{"n": 1}, {"n": 2}], expected_version=1)
    v3 = any_store.append(eid, [{"n": 3}], expected_version=v2, state={"status": "SUCCEEDED"})
    assert (v2, v3) == (2, 3)
    loaded = any_store.load(eid)
    assert [r["n"] for r in loaded.records] == [1, 2, 3]
    assert loaded.state["status"] == "SUCCEEDED" and loaded.version == 3
    v4 = any_store.replace(eid, {"status": "RUNNING"}, expected_version=3, records=[{"n": 9}])
    loaded = any_store.load(eid)
    assert (v4, [r["n"] for r in loaded.records], loaded.state["status"]) == (4, [9], "RUNNING")
    v5 = any_store.replace(eid, {"status": "X"}, expected_version=4)
    assert [r["n"] for r in any_store.load(eid).records] == [9] and v5 == 5


def test_conflicts_and_missing(any_store: Any) -> None:
    any_store.create("e1", {"status": "RUNNING"})
    with pytest.raises(CheckpointConflictError):
        any_store.create("e1", {"status": "RUNNING"})
    any_store.append("e1", [{"a": 1}], expected_version=1)
    with pytest.raises(CheckpointConflictError):
        any_store.append("e1", [{"b": 2}], expected_version=1)  # a stale writer
    with pytest.raises(CheckpointConflictError):
        any_store.replace("e1", {"status": "X"}, expected_version=1)
    assert [r["a"] for r in any_store.load("e1").records] == [1]  # nothing merged
    with pytest.raises(ExecutionNotFoundError):
        any_store.load("missing")
    with pytest.raises(ExecutionNotFoundError):
        any_store.append("missing", [{"a": 1}], expected_version=1)


def test_list_filters_and_delete(any_store: Any) -> None:
    any_store.create("a", {"status": "RUNNING"})
    any_store.create("b", {"status": "SUCCEEDED"})
    any_store.create("c", {"status": "RUNNING"})
    assert sorted(c.execution_id for c in any_store.list()) == ["a", "b", "c"]
    assert sorted(c.execution_id for c in any_store.list(status="RUNNING")) == ["a", "c"]
    assert all(c.records == () for c in any_store.list())
    assert len(any_store.list(limit=2)) == 2
    any_store.delete("b")
    with pytest.raises(ExecutionNotFoundError):
        any_store.load("b")


def test_large_batches(any_store: Any) -> None:
    any_store.create("big", {"status": "RUNNING"})
    records = [{"i": i, "pad": "x" * 500} for i in range(2000)]  # ~1 MB: several DynamoDB items
    any_store.append("big", records, expected_version=1)
    assert [r["i"] for r in any_store.load("big").records] == list(range(2000))


def test_sqlite_is_shared_between_processes(tmp_path: Any) -> None:
    import subprocess
    import sys

    from lambdarun_durable.stores import SQLiteCheckpointStore

    path = tmp_path / "shared.db"
    store = SQLiteCheckpointStore(str(path))
    store.create("e", {"status": "RUNNING"})
    code = (
        "from lambdarun_durable.stores import SQLiteCheckpointStore as S;"
        f"s=S({str(path)!r}); print(s.append('e', [{{'from': 'child'}}], expected_version=1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True)
    assert out.stdout.strip() == "2"
    assert store.load("e").records == ({"from": "child"},)
    with store._conn() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
