"""Checkpoint-store, target and invoker hooks of the core."""

from __future__ import annotations

import threading
import time

import pytest

from lambdarun import hookimpl
from lambdarun.errors import (
    CheckpointConflictError,
    ExecutionNotFoundError,
    FunctionNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    PayloadTooLargeError,
    StorageError,
    TargetError,
)
from lambdarun.types import Checkpoint, FunctionSpec, InvocationType, Lease


class DictCheckpointStore:
    """The smallest store honouring the CheckpointStore contract (optimistic concurrency,
    one lease per execution)."""

    def __init__(self, url):
        self.url = url
        self.data = {}
        self.leases = {}
        self.lock = threading.Lock()

    def create(self, execution_id, state, records=()):
        with self.lock:
            if execution_id in self.data:
                raise CheckpointConflictError(execution_id)
            self.data[execution_id] = Checkpoint(execution_id, 1, dict(state), tuple(records))
            return self.data[execution_id]

    def load_state(self, execution_id):
        return Checkpoint(execution_id, self.load(execution_id).version, self.load(execution_id).state)

    def load(self, execution_id):
        try:
            return self.data[execution_id]
        except KeyError:
            raise ExecutionNotFoundError(execution_id) from None

    def append(self, execution_id, records, *, expected_version, state=None):
        with self.lock:
            current = self.load(execution_id)
            if current.version != expected_version:
                raise CheckpointConflictError(f"{execution_id}: version {current.version} != {expected_version}")
            new = Checkpoint(execution_id, current.version + 1, dict(state or current.state), current.records + tuple(records))
            self.data[execution_id] = new
            return new.version

    def replace(self, execution_id, state, *, expected_version, records=None):
        with self.lock:
            current = self.load(execution_id)
            if current.version != expected_version:
                raise CheckpointConflictError(execution_id)
            new = Checkpoint(execution_id, current.version + 1, dict(state), tuple(records) if records is not None else current.records)
            self.data[execution_id] = new
            return new.version

    def list(self, *, status=None, limit=100):
        return [c for c in self.data.values() if status is None or c.state.get("status") == status][:limit]

    def delete(self, execution_id):
        self.data.pop(execution_id, None)
        self.leases.pop(execution_id, None)

    def acquire_lease(self, execution_id, holder, ttl):
        with self.lock:
            now = time.time()
            cur = self.leases.get(execution_id)
            if cur is not None and cur.holder != holder and not cur.expired(now):
                raise LeaseHeldError(f"{execution_id} is driven by {cur.holder}", lease=cur)
            acquired = cur.acquired_at if cur is not None and cur.holder == holder else now
            self.leases[execution_id] = Lease(execution_id, holder, acquired, now + ttl, now)
            return self.leases[execution_id]

    def renew_lease(self, execution_id, holder, ttl):
        with self.lock:
            cur = self.leases.get(execution_id)
            if cur is None or cur.holder != holder:
                raise LeaseLostError(f"{execution_id}: {holder} lost its lease")
            now = time.time()
            self.leases[execution_id] = Lease(execution_id, holder, cur.acquired_at, now + ttl, now)
            return self.leases[execution_id]

    def release_lease(self, execution_id, holder):
        with self.lock:
            if getattr(self.leases.get(execution_id), "holder", None) == holder:
                del self.leases[execution_id]

    def get_lease(self, execution_id):
        return self.leases.get(execution_id)

    def close(self):
        pass


class DictStorePlugin:
    @hookimpl
    def lambdarun_make_checkpoint_store(self, url, session):
        return DictCheckpointStore(url) if url.startswith("dict://") else None


def test_checkpoint_store_hook_and_optimistic_concurrency(lambdarun_session):
    session = lambdarun_session(DictStorePlugin())
    store = session.checkpoint_store("dict://x")
    assert store is session.checkpoint_store("dict://x")
    assert isinstance(session.pm.hook.lambdarun_make_checkpoint_store(url="dict://y", session=session), DictCheckpointStore)
    cp = store.create("exec-1", {"status": "RUNNING"})
    v2 = store.append("exec-1", [{"op": 1}], expected_version=cp.version)
    with pytest.raises(CheckpointConflictError):
        store.append("exec-1", [{"op": "stale"}], expected_version=cp.version)
    store.replace("exec-1", {"status": "SUCCEEDED"}, expected_version=v2)
    loaded = store.load("exec-1")
    assert loaded.records == ({"op": 1},) and loaded.state["status"] == "SUCCEEDED" and loaded.version == 3
    # one driver at a time: the lease is the store's, and never moves the version
    lease = store.acquire_lease("exec-1", "driver-a", 30)
    with pytest.raises(LeaseHeldError) as info:
        store.acquire_lease("exec-1", "driver-b", 30)
    assert info.value.lease == lease
    with pytest.raises(LeaseLostError):
        store.renew_lease("exec-1", "driver-b", 30)
    store.release_lease("exec-1", "driver-a")
    assert store.acquire_lease("exec-1", "driver-b", 30).holder == "driver-b"
    assert store.load("exec-1").version == 3
    with pytest.raises(StorageError, match="no checkpoint store plugin handles 'nope://'"):
        session.checkpoint_store("nope://")


def test_unknown_target_is_a_clear_error(lambdarun_session):
    session = lambdarun_session(overrides={"target": "mars"})
    with pytest.raises(TargetError, match=r"no plugin provides the target 'mars' \(config key 'target' from call options\)"):
        session.target


def test_aws_target_reuses_clients_and_reports_missing_functions(aws_session):
    target = aws_session.pm.hook.lambdarun_make_target(name="aws", settings=aws_session.settings)
    assert target.name == "aws" and target.client("lambda") is target.client("lambda")
    with pytest.raises(FunctionNotFoundError, match=r"lambdarun deploy --target aws --function nope"):
        target.ensure_function(FunctionSpec(name="nope"))
    with pytest.raises(TargetError, match="storage_url"):
        target.default_storage_url()
    assert target.environment()["AWS_ENDPOINT_URL_LAMBDA"] == target.endpoint_url("lambda")


def test_invoker_maps_errors_to_typed_exceptions(aws_session):
    invoker = aws_session.pm.hook.lambdarun_make_invoker(target=aws_session.target, session=aws_session)
    with pytest.raises(FunctionNotFoundError, match="'missing-fn' not found"):
        invoker.invoke("missing-fn", b"{}")
    with pytest.raises(PayloadTooLargeError, match="1048576-byte limit for Event"):
        invoker.invoke("missing-fn", b"x" * 1_048_577, invocation_type=InvocationType.EVENT)
    handle = invoker.invoke_async("missing-fn", b"{}")
    done, _ = aws_session.poller.wait([handle], timeout=30)
    assert done == {handle}
    with pytest.raises(FunctionNotFoundError):
        handle.future.result()
