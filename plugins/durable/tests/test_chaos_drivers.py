"""Chaos: several drivers on one durable execution, and a driver killed mid-run.

Every test runs against the real stores (a SQLite file; DynamoDB and S3 on a real moto
server) and counts side effects in a file the steps append to. The invariants: one driver
drives at a time, the execution SUCCEEDS, no completed step runs again, an at-most-once
step in flight when its driver died is recorded as a failed attempt and retried by its
policy, and no attempt of an at-most-once step ever starts twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lambdarun.errors import LeaseHeldError
from lambdarun_durable.lease import LeasePolicy
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.service import DurableService

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import chaos_handler  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STORES = ["sqlite", "dynamodb", "s3"]


def make_store_and_spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    """The test's store and a spec a driver subprocess opens the same store with."""
    if kind == "sqlite":
        spec: dict[str, Any] = {"kind": "sqlite", "path": str(tmp_path / "chaos.db")}
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        name = f"chaos-{uuid.uuid4().hex[:8]}"
        spec = {"kind": kind, "endpoint": endpoint, "table": name, "bucket": name, "prefix": "executions"}
        if kind == "s3":
            request.getfixturevalue("s3_client").create_bucket(Bucket=name)
        else:
            from lambdarun_durable.stores import DynamoDBCheckpointStore

            DynamoDBCheckpointStore(name, request.getfixturevalue("dynamodb_client"))  # creates the table
    return chaos_handler.open_spec(spec), spec


@pytest.fixture(params=STORES)
def chaos_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    store, spec = make_store_and_spec(request.param, tmp_path, request)
    store.spec = spec
    yield store
    store.close()


def side_effects(log: Path) -> list[tuple[str, int, int, int]]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, step, attempt, pid = line.split()
        out.append((kind, int(step), int(attempt), int(pid)))
    return out


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def step_events(service: DurableService, arn: str, step: int) -> list[dict[str, Any]]:
    return [e for e in service.get_history(arn)["Events"] if e.get("Name") == f"charge-{step}"]


def assert_each_step_once(service: DurableService, arn: str, log: Path, steps: int) -> None:
    """Each step's side effect completed exactly once and succeeded once in the history."""
    effects = side_effects(log)
    done = Counter(step for kind, step, _, _ in effects if kind == "done")
    assert done == Counter(range(steps)), f"side effects per step: {dict(done)}"
    starts = Counter((step, attempt) for kind, step, attempt, _ in effects if kind == "start")
    assert max(starts.values()) == 1, f"an attempt started twice: {starts}"
    for i in range(steps):
        succeeded = [e for e in step_events(service, arn, i) if e["EventType"] == "StepSucceeded"]
        assert len(succeeded) == 1, (i, succeeded)


# --------------------------------------------------------------------------- two drivers


