"""A batching ``map``: several tasks per invocation, each with its own outcome, output,
failure and claim, on the real local stack."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest

import lambdarun
from lambdarun_covalent.tasks import MapQueue

# the Lambda side cannot import this module (pytest imports it by path): ship it by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ProjectError(ValueError):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


def pid_and_square(x):
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return os.getpid(), x * x


def fail_on_five(x):
    if x == 5:
        raise ProjectError("five", 5)
    return x


def record_run(args):
    folder, x = args
    Path(folder, f"{x}-{os.urandom(4).hex()}").write_text("ran")
    return x


def requests_of(futures):
    return {f.info.get("request_id") for f in futures}


def test_a_batch_runs_several_tasks_in_one_invocation_with_their_own_output(session):
    backend = session.backend("covalent")
    assert backend.map_chunksize() == 32 and backend.map_chunksize(4) == 4
    futures = list(backend.map(pid_and_square, range(40), chunksize=8))
    results = [f.result(timeout=120) for f in futures]
    assert [r[1] for r in results] == [x * x for x in range(40)]
    for x, future in enumerate(futures):  # output stays per task
        assert future.stdout == f"out {x}\n" and future.stderr == f"err {x}\n"
        assert future.info["task"].attempt.batched in (True, False)
    # fewer invocations than tasks: some tasks shared a request
    assert len(requests_of(futures)) < 40
    assert any(f.info["task"].attempt.batched for f in futures)


def test_chunksize_one_sends_one_invocation_per_task(session):
    futures = list(session.backend("covalent").map(pid_and_square, range(12), chunksize=1))
    assert [f.result(timeout=120)[1] for f in futures] == [x * x for x in range(12)]
    assert len(requests_of(futures)) == 12
    assert not any(f.info["task"].attempt.batched for f in futures)


def test_a_failing_task_in_a_batch_fails_alone_at_its_position(session, leftovers):
    backend = session.backend("covalent")
    futures = list(backend.map(fail_on_five, range(12), chunksize=12, max_workers=1))
    assert len(requests_of(futures)) < 12  # they did share invocations
    for x, future in enumerate(futures):
        if x == 5:
            with pytest.raises(ProjectError) as info:
                future.result(timeout=120)
            assert info.value.code == 5 and "in fail_on_five" in info.value.remote_traceback
        else:
            assert future.result(timeout=120) == x
    results = lambdarun.map(fail_on_five, range(12), backend="covalent", chunksize=6, session=session)
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ProjectError, match="five"):
        next(results)
    out = list(lambdarun.map(fail_on_five, range(8), backend="covalent", chunksize=8,
                             return_exceptions=True, session=session))
    assert out[:5] == [0, 1, 2, 3, 4] and out[6:] == [6, 7] and isinstance(out[5], ProjectError)
    assert leftovers(session) == []


def test_batched_tasks_run_once_each(session, tmp_path):
    out = list(lambdarun.map(record_run, [(str(tmp_path), x) for x in range(64)], backend="covalent",
                             chunksize=16, session=session))
    assert out == list(range(64))
    ran = sorted(int(p.name.split("-")[0]) for p in tmp_path.iterdir())
    assert ran == list(range(64))


def test_large_arguments_in_a_batch_go_through_storage(session, leftovers):
    big = [bytes([i]) * 300_000 for i in range(6)]  # 1.8 MB in all: over a share of the inline limit
    backend = session.backend("covalent")
    futures = list(backend.map(len, big, chunksize=6, max_workers=1))
    assert [f.result(timeout=120) for f in futures] == [300_000] * 6
    assert any(f.info["task"].attempt.spilled for f in futures)
    assert leftovers(session) == []


def test_the_queue_gives_each_thread_its_fair_share():
    queue = MapQueue(limit=16, threads=4)
    started = sum(queue.put(i) for i in range(10))  # type: ignore[arg-type]
    assert started == 4  # one runner per thread, not one per task
    assert len(queue.take()) == 3  # ceil(10 / 4): a few tasks are spread over the threads
    started = sum(queue.put(i) for i in range(200))  # type: ignore[arg-type]
    assert started == 0 and queue.runners == 4
    assert len(queue.take()) == 16  # a long queue: the most per invocation
    while len(queue):
        assert 1 <= len(queue.take()) <= 16
    for _ in range(4):
        assert queue.take() == []  # each runner ends once the queue is empty
    assert queue.runners == 0
    assert queue.put(1) is True  # a new task after that starts a runner again


def test_a_submit_is_not_held_back_by_a_running_map(make_session):
    """The map's runners go back to the end of the pool's queue after each batch, so a task
    submitted meanwhile on the same (2-thread) pool gets a thread long before the map is done."""
    import time as _time

    backend = make_session(max_workers=2).backend("covalent")
    assert backend.submit(abs, (-1,), {}).result(timeout=120) == 1  # warm
    futures = list(backend.map(_time.sleep, [0.2] * 64, chunksize=2))
    lone = backend.submit(abs, (-7,), {})
    assert lone.result(timeout=120) == 7
    assert sum(f.done() for f in futures) < len(futures) // 2
    for future in futures:
        future.result(timeout=120)


def test_a_maps_first_window_is_ramped_and_the_rest_is_not():
    """The first ``concurrency`` invocations of a map start RAMP_GAP apart (answers of equal
    tasks then arrive spread, not as one wave of threads waking for the GIL); later ones
    start as soon as a thread is free."""
    from lambdarun_covalent import tasks as module

    clock = [100.0]
    sleeps: list[float] = []
    def sleep(seconds):
        sleeps.append(round(seconds, 6))
        clock[0] += seconds

    started = 0
    for _ in range(6):
        started = module.ramp(started, 4, 100.0, clock=lambda: clock[0], sleep=sleep)
    assert started == 6
    assert sleeps == [module.RAMP_GAP] * 3  # the 2nd, 3rd and 4th wait their slot; the 1st, 5th and 6th do not
