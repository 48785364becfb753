"""The poller hook: storage completion with one LIST per prefix, futures, backoff, timeout."""

from __future__ import annotations

import concurrent.futures
import threading

from lambdarun.types import ConditionHandle, InvocationType, InvokeHandle, StorageHandle


class CountingStorage:
    """Wraps a real storage and counts the calls the poller makes."""

    def __init__(self, inner):
        self.inner, self.url = inner, inner.url
        self.calls = {"list": 0, "exists": 0, "get": 0}

    def list(self, prefix):
        self.calls["list"] += 1
        return self.inner.list(prefix)

    def exists(self, key):
        self.calls["exists"] += 1
        return self.inner.exists(key)

    def get(self, key):
        self.calls["get"] += 1
        return self.inner.get(key)


def test_storage_handles_cost_one_list_per_prefix(lambdarun_session, tmp_path):
    session = lambdarun_session()
    storage = CountingStorage(session.storage(tmp_path.as_uri()))
    poller = session.pm.hook.lambdarun_make_poller(session=session)
    handles = [StorageHandle(storage, "batch1/", f"batch1/{i}") for i in range(50)]
    handles += [StorageHandle(storage, "batch2/", f"batch2/{i}") for i in range(50)]
    for i in range(50):
        storage.inner.put(f"batch1/{i}", b"done")
    done, pending = poller.wait(handles, timeout=1.5, return_when="ALL_COMPLETED")
    # batch2 never completes: the wait times out with exactly batch1 done
    assert done == set(handles[:50]) and pending == set(handles[50:])
    rounds = storage.calls["list"] // 2
    assert storage.calls["list"] == 2 * rounds and storage.calls["exists"] == 0
    # adaptive backoff: 1.5 s of rounds backing off from 10 ms to 1 s, not 150 rounds of 10 ms
    assert rounds < 20


def test_first_completed_returns_as_soon_as_a_key_appears(lambdarun_session, tmp_path):
    session = lambdarun_session(overrides={"polling": {"max_interval": 0.05}})
    storage = session.storage(tmp_path.as_uri())
    poller = session.poller
    handles = [StorageHandle(storage, "p/", f"p/{i}") for i in range(3)]
    threading.Timer(0.2, storage.put, ("p/1", b"x")).start()
    done, pending = poller.wait(handles, timeout=10)
    assert done == {handles[1]} and len(pending) == 2


def test_invoke_handles_resolve_through_their_futures(lambdarun_session):
    session = lambdarun_session()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        gate = threading.Event()
        fast = InvokeHandle("f", InvocationType.REQUEST_RESPONSE, future=pool.submit(lambda: 1))
        slow = InvokeHandle("f", InvocationType.REQUEST_RESPONSE, future=pool.submit(gate.wait, 10))
        done, pending = session.poller.wait([fast, slow], timeout=5)
        assert done == {fast} and pending == {slow}
        gate.set()
        done, pending = session.poller.wait([fast, slow], return_when="ALL_COMPLETED")
        assert done == {fast, slow} and not pending


def test_condition_handles_complete_when_done_returns_true(lambdarun_session):
    session = lambdarun_session(overrides={"polling": {"max_interval": 0.05}})
    flag = threading.Event()
    calls = []

    def done():
        calls.append(1)
        return flag.is_set()

    ready = ConditionHandle(done)
    never = ConditionHandle(lambda: False)
    threading.Timer(0.2, flag.set).start()
    finished, pending = session.poller.wait([ready, never], timeout=10)
    assert finished == {ready} and pending == {never}
    assert len(calls) >= 2  # checked again each round until it turned true
    # a condition that never turns true times out, with nothing done
    finished, pending = session.poller.wait([never], timeout=0.2)
    assert finished == set() and pending == {never}


def test_condition_handles_compare_by_identity():
    check = lambda: False  # noqa: E731
    assert ConditionHandle(check) != ConditionHandle(check)
    assert len({ConditionHandle(check), ConditionHandle(check)}) == 2
