"""The watcher of asynchronous outcomes ends with its session and its target.

An asynchronous attempt is watched by the engine of the target it runs on (one LIST of its
prefix per polling round). Nothing may keep watching forever: not an attempt whose task timed
out as its session closed, not a cancelled attempt's clean-up once the target is gone, and
polling failures back off instead of retrying every half second with a traceback each time.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid

import cloudpickle
import pytest
from structlog.testing import capture_logs

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.errors import TaskTimeoutError
from lambdarun.local.testing import local_stack_fixture, make_local_session
from lambdarun.testing.waiting import wait_for
from lambdarun.types import StorageHandle
from lambdarun_covalent.engine import POLL_RETRY_FIRST, POLL_RETRY_MAX, Engine, engines

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: a stack of this test's own, stopped by the test while an attempt is outstanding
own_stack = local_stack_fixture(scope="function", async_retry_delay=0.1)

FUNCTION = "lambdarun-covalent-shutdown-tests"
POLL_FAILED = "polling for asynchronous outcomes failed; retrying"
POLL_STILL_FAILS = "polling for asynchronous outcomes still fails; retrying"
POLL_RECOVERED = "polling for asynchronous outcomes works again"


def nap(seconds):
    time.sleep(seconds)
    return seconds


def wait_ended(engine):
    """The engine watches nothing and its watcher thread has ended."""
    wait_for(lambda: engine.watching() == 0 and not engine.watcher_running,
             "the engine to stop watching and its watcher thread to end", timeout=60)


def wait_invoked(future):
    task = future.info["task"]
    wait_for(lambda: task.attempt is not None and task.attempt.invoked, "the attempt to be invoked")


def test_a_task_timing_out_as_its_session_closes_is_not_watched_forever(make_session):
    """The leak of the full suite: the deadline thread finishes the future, the caller closes
    the session at once, and only then does the deadline thread stop the attempt. The attempt
    must be handed over to clean-up on the engine that watches it (not a new engine made for
    the closed backend), and that engine's watcher must end."""
    session = make_session(mode="async", timeout=1)
    backend = session.backend("covalent")
    engine = backend.engine
    target = session.target
    # runs in the deadline thread inside future.finish(), before the backend stops the attempt
    closed = threading.Event()

    def close_session(_future):
        session.close()
        closed.set()

    future = lambdarun.submit(nap, 60, backend="covalent", session=session)
    future.add_done_callback(close_session)
    with pytest.raises(TaskTimeoutError):
        future.result(timeout=60)
    assert closed.wait(60)
    wait_ended(engine)
    # the closed backend made no engine of its own to stop the attempt on
    assert backend.engine is engine
    assert engines.get(target) in (None, engine)


def test_stack_stopped_under_an_async_attempt_times_it_out_backs_off_and_ends(own_stack, lambdarun_session):
    session = make_local_session(
        lambdarun_session, own_stack, [lambdarun_covalent.plugin],
        covalent={"function_name": FUNCTION, "mode": "async", "timeout": 8},
    )
    backend = session.backend("covalent")
    engine = backend.engine
    future = lambdarun.submit(nap, 120, backend="covalent", session=session)
    wait_invoked(future)
    assert engine.watching() == 1
    with capture_logs() as logs:
        own_stack.stop()  # storage (and the Lambda service) gone under the watched attempt
        # the task's own deadline still ends it, with the typed error
        with pytest.raises(TaskTimeoutError):
            future.result(timeout=120)
        failures = [e for e in logs if e["event"] in (POLL_FAILED, POLL_STILL_FAILS)]
        # the session closes with the target unreachable: the clean-up of the stopped
        # attempt's late outcome is given up, the watcher ends
        session.close()
        wait_ended(engine)
    # ~8 s of an unreachable target: a traceback once per distinct error (the stack going
    # down may first reset a connection, then refuse them), then one line per backoff step
    # (0.5, 1, 2, 4 s), not a traceback every 0.5 s
    assert failures, "no polling failure was logged while the stack was down"
    seen = [(e["event"], e.get("retry_in"), e.get("kind")) for e in failures]
    kinds = [e["kind"] for e in failures if e.get("exc_info")]
    assert 1 <= len(kinds) <= 2 and len(set(kinds)) == len(kinds), seen
    assert len(failures) <= 6, seen
    delays = [e["retry_in"] for e in failures]
    assert delays[0] == POLL_RETRY_FIRST
    assert delays == sorted(delays) and all(b in (a * 2, POLL_RETRY_MAX) for a, b in zip(delays, delays[1:])), delays
    gave_up = [e for e in logs if e["event"].startswith("stopped watching")]
    assert len(gave_up) == 1 and gave_up[0]["attempts"] == 1, gave_up


