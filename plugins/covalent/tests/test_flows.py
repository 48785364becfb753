"""Synchronous attempts hold no thread while their Invoke is in flight (issue 20).

Against :class:`lambdarun.testing.LatencyLambda` (a Lambda endpoint in its own process that
answers each Invoke after a fixed time, refuses more than its concurrency with Lambda's 429,
and runs no code: ``latency_responder.py`` answers the calls with signed outcomes), the
covalent backend keeps at most its concurrency of tasks begun and invoking at once, with a
few threads of its own whatever that concurrency; a task that waits for a slot has not
started (its deadline neither); cancelling a task in flight or waiting works; an answer lost
on the way back re-delivers the same attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.plugins import make_plugin_manager
from lambdarun.session import Session
from lambdarun.testing import FaultProxy
from lambdarun.testing.latency import LatencyLambda
from lambdarun.testing.waiting import wait_for
from lambdarun_covalent.backend import KEY_ROOT
from lambdarun_covalent.engine import WORK_THREADS

HERE = Path(__file__).resolve().parent
FUNCTION = "lambdarun-covalent-flows"
#: the endpoint's concurrency, and the concurrency of the maps run against it
CONCURRENCY = 100
DURATION = 0.5  # seconds each Invoke takes
SLOW = 3.0  # seconds each Invoke takes on the slow endpoint (time to act while one is in flight)


@pytest.fixture(scope="module")
def key() -> str:
    return secrets.token_urlsafe(48)


@pytest.fixture(scope="module")
def call_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calls") / "calls.jsonl"


def _endpoint(key: str, call_log: Path, duration: float) -> LatencyLambda:
    env = {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "LAMBDARUN_TEST_SIGNING_KEY": key,
        "LAMBDARUN_TEST_CALL_LOG": str(call_log),
    }
    return LatencyLambda(duration=duration, concurrency=CONCURRENCY, function_name=FUNCTION,
                         responder="latency_responder:respond", env=env)


@pytest.fixture(scope="module")
def endpoint(key: str, call_log: Path) -> Iterator[LatencyLambda]:
    with _endpoint(key, call_log, DURATION) as latency:
        yield latency


@pytest.fixture(scope="module")
def slow_endpoint(key: str, call_log: Path) -> Iterator[LatencyLambda]:
    with _endpoint(key, call_log, SLOW) as latency:
        yield latency


@pytest.fixture
def open_session(endpoint: LatencyLambda, key: str, tmp_path: Path) -> Iterator[Callable[..., Session]]:
    """``open_session(on=endpoint, url=None, **covalent)``: a covalent session on the ``aws``
    target pointed at ``on`` (or at ``url``, a proxy in front of it), warm (the version probe
    is done), closed after the test. The core ``max_workers`` is the endpoints' concurrency."""
    with contextlib.ExitStack() as stack:

        def make(on: LatencyLambda = endpoint, url: str | None = None, **covalent: Any) -> Session:
            creds = on.boto3_credentials()
            credentials = tmp_path / f"credentials-{on.port}"
            credentials.write_text(f"[default]\naws_access_key_id = {creds['aws_access_key_id']}\n"
                                   f"aws_secret_access_key = {creds['aws_secret_access_key']}\n")
            credentials.chmod(0o600)
            overrides = {
                "target": "aws",
                "region": "us-east-1",
                "aws": {"endpoint_url": url or on.url, "credentials_file": str(credentials)},
                "signing_key": key,
                "storage_url": (tmp_path / "storage").as_uri(),
                "progress": False,
                "log_level": "WARNING",
                "max_workers": CONCURRENCY,
                "covalent": {"function_name": FUNCTION, **covalent},
            }
            pm = make_plugin_manager([lambdarun_covalent.plugin], load_entrypoints=False, environ={})
            session = stack.enter_context(Session(pm, overrides=overrides, environ={}, cwd=tmp_path))
            assert lambdarun.run(abs, -1, backend="covalent", session=session) == 1  # probe, clients
            return session

        yield make


def leftovers(session: Session) -> list[str]:
    return session.storage().list(KEY_ROOT + "/")


