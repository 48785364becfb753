"""CheckpointStore conformance: SQLite, DynamoDB (moto server) and S3 (moto server)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from lambdarun.errors import (
    CheckpointConflictError,
    CheckpointError,
    ExecutionNotFoundError,
    LeaseHeldError,
    LeaseLostError,
)

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


# --- the driver lease ------------------------------------------------------------------


def test_lease_one_holder_renew_release(any_store: Any) -> None:
    any_store.create("e", {"status": "RUNNING"})
    assert any_store.get_lease("e") is None
    lease = any_store.acquire_lease("e", "host-a/1/aa", 30)
    assert (lease.holder, lease.execution_id) == ("host-a/1/aa", "e")
    assert lease.acquired_at <= lease.heartbeat_at < lease.expires_at
    assert any_store.get_lease("e") == lease
    with pytest.raises(LeaseHeldError) as info:
        any_store.acquire_lease("e", "host-b/2/bb", 30)
    assert info.value.lease == lease  # the error names the holder, since when, until when
    assert "host-a/1/aa" in str(info.value) and "since" in str(info.value)
    renewed = any_store.renew_lease("e", "host-a/1/aa", 60)
    assert renewed.acquired_at == lease.acquired_at and renewed.expires_at > lease.expires_at
    again = any_store.acquire_lease("e", "host-a/1/aa", 30)  # re-acquiring one's own lease renews it
    assert again.acquired_at == lease.acquired_at
    with pytest.raises(LeaseLostError):
        any_store.renew_lease("e", "host-b/2/bb", 30)  # a forged heartbeat does not take it over
    any_store.release_lease("e", "host-b/2/bb")  # not the holder: nothing happens
    assert any_store.get_lease("e").holder == "host-a/1/aa"
    # leases never move the execution's version (handlers' optimistic concurrency is untouched)
    assert any_store.load("e").version == 1
    any_store.release_lease("e", "host-a/1/aa")
    assert any_store.get_lease("e") is None
    assert any_store.acquire_lease("e", "host-b/2/bb", 30).holder == "host-b/2/bb"
    with pytest.raises(LeaseLostError):
        any_store.renew_lease("e", "host-a/1/aa", 30)
    any_store.delete("e")
    assert any_store.get_lease("e") is None


def test_expired_lease_is_taken_over(any_store: Any) -> None:
    any_store.create("e", {"status": "RUNNING"})
    dead = any_store.acquire_lease("e", "dead/1/aa", 0.3)
    deadline = time.time() + 10
    while time.time() < deadline and not dead.expired(time.time()):
        time.sleep(0.05)
    taken = any_store.acquire_lease("e", "live/2/bb", 30)
    assert taken.holder == "live/2/bb" and taken.acquired_at >= dead.expires_at
    with pytest.raises(LeaseLostError):  # the old holder wakes up: its heartbeat fails
        any_store.renew_lease("e", "dead/1/aa", 30)
    any_store.release_lease("e", "dead/1/aa")
    assert any_store.get_lease("e").holder == "live/2/bb"


def test_lease_race_has_one_winner(any_store: Any) -> None:
    """Eight drivers race for one free lease, several rounds: exactly one wins each round."""
    from concurrent.futures import ThreadPoolExecutor

    any_store.create("e", {"status": "RUNNING"})
    for round_ in range(3):
        barrier = threading.Barrier(8)

        def take(i: int) -> str | None:
            barrier.wait()
            try:
                return any_store.acquire_lease("e", f"h/{round_}/{i}", 30).holder
            except LeaseHeldError:
                return None

        with ThreadPoolExecutor(8) as pool:
            winners = [w for w in pool.map(take, range(8)) if w]
        assert len(winners) == 1, winners
        assert any_store.get_lease("e").holder == winners[0]
        any_store.release_lease("e", winners[0])


def test_lease_ttl_must_be_positive(any_store: Any) -> None:
    for ttl in (0, -1):
        with pytest.raises(CheckpointError):
            any_store.acquire_lease("e", "h", ttl)


def _forge_malformed_lease(store: Any, execution_id: str) -> None:
    """Write a lease entry that is not a lease, straight into the store's backing service."""
    from lambdarun_durable.stores import DynamoDBCheckpointStore, S3CheckpointStore

    if isinstance(store, S3CheckpointStore):
        store.client.put_object(Bucket=store.bucket, Key=store._key(execution_id) + "lease.json", Body=b'{"holder": 1}')
    elif isinstance(store, DynamoDBCheckpointStore):
        store.client.put_item(TableName=store.table, Item={"pk": {"S": execution_id}, "sk": {"S": "#LEASE"}, "holder": {"N": "7"}})
    else:
        with store._conn() as conn:
            conn.execute("INSERT INTO leases VALUES (?,?,?,?,?)", (execution_id, "x", "never", "never", "never"))