def test_two_driver_threads_one_drives_the_other_waits(chaos_store: Any, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    service = DurableService(chaos_store)
    arn = service.start_execution("fn", json.dumps({"log": str(log), "steps": 10, "pause": 0.05}))
    policy = LeasePolicy(ttl=10, heartbeat=0.5, wait=90, poll=0.05)
    drivers = [Orchestrator(service, chaos_handler.in_process_invoke(chaos_store), lease=policy) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[int, Any] = {}

    def drive(i: int) -> None:
        barrier.wait()
        try:
            results[i] = drivers[i].run("fn", arn)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            results[i] = e

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    expected = {"Status": "SUCCEEDED", "Result": str(sum(range(10)))}
    assert results == {0: expected, 1: expected}
    # one drove (invoked), the other only waited for the lease and found the execution done
    assert sorted(d.invocations == 0 for d in drivers) == [False, True]
    assert service.describe(arn)["Status"] == "SUCCEEDED"
    assert_each_step_once(service, arn, log, 10)
    assert chaos_store.get_lease(arn) is None  # released at the end


def test_second_driver_without_wait_gets_typed_error(chaos_store: Any, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    service = DurableService(chaos_store)
    arn = service.start_execution("fn", json.dumps({"log": str(log), "steps": 6, "pause": 0.2}))
    first = Orchestrator(service, chaos_handler.in_process_invoke(chaos_store), lease=LeasePolicy(ttl=10, heartbeat=0.5))
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("first", first.run("fn", arn)))
    thread.start()
    try:
        wait_for(lambda: any(k == "start" for k, *_ in side_effects(log)), what="the first step")
        second = Orchestrator(service, chaos_handler.in_process_invoke(chaos_store), lease=LeasePolicy(wait=0))
        before = time.time()
        with pytest.raises(LeaseHeldError) as info:
            second.run("fn", arn)
        lease = info.value.lease
        assert lease.holder == first.holder and f"/{os.getpid()}/" in lease.holder
        assert lease.acquired_at <= before < lease.expires_at
        assert first.holder in str(info.value) and "since" in str(info.value)
        assert second.invocations == 0
    finally:
        thread.join(timeout=100)
    assert out["first"] == {"Status": "SUCCEEDED", "Result": str(sum(range(6)))}
    assert_each_step_once(service, arn, log, 6)
    # resume on the finished execution returns its result, no lease, no invocation
    again = Orchestrator(service, chaos_handler.in_process_invoke(chaos_store), lease=LeasePolicy(wait=0))
    assert again.run("fn", arn) == out["first"] and again.invocations == 0


def test_lost_lease_stops_the_driver_before_it_invokes(chaos_store: Any, tmp_path: Path) -> None:
    """A driver whose lease was taken over while it stalled stops before its next
    invocation (LeaseLostError); the execution is not failed and no step runs twice."""
    from lambdarun.errors import LeaseLostError

    log = tmp_path / "effects.log"
    service = DurableService(chaos_store)
    arn = service.start_execution("fn", json.dumps({"log": str(log), "steps": 3, "pause": 0.05}))
    stalled = threading.Event()
    release = threading.Event()
    inner = chaos_handler.in_process_invoke(chaos_store)

    def stalling_invoke(name: str, event: dict[str, Any]) -> dict[str, Any]:
        stalled.set()
        release.wait(60)  # this driver hangs (GC pause, suspended laptop...) past its lease
        return {"Status": "PENDING"}  # and its invocation ends suspended, having done nothing

    ttl = 0.9
    slow = Orchestrator(service, stalling_invoke, lease=LeasePolicy(ttl=ttl, heartbeat=0.3))
    slow_out: dict[str, Any] = {}

    def drive() -> None:
        try:
            slow_out["result"] = slow.run("fn", arn)
        except BaseException as e:  # noqa: BLE001
            slow_out["error"] = e

    thread = threading.Thread(target=drive)
    thread.start()
    try:
        assert stalled.wait(30)
        # its lease is gone (as if it had expired); another driver takes over and finishes
        chaos_store.release_lease(arn, slow.holder)
        revoked_at = time.time()
        taker = Orchestrator(service, inner, lease=LeasePolicy(ttl=10, heartbeat=0.5, wait=30))
        assert taker.run("fn", arn) == {"Status": "SUCCEEDED", "Result": "3"}
        wait_for(lambda: time.time() > revoked_at + ttl + 0.2, what="the stalled driver's lease to run out")
    finally:
        release.set()
        thread.join(timeout=60)
    assert isinstance(slow_out.get("error"), LeaseLostError), slow_out
    assert slow.holder in str(slow_out["error"])
    assert slow.invocations == 1  # nothing invoked after the lease was lost
    assert service.describe(arn)["Status"] == "SUCCEEDED"
    assert_each_step_once(service, arn, log, 3)


# --------------------------------------------------------------------------- a driver killed


@pytest.mark.parametrize("semantics", ["at_most_once", "at_least_once"])
def test_sigkill_driver_then_second_driver_after_lease_expiry(
    chaos_store: Any, tmp_path: Path, semantics: str
) -> None:
    steps, victim = 8, 3
    log = tmp_path / "effects.log"
    service = DurableService(chaos_store)
    arn = service.start_execution(
        "fn", json.dumps({"log": str(log), "steps": steps, "pause": 0.3, "semantics": semantics})
    )
    ttl = 4.0
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "chaos_handler.py"), json.dumps(chaos_store.spec), arn, str(ttl), "0.3"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])},
    )
    try:
        wait_for(
            lambda: any(k == "start" and s == victim for k, s, *_ in side_effects(log)) or proc.poll() is not None,
            what=f"step {victim} to start in the driver",
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = time.time()
    dead = chaos_store.get_lease(arn)
    assert dead is not None and f"/{proc.pid}/" in dead.holder  # the dead driver's lease is still there
    stored = {op.get("Name"): op["Status"] for op in service.operations(arn).values()}
    checkpointed_done = {i for i in range(steps) if stored.get(f"charge-{i}") == "SUCCEEDED"}

    # a second driver that does not wait is refused while the dead driver's lease lives
    if killed_at < dead.expires_at - 0.5:
        with pytest.raises(LeaseHeldError) as info:
            Orchestrator(service, chaos_handler.in_process_invoke(chaos_store), lease=LeasePolicy(wait=0)).run("fn", arn)
        assert info.value.lease.holder == dead.holder

    # one that waits takes the lease over once it expired, and completes the execution
    acquired: list[Any] = []

    class Spy:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def acquire_lease(self, *a: Any, **kw: Any) -> Any:
            lease = self.inner.acquire_lease(*a, **kw)
            acquired.append(lease)
            return lease

    spied = DurableService(Spy(chaos_store))
    second = Orchestrator(
        spied, chaos_handler.in_process_invoke(chaos_store), lease=LeasePolicy(ttl=10, heartbeat=0.5, wait=60, poll=0.1)
    )
    assert second.run("fn", arn) == {"Status": "SUCCEEDED", "Result": str(sum(range(steps)))}
    assert acquired and acquired[0].acquired_at >= dead.expires_at and acquired[0].holder == second.holder

    effects = side_effects(log)
    done = Counter(step for kind, step, _, _ in effects if kind == "done")
    starts = Counter((step, attempt) for kind, step, attempt, _ in effects if kind == "start")
    assert set(done) == set(range(steps)), done
    assert all(starts[(i, 1)] == 1 and starts[(i, 2)] == 0 for i in checkpointed_done), "a completed step re-ran"
    assert all(done[i] == 1 for i in checkpointed_done), done
    victim_events = [e["EventType"] for e in step_events(service, arn, victim)]
    if semantics == "at_most_once":
        assert victim not in checkpointed_done
        assert max(starts.values()) == 1, "an at-most-once attempt ran twice"
        assert all(n == 1 for n in done.values()), done
        # the attempt in flight was recorded as a failed attempt, then retried by the policy
        assert (victim, 1) in starts and (victim, 2) in starts
        failed = [e for e in step_events(service, arn, victim) if e["EventType"] == "StepFailed"]
        assert len(failed) == 1 and "interrupted" in failed[0]["StepFailedDetails"]["Error"]["Payload"]["ErrorMessage"]
        assert failed[0]["StepFailedDetails"]["RetryDetails"]["CurrentAttempt"] == 1
        assert victim_events.count("StepSucceeded") == 1
    else:
        # at-least-once (the SDK's default): a step whose end was not checkpointed yet when
        # the driver died (in flight, or finished but still in the write batch) runs again,
        # as the same attempt; checkpointed ones never do
        assert starts[(victim, 1)] == 2 and "StepFailed" not in victim_events
        assert all(done[i] <= 2 and starts[(i, 1)] <= 2 for i in range(steps)), (done, starts)
    for i in range(steps):
        assert [e["EventType"] for e in step_events(service, arn, i)].count("StepSucceeded") == 1
    assert [p for k, s, _, p in effects if k == "done" and s == victim] != [proc.pid]


def test_conflict_with_a_dead_drivers_invocation_never_fails_the_execution(chaos_store: Any, tmp_path: Path) -> None:
    """The invocation a dead driver left running on Lambda keeps checkpointing while a new
    driver drives: the new driver's invocation that loses the conflict is re-invoked (it
    does not count toward max_invocation_retries), the execution SUCCEEDS, no step
    succeeds twice and no at-most-once attempt starts twice."""
    from structlog.testing import capture_logs

    from lambdarun_durable.execution import DurableInvocationInput
    from lambdarun_durable.state import decode_token

    steps = 5
    log = tmp_path / "effects.log"
    service = DurableService(chaos_store)
    arn = service.start_execution("fn", json.dumps({"log": str(log), "steps": steps, "pause": 0.3}))
    # the orphan: an invocation whose driver is gone, running on its own
    event, _ = service.invocation_event(arn)
    orphan_out: dict[str, Any] = {}

    def orphan() -> None:
        inv = DurableInvocationInput.from_event(event)
        inv.store = chaos_store
        try:
            orphan_out["result"] = chaos_handler.handler(inv, None)
        except Exception as e:  # noqa: BLE001 - it loses a conflict to the new driver
            orphan_out["error"] = e

    thread = threading.Thread(target=orphan)
    thread.start()
    wait_for(lambda: any(k == "start" and s == 1 for k, s, *_ in side_effects(log)), what="the orphan's step 1")

    inner = chaos_handler.in_process_invoke(chaos_store)
    first = {"pending": True}

    def invoke(name: str, ev: dict[str, Any]) -> dict[str, Any]:
        if first.pop("pending", False):  # the orphan checkpoints after this event was built
            loaded = int(decode_token(ev["CheckpointToken"])["v"])
            wait_for(lambda: chaos_store.load(arn).version > loaded, what="the orphan's next checkpoint")
        return inner(name, ev)

    driver = Orchestrator(service, invoke, max_invocation_retries=1, lease=LeasePolicy(ttl=10, heartbeat=0.5))
    with capture_logs() as logs:
        out = driver.run("fn", arn)
    thread.join(timeout=60)
    assert out == {"Status": "SUCCEEDED", "Result": str(sum(range(steps)))}
    assert service.describe(arn)["Status"] == "SUCCEEDED"
    assert any(e["event"] == "durable.invocation.conflict" for e in logs), "the new driver never lost a conflict"
    assert not any(e["event"] == "durable.invocation.failed" for e in logs)
    effects = side_effects(log)
    starts = Counter((step, attempt) for kind, step, attempt, _ in effects if kind == "start")
    assert max(starts.values()) == 1, f"an at-most-once attempt started twice: {starts}"
    for i in range(steps):
        assert [e["EventType"] for e in step_events(service, arn, i)].count("StepSucceeded") == 1
