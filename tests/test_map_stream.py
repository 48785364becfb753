"""A streaming ``lambdarun.map``: a bounded window, lazy inputs, results released once consumed."""

from __future__ import annotations

import gc
import weakref

import pytest

import lambdarun


class Box:
    def __init__(self, value):
        self.value = value


def boxed(x):
    return Box(x)


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise KeyError("three")
    return x


class Recording:
    """An input generator that records how far it was consumed."""

    def __init__(self, n):
        self.n = n
        self.read = 0
        self.closed = False

    def __iter__(self):
        try:
            for i in range(self.n):
                self.read = i + 1
                yield i
        finally:
            self.closed = True


def drained(session):
    """Wait until the in-process backend ran or dropped every queued task (outside the
    session's lock, which its tasks need)."""
    session.backend().pool.shutdown(wait=True)


def test_the_input_is_read_only_as_far_as_the_window(inprocess_session):
    source = Recording(1_000_000)  # never materialised: a list of it would be the whole input
    results = lambdarun.map(square, iter(source), window=5, session=inprocess_session, progress=False)
    assert source.read == 5  # the first window starts at once, nothing more is read
    seen = []
    for value in results:
        seen.append(value)
        # the window bound: never more than 5 tasks read ahead of what was consumed
        assert source.read <= len(seen) + 5
        if len(seen) == 50:
            break
    results.close()  # what a `with contextlib.closing(...)` or dropping the iterator does
    assert seen == [i * i for i in range(50)]
    assert source.read <= 55
    assert source.closed  # the consumer stopped: the input is closed, not drained
    drained(inprocess_session)


def test_results_keep_input_order_with_a_window(inprocess_session):
    assert list(lambdarun.map(square, range(200), window=7, session=inprocess_session, progress=False)) == [
        i * i for i in range(200)
    ]


def test_default_window_comes_from_the_backend(inprocess_session):
    backend = inprocess_session.backend()
    assert backend.map_window(max_workers=3) == 6
    assert backend.map_window(max_workers=3, chunksize=10) == 6  # this backend does not batch
    source = Recording(10_000)
    results = lambdarun.map(square, iter(source), max_workers=3, session=inprocess_session, progress=False)
    assert source.read == 6
    assert next(results) == 0
    results.close()
    drained(inprocess_session)


def settle(session):
    """Let the run journal (if on) write what it was handed: it holds a finished future
    only until its writer thread recorded it."""
    from lambdarun.dashboard.journal import journal_enabled, journal_path, writer_for

    if journal_enabled(session):
        assert writer_for(journal_path(session)).flush(timeout=60)
    gc.collect()


def test_consumed_results_are_released(inprocess_session):
    refs = []
    for box in lambdarun.map(boxed, range(60), window=4, session=inprocess_session, progress=False):
        refs.append(weakref.ref(box))
        del box
        settle(inprocess_session)
        # every result consumed before this one is gone: nothing in map holds it
        assert all(ref() is None for ref in refs[:-1]), [r() for r in refs[:-1]].count(None)
    settle(inprocess_session)
    assert all(ref() is None for ref in refs)


def test_a_failure_is_raised_at_its_position_and_the_rest_is_cancelled(inprocess_session):
    source = Recording(10_000)
    results = lambdarun.map(fail_on_three, iter(source), window=4, session=inprocess_session, progress=False)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="three"):
        next(results)
    assert source.read <= 3 + 1 + 4
    assert source.closed
    with pytest.raises(StopIteration):
        next(results)
    drained(inprocess_session)


def test_return_exceptions_yields_them_in_place(inprocess_session):
    out = list(lambdarun.map(fail_on_three, range(6), window=2, return_exceptions=True,
                             session=inprocess_session, progress=False))
    assert out[:3] == [0, 1, 2] and isinstance(out[3], KeyError) and out[4:] == [4, 5]


def test_stopping_early_cancels_the_tasks_in_flight(inprocess_session):
    observed = []

    class Observer:
        @lambdarun.hookimpl
        def lambdarun_tasks_submitted(self, session, backend, func, futures, kind):
            observed.extend(futures)

    inprocess_session.pm.register(Observer())
    results = lambdarun.map(square, range(1000), window=8, session=inprocess_session, progress=False)
    assert next(results) == 0
    results.close()
    drained(inprocess_session)
    assert 8 <= len(observed) <= 9  # only the window was ever submitted
    for future in observed:  # every task either finished or was cancelled; none is left running
        assert future.done()


def test_every_task_reaches_the_submitted_hook_once_before_its_result(inprocess_session):
    groups = []

    class Observer:
        @lambdarun.hookimpl
        def lambdarun_tasks_submitted(self, session, backend, func, futures, kind):
            groups.append((kind, list(futures)))

    inprocess_session.pm.register(Observer())
    assert list(lambdarun.map(square, range(100), window=10, session=inprocess_session, progress=False)) == [
        i * i for i in range(100)
    ]
    futures = [f for _, group in groups for f in group]
    assert {kind for kind, _ in groups} == {"map"}
    assert len(futures) == 100 and len({id(f) for f in futures}) == 100
    assert [f.result() for f in futures] == [i * i for i in range(100)]
    assert len(groups) <= 100 // 10 + 2  # reported in groups of about a window, not one by one


def test_bad_window_and_chunksize_are_refused(inprocess_session):
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="window"):
            lambdarun.map(square, range(3), window=bad, session=inprocess_session)
        with pytest.raises(ValueError, match="chunksize"):
            lambdarun.map(square, range(3), chunksize=bad, session=inprocess_session)