def covalent_threads() -> int:
    return sum(t.name.startswith("lambdarun-covalent") for t in threading.enumerate())


def test_a_map_keeps_exactly_its_concurrency_in_flight(endpoint, open_session):
    session = open_session()
    endpoint.reset()
    tasks = 4 * CONCURRENCY
    out = list(lambdarun.map(abs, [-1] * tasks, backend="covalent", session=session, chunksize=1))
    assert out == [1] * tasks
    stats = endpoint.stats()
    assert stats["throttled"] == 0  # never more than the endpoint's concurrency at once
    assert stats["max_in_flight"] == CONCURRENCY  # and it was reached
    assert stats["invocations"] == tasks and stats["function_errors"] == 0
    assert leftovers(session) == []


def test_a_map_of_its_concurrency_in_flight_holds_a_few_threads(endpoint, open_session):
    """Each task in flight used to hold a pool thread (blocked in ``invoker.invoke``) for its
    whole attempt: CONCURRENCY threads. Now the threads the map adds are the engine's work
    threads and the invoker's one event-loop thread: a few, whatever the concurrency."""
    session = open_session()
    endpoint.reset()
    samples: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def counts() -> tuple[int, int]:
        # other tests' engines and servers may still have threads: what this map adds counts
        return covalent_threads(), threading.active_count()

    before_covalent, before_total = counts()

    def sample() -> None:
        while not stop.wait(0.05):
            covalent, total = counts()
            samples.append((endpoint.stats()["in_flight"], covalent - before_covalent, total - before_total))

    sampler = threading.Thread(target=sample, name="test-sampler", daemon=True)
    sampler.start()
    try:
        out = list(lambdarun.map(abs, [-1] * (4 * CONCURRENCY), backend="covalent", session=session, chunksize=1))
    finally:
        stop.set()
        sampler.join(10)
    assert out == [1] * (4 * CONCURRENCY)
    busy = [s for s in samples if s[0] >= CONCURRENCY // 2]
    assert busy, f"the map never had {CONCURRENCY // 2} invocations in flight: {samples[:20]}"
    assert max(s[1] for s in busy) <= WORK_THREADS + 4, busy  # its work threads, a watcher...
    assert max(s[2] for s in busy) < CONCURRENCY // 4, busy  # the whole process but the invoker's own


def test_a_task_waiting_for_a_slot_is_pending_and_its_deadline_has_not_started(endpoint, open_session):
    """5 slots, 60 tasks of DURATION each: the last ones wait ~5.5 s for a slot, far over
    their 2 s timeout; no task times out for that wait, none is RUNNING before its slot."""
    session = open_session(timeout=2, max_workers=5)
    backend = session.backend("covalent")
    endpoint.reset()
    futures = list(backend.map(abs, [-1] * 60, max_workers=5, chunksize=1))
    last = futures[-1]
    assert last.info["task"].status == "PENDING"
    assert "deadline_started" not in last.info and last.info["task"].attempt is None
    wait_for(lambda: endpoint.stats()["in_flight"] == 5, "the first 5 tasks to be in flight", timeout=60)
    slots = backend.engine.slots(5)
    assert slots.held == 5 and slots.waiting > 40  # a slot passes from one task to the next
    assert sum(f.running() for f in futures) <= 5  # begun: only those holding a slot
    assert not last.running() and "deadline_started" not in last.info
    assert [f.result(timeout=120) for f in futures] == [1] * 60  # no TaskTimeoutError
    stats = endpoint.stats()
    assert stats["max_in_flight"] == 5 and stats["invocations"] == 60
    started = sorted(f.info["deadline_started"] for f in futures)
    assert started[-1] - started[0] > 2 * 2  # the last began long after the first's timeout
    assert leftovers(session) == []


def test_cancel_a_task_in_flight_and_a_waiting_one(slow_endpoint, open_session, call_log):
    """2 slots: a and b in flight, c and d waiting. Cancelling a (in flight) and c (waiting):
    c is never invoked, a's slot stays held until its Invoke returns (the endpoint never sees
    3 in flight), then d runs; b and d succeed; nothing is left in storage."""
    endpoint = slow_endpoint
    session = open_session(on=endpoint, max_workers=2)
    backend = session.backend("covalent")
    endpoint.reset()
    a, b, c, d = (backend.submit(abs, (-1,), {}) for _ in range(4))
    wait_for(lambda: endpoint.stats()["in_flight"] == 2, "a and b to be in flight", timeout=60)
    assert a.running() and b.running() and c.info["task"].status == "PENDING"
    assert a.cancel() and c.cancel()
    assert a.cancelled() and c.cancelled() and c.info["task"].status == "CANCELLED"
    assert b.result(timeout=60) == 1 and d.result(timeout=60) == 1
    stats = endpoint.stats()
    assert stats["invocations"] == 3 and stats["max_in_flight"] == 2  # a, b, then d; never c
    invoked = {json.loads(line)["task_id"] for line in call_log.read_text().splitlines()}
    assert c.task_id not in invoked and {a.task_id, b.task_id, d.task_id} <= invoked
    assert "deadline_started" not in c.info
    wait_for(lambda: leftovers(session) == [], "the cancelled attempt's objects to be deleted", timeout=60)
    # the slots are free again: a new task runs at once
    assert backend.submit(abs, (-3,), {}).result(timeout=60) == 1


def test_an_answer_lost_on_the_way_back_re_delivers_the_same_attempt(slow_endpoint, open_session, call_log):
    """The connection is cut after the Invoke was sent, before its answer: the backend
    re-delivers the same attempt (the function's claim keeps it to one run, see
    tests/chaos/test_at_most_once.py) after a backoff no thread sleeps through."""
    with FaultProxy(("127.0.0.1", slow_endpoint.port)) as proxy:
        session = open_session(on=slow_endpoint, url=proxy.url)
        proxy.drop_all()  # the warm connections go: the task's Invoke opens a new one
        call_log.write_text("")
        dropped = proxy.drops
        proxy.drop_next(after=SLOW / 3)
        future = lambdarun.submit(abs, -1, backend="covalent", session=session)
        assert future.result(timeout=120) == 1
        assert proxy.drops == dropped + 1  # the fault did happen
    deliveries = [json.loads(line) for line in call_log.read_text().splitlines()]
    assert len(deliveries) >= 2  # the lost one and its re-delivery
    assert {(d["task_id"], d["attempt"]) for d in deliveries} == {(future.task_id, 1)}  # one attempt
    assert future.info["task"].attempt.number == 1
    assert leftovers(session) == []


def test_closing_the_session_cancels_waiting_tasks_and_none_of_them_is_invoked(slow_endpoint, open_session,
                                                                               call_log):
    """2 slots, 6 tasks: 2 in flight, 4 waiting. ``close()`` cancels all 6; the waiting ones
    are never invoked (their slots pass through them without a start) and the slots end free."""
    session = open_session(on=slow_endpoint, max_workers=2)
    backend = session.backend("covalent")
    futures = [backend.submit(abs, (-1,), {}) for _ in range(6)]
    wait_for(lambda: slow_endpoint.stats()["in_flight"] == 2, "2 tasks to be in flight", timeout=60)
    slots = backend.engine.slots(2)
    assert slots.held == 2 and slots.waiting == 4
    engine = backend.engine
    session.close()
    assert all(f.cancelled() for f in futures)
    with pytest.raises(lambdarun.LambdarunError, match="closed"):
        backend.submit(abs, (-1,), {})
    wait_for(lambda: slots.held == 0 and slots.waiting == 0, "the slots to be free", timeout=60)
    assert engine.flows == 0
    # the closed engine keeps its work threads until its flows have ended, then they end
    wait_for(lambda: not engine.work_running, "the closed engine's work threads to end", timeout=60)
    invoked = {json.loads(line)["task_id"] for line in call_log.read_text().splitlines()}
    waiting = [f for f in futures if "deadline_started" not in f.info]
    assert len(waiting) == 4 and not invoked & {f.task_id for f in waiting}