def test_malformed_or_oversized_lease_input_is_refused(any_store: Any) -> None:
    """Forged lease entries and hostile holder ids raise typed errors; no lease is granted."""
    any_store.create("e", {"status": "RUNNING"})
    for bad in ("", "h" * 10_000, None):
        with pytest.raises(CheckpointError):
            any_store.acquire_lease("e", bad, 30)
    with pytest.raises(CheckpointError):
        any_store.acquire_lease("e", "h", float("nan"))
    assert any_store.get_lease("e") is None
    _forge_malformed_lease(any_store, "e")
    for call in (
        lambda: any_store.get_lease("e"),
        lambda: any_store.acquire_lease("e", "h/1/a", 30),
        lambda: any_store.renew_lease("e", "h/1/a", 30),
    ):
        with pytest.raises(CheckpointError, match="malformed"):
            call()
    assert any_store.load("e").version == 1  # the execution itself is untouched


def test_orchestrator_refuses_a_store_without_leases(tmp_path: Any) -> None:
    from lambdarun_durable.orchestrator import Orchestrator
    from lambdarun_durable.service import DurableService
    from lambdarun_durable.stores import SQLiteCheckpointStore

    class OldStore:  # a store plugin written before the lease methods
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if "lease" in name:
                raise AttributeError(name)
            return getattr(self.inner, name)

    inner = SQLiteCheckpointStore(str(tmp_path / "old.db"))
    service = DurableService(OldStore(inner))
    arn = service.start_execution("fn", "{}")
    invoked: list[Any] = []
    with pytest.raises(CheckpointError, match="no lease methods"):
        Orchestrator(service, lambda *a: invoked.append(a) or {"Status": "SUCCEEDED"}).run("fn", arn)
    assert invoked == []  # nothing ran without a lease
    inner.close()


def test_appends_keep_their_order_across_state_only_writes_and_replace(any_store: Any) -> None:
    """Each append's batch lands after the previous ones (SQLite: the batch count comes back
    from the version bump), whether or not an append carried records or a state."""
    any_store.create("e2", {"status": "RUNNING"}, records=[{"n": 0}])
    v = any_store.append("e2", [], expected_version=1, state={"status": "RUNNING", "k": 1})  # state only
    v = any_store.append("e2", [{"n": 1}], expected_version=v)
    v = any_store.append("e2", [], expected_version=v)  # neither: still a new version
    v = any_store.append("e2", [{"n": 2}, {"n": 3}], expected_version=v, state={"status": "RUNNING", "k": 2})
    loaded = any_store.load("e2")
    assert [r["n"] for r in loaded.records] == [0, 1, 2, 3]
    assert (loaded.version, loaded.state["k"]) == (v, 2) and v == 5
    v = any_store.replace("e2", {"status": "RUNNING"}, expected_version=v, records=[{"n": 9}])
    v = any_store.append("e2", [{"n": 10}], expected_version=v)
    assert [r["n"] for r in any_store.load("e2").records] == [9, 10] and v == 7
    with pytest.raises(CheckpointConflictError):
        any_store.append("e2", [{"n": 11}], expected_version=5)
    assert [r["n"] for r in any_store.load("e2").records] == [9, 10]


def test_closing_the_sqlite_store_under_a_busy_thread_is_safe(tmp_path: Any) -> None:
    """The local durable service closes its store while its worker threads may still be in a
    query (its retention sweep lists every execution): closing a connection under a running
    query crashed the interpreter (a segfault in CI). close() now closes only its own thread's
    connection and those of ended threads; a busy thread finishes its query and goes on."""
    from lambdarun_durable.stores.sqlite import SQLiteCheckpointStore

    store = SQLiteCheckpointStore(str(tmp_path / "busy.db"))
    for n in range(300):
        store.create(f"e{n}", {"status": "RUNNING", "n": n})
    stop, errors, rounds = threading.Event(), [], [0]

    def lister() -> None:
        try:
            while not stop.is_set():
                assert len(store.list(limit=1_000_000)) == 300
                rounds[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=lister) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 3
    closes = 0
    while time.monotonic() < deadline:
        store.close()
        closes += 1
        time.sleep(0.001)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors == [] and rounds[0] > 10 and closes > 100
    assert len(store.list()) == 100  # the closing thread opens a new connection when used again
    store.close()
