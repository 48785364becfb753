"""An ended task's future is freed by reference counting as soon as the caller drops it: no
reference cycle keeps it (with the some twenty objects a future owns: its condition, locks,
callbacks, info) for the garbage collector's full collections, whose pauses stalled a
1,000-in-flight map every few seconds (issue 20). Measured with the collector off, so only
reference counting frees. What is left to the collector is the task and its attempt, which
refer to each other (four objects per task)."""

from __future__ import annotations

import gc
import weakref

import lambdarun
from lambdarun.futures import LambdaFuture
from lambdarun.testing.waiting import wait_for


def double(x):
    return 2 * x


def fail(x):
    raise ValueError(x)


def _collector_off():
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    return enabled


def _run_tasks(session) -> tuple[list[weakref.ref], list[weakref.ref]]:
    """Six tasks run to their end (five results, one exception); weak references to their
    futures and tasks, and nothing else of them kept."""
    futures = [lambdarun.submit(double, n, backend="covalent", session=session) for n in range(5)]
    futures.append(lambdarun.submit(fail, "no", backend="covalent", session=session))
    results = [f.result(60) for f in futures[:5]]
    error = futures[5].exception(60)
    # the caller still sees the task through the future after it ended
    task = futures[0].info["task"]
    seen = (task.future is futures[0], task.status, task.attempt.number)
    assert results == [0, 2, 4, 6, 8] and isinstance(error, ValueError)
    assert seen == (True, "COMPLETED", 1)
    return [weakref.ref(f) for f in futures], [weakref.ref(f.info["task"]) for f in futures]


def test_ended_tasks_and_their_futures_are_freed_without_the_collector(session):
    assert lambdarun.run(double, 1, backend="covalent", session=session) == 2  # warm
    enabled = _collector_off()
    try:
        future_refs, task_refs = _run_tasks(session)
        # a task's flow lets go of it on a work thread just after finishing its future
        wait_for(lambda: all(r() is None for r in future_refs), "the futures freed by reference counting",
                 timeout=30)
        gc.collect()  # the task <-> attempt pairs
        assert [r() for r in task_refs if r() is not None] == []
    finally:
        if enabled:
            gc.enable()


def test_a_cancelled_future_drops_its_canceller():
    stopped = []
    future = LambdaFuture("t")
    future.set_canceller(lambda: stopped.append(future.task_id))
    assert future.cancel() and stopped == ["t"]
    assert future._canceller is None  # noqa: SLF001 - what it held is released
    finished = LambdaFuture("u")
    finished.set_canceller(lambda: stopped.append("never"))
    assert finished.finish(1) and finished._canceller is None  # noqa: SLF001
    assert not finished.cancel() and stopped == ["t"]