def test_clean_up_after_close_ends_quietly_when_the_stack_stops(own_stack, lambdarun_session, monkeypatch):
    """The end of a test run: a closed session's cancelled attempt is still watched (its late
    outcome would be deleted), then the stack stops. One line, no traceback, and the watcher
    ends, instead of a traceback every 0.5 s until the function's 900 s are over."""
    session = make_local_session(
        lambdarun_session, own_stack, [lambdarun_covalent.plugin],
        covalent={"function_name": FUNCTION, "mode": "async", "timeout": 120},
    )
    # a target that cannot stop an invocation (like aws): the late outcome is watched for
    monkeypatch.setattr(session.target, "stop_invocation", lambda function_name, marker: False)
    backend = session.backend("covalent")
    engine = backend.engine
    future = lambdarun.submit(nap, 120, backend="covalent", session=session)
    wait_invoked(future)
    session.close()
    assert future.cancelled()
    assert engine.watching() == 1  # the cancelled attempt, for its late outcome
    with capture_logs() as logs:
        own_stack.stop()
        wait_ended(engine)
    failures = [e for e in logs if e["event"] in (POLL_FAILED, POLL_STILL_FAILS)]
    assert failures == [], failures
    gave_up = [e for e in logs if e["event"].startswith("stopped watching")]
    assert len(gave_up) == 1 and gave_up[0]["attempts"] == 1 and "exc_info" not in gave_up[0], gave_up


def test_a_running_attempt_is_watched_no_longer_than_the_functions_timeout(own_stack, lambdarun_session,
                                                                           monkeypatch):
    """The engine's own bound on a running attempt (the task's deadline normally ends it
    first): the function's timeout plus the grace for late outcomes. Shortened here to a
    1 s function under a 60 s task, with the storage gone: the task fails with its timeout
    error at that bound (~6 s), long before its own deadline."""
    from lambdarun_covalent import async_attempts

    monkeypatch.setattr(async_attempts, "MAX_TIMEOUT", 1.0)
    session = make_local_session(
        lambdarun_session, own_stack, [lambdarun_covalent.plugin],
        covalent={"function_name": FUNCTION, "mode": "async", "timeout": 60},
    )
    engine = session.backend("covalent").engine
    future = lambdarun.submit(nap, 120, backend="covalent", session=session)
    wait_invoked(future)
    own_stack.stop()
    with pytest.raises(TaskTimeoutError):
        future.result(timeout=40)
    session.close()
    wait_ended(engine)


class SwitchedStorage:
    """The session's real storage, whose LIST fails while ``down`` (an outage of S3)."""

    def __init__(self, storage):
        self.storage = storage
        self.down = False

    def list(self, prefix):
        if self.down:
            raise ConnectionError("S3 is down (a test outage)")
        return self.storage.list(prefix)


def test_polling_backs_off_while_storage_fails_and_starts_over_once_it_answers(session):
    storage = SwitchedStorage(session.storage())
    engine = Engine(2, session.poller)
    prefix = f"lambdarun-covalent/engine-test-{uuid.uuid4().hex}/"
    handle = StorageHandle(storage, prefix, prefix + "outcome")  # never written
    with capture_logs() as logs:
        def failures():
            return [e for e in logs if e["event"] in (POLL_FAILED, POLL_STILL_FAILS)]

        storage.down = True
        engine.watch(handle, attempt=None)
        try:
            wait_for(lambda: len(failures()) >= 4, "four failed polling rounds")
            storage.down = False
            wait_for(lambda: any(e["event"] == POLL_RECOVERED for e in logs), "a polling round that works")
            before = len(failures())
            storage.down = True
            wait_for(lambda: len(failures()) > before, "a failed round after the recovery")
        finally:
            storage.down = False
            engine.unwatch(handle)
            engine.close()
        wait_ended(engine)
    first, again = failures()[:4], failures()[before]
    # the first outage: one traceback, then one line per doubling wait
    assert [e["retry_in"] for e in first] == [POLL_RETRY_FIRST * 2**n for n in range(4)], first
    assert [bool(e.get("exc_info")) for e in first] == [True, False, False, False], first
    assert first[1]["error"] == "ConnectionError: S3 is down (a test outage)"
    # after a round that worked, the next outage starts over: first wait, traceback again
    assert again["retry_in"] == POLL_RETRY_FIRST and again.get("exc_info"), again
