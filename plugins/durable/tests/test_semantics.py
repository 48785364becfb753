"""Replay rules: non-determinism, step semantics after interruption, size limits, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from lambdarun.errors import CheckpointConflictError
from lambdarun_durable import DurableContext, StepContext, StepError, durable_execution
from lambdarun_durable.config import Duration, StepConfig, StepSemantics
from lambdarun_durable.execution import DurableInvocationInput
from lambdarun_durable.lambda_service import InvocationStatus
from lambdarun_durable.retries import RetryPresets
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.service import DurableService
from lambdarun_durable.state import fold

pytestmark = pytest.mark.timeout(30)


class Crash(BaseException):
    """Stands in for the Lambda sandbox dying mid-invocation (nothing after it runs)."""


def drive(store: Any, handlers: dict[str, Any], function: str = "fn", payload: str | None = None) -> tuple[DurableService, Orchestrator, str]:
    service = DurableService(store)

    def invoke(name: str, event: dict) -> dict:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        return handlers[name](inv, None)

    orch = Orchestrator(service, invoke, sleep_until=lambda t: None)
    arn = service.start_execution(function, payload)
    return service, orch, arn


def test_changed_shape_raises_non_deterministic_error_naming_the_operation(store: Any) -> None:
    version = {"v": 1}

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        ctx.step(lambda _: 1, name="charge card" if version["v"] == 1 else "refund card")
        ctx.wait(Duration.from_seconds(5))
        return "done"

    service = DurableService(store)
    arn = service.start_execution("fn", None)
    event, _ = service.invocation_event(arn)
    inv = DurableInvocationInput.from_event(event)
    inv.store = store
    assert handler(inv, None)["Status"] == "PENDING"
    version["v"] = 2  # deploy a changed handler mid-execution
    service.apply_due(arn)
    event, _ = service.invocation_event(arn)
    inv = DurableInvocationInput.from_event(event)
    inv.store = store
    out = handler(inv, None)
    assert out["Status"] == "FAILED"
    assert out["Error"]["ErrorType"] == "aws_durable_execution_sdk_python.exceptions.NonDeterministicExecutionError"
    msg = out["Error"]["ErrorMessage"]
    assert "name checkpoint='charge card' current='refund card'" in msg
    assert service.describe(arn)["Status"] == "FAILED"


def test_changed_operation_type_is_detected(store: Any) -> None:
    flip = {"wait": False}

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        if flip["wait"]:
            ctx.wait(Duration.from_seconds(1), name="x")
        else:
            ctx.step(lambda _: 1, name="x")
        ctx.wait(Duration.from_seconds(5))
        return "done"

    service, orch, arn = drive(store, {"fn": handler})
    event, _ = service.invocation_event(arn)
    inv = DurableInvocationInput.from_event(event)
    inv.store = store
    handler(inv, None)
    flip["wait"] = True
    result = orch.run("fn", arn)
    assert result["Status"] == "FAILED"
    assert "type checkpoint='STEP' current='WAIT'" in result["Error"]["ErrorMessage"]


def _interrupting_handler(semantics: StepSemantics, runs: list[int], crash_first: list[bool], retry: Any) -> Any:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> Any:
        ctx.step(lambda _: "before", name="before")

        def side_effect(sctx: StepContext) -> str:
            runs.append(sctx.attempt)
            if crash_first[0]:
                crash_first[0] = False
                raise Crash()
            return f"charged on attempt {sctx.attempt}"

        return ctx.step(side_effect, name="charge", config=StepConfig(retry_strategy=retry, step_semantics=semantics))

    return handler


def test_at_least_once_step_reruns_after_interruption(store: Any) -> None:
    runs: list[int] = []
    handler = _interrupting_handler(StepSemantics.AT_LEAST_ONCE_PER_RETRY, runs, [True], RetryPresets.none())
    service, orch, arn = drive(store, {"fn": handler})
    with pytest.raises(Crash):
        orch.run("fn", arn)
    result = orch.run("fn", arn)
    assert result["Status"] == "SUCCEEDED"
    assert runs == [1, 1]  # the interrupted attempt simply ran again


def test_at_most_once_step_is_not_rerun_and_follows_retry_strategy(store: Any) -> None:
    runs: list[int] = []
    handler = _interrupting_handler(StepSemantics.AT_MOST_ONCE_PER_RETRY, runs, [True], RetryPresets.none())
    service, orch, arn = drive(store, {"fn": handler})
    with pytest.raises(Crash):
        orch.run("fn", arn)
    result = orch.run("fn", arn)
    assert runs == [1]  # never re-run
    assert result["Status"] == "FAILED"
    assert "previously interrupted" in result["Error"]["ErrorMessage"]

    runs2: list[int] = []
    handler2 = _interrupting_handler(StepSemantics.AT_MOST_ONCE_PER_RETRY, runs2, [True], RetryPresets.critical())
    service2, orch2, arn2 = drive(store, {"fn": handler2})
    with pytest.raises(Crash):
        orch2.run("fn", arn2)
    result2 = orch2.run("fn", arn2)
    assert result2["Status"] == "SUCCEEDED"
    assert runs2 == [1, 2]  # the interrupted attempt counted; attempt 2 ran after the retry delay
    failed = [r for r in store.load(arn2).records if r.get("E") == "StepFailed"]
    assert failed[0]["Op"]["StepDetails"]["Error"]["ErrorType"].endswith("StepInterruptedError")


def test_oversized_step_result_is_a_clear_error(runner_factory: Any) -> None:
    runs: list[int] = []

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        def big(_: Any) -> str:
            runs.append(1)
            return "x" * (300 * 1024)

        try:
            ctx.step(big, name="big")
        except StepError as e:
            return e.message or ""
        return "?"

    msg = runner_factory(handler).run().result_value
    assert "262144 bytes (256 KiB)" in msg and "big" in msg
    assert runs == [1]  # not retried


def test_concurrent_invocations_conflict_instead_of_merging(store: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        ctx.step(lambda _: 1, name="a")
        return "done"

    service = DurableService(store)
    arn = service.start_execution("fn", None)
    first, _ = service.invocation_event(arn)
    second, _ = service.invocation_event(arn)  # a duplicate delivery of the same invocation
    for ev in (first,):
        inv = DurableInvocationInput.from_event(ev)
        inv.store = store
        assert handler(inv, None)["Status"] == "SUCCEEDED"
    inv = DurableInvocationInput.from_event(second)
    inv.store = store
    out = handler(inv, None)
    # the execution is already SUCCEEDED: the duplicate reports it and writes nothing
    assert out["Status"] == "SUCCEEDED"
    assert sum(1 for r in store.load(arn).records if r.get("E") == "StepStarted") == 1

    arn2 = service.start_execution("fn", None)
    ev_a, _ = service.invocation_event(arn2)
    ev_b, _ = service.invocation_event(arn2)

    @durable_execution
    def waiter(event: dict, ctx: DurableContext) -> str:
        ctx.step(lambda _: 1, name="a")
        ctx.wait(Duration.from_seconds(10))
        return "done"

    inv_a = DurableInvocationInput.from_event(ev_a)
    inv_a.store = store
    assert waiter(inv_a, None)["Status"] == "PENDING"
    inv_b = DurableInvocationInput.from_event(ev_b)
    inv_b.store = store
    with pytest.raises(CheckpointConflictError, match="another invocation"):
        waiter(inv_b, None)


def test_stop_execution(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> None:
        ctx.create_callback(name="never").result()

    runner = runner_factory(handler, callback_grace=None)
    arn = runner.run_async()
    runner.wait_for_callback(arn)
    runner.service.stop_execution(arn)
    runner.advance_time(1)
    result = runner.wait_for_result(arn)
    assert result.status is InvocationStatus.FAILED
    assert runner.service.describe(arn)["Status"] == "STOPPED"
    assert result.history[-1]["EventType"] == "ExecutionStopped"


def test_execution_timeout(store: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> None:
        ctx.wait(Duration.from_hours(2))

    service = DurableService(store)
    now = [1_000_000.0]
    service.clock = lambda: now[0]

    def invoke(name: str, event: dict) -> dict:
        inv = DurableInvocationInput.from_event(event)
        inv.store = store
        inv.clock = service.clock
        return handler(inv, None)

    def sleep_until(t: float) -> None:
        now[0] = max(now[0], t)

    arn = service.start_execution("fn", None, execution_timeout=3600)
    result = Orchestrator(service, invoke, sleep_until=sleep_until, callback_grace=0).run("fn", arn)
    assert result["Status"] == "FAILED"
    assert service.describe(arn)["Status"] == "TIMED_OUT"


@pytest.mark.parametrize("batching", [False, True], ids=["per-step", "batched"])
def test_batching_flushes_once_per_invocation(store: Any, batching: bool) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        total = 0
        for i in range(200):
            total += ctx.step(lambda _, i=i: i, name=f"s{i}")
        return total

    service = DurableService(store)
    arn = service.start_execution("fn", None)
    event, cp = service.invocation_event(arn)
    inv = DurableInvocationInput.from_event(event)
    inv.store = store
    inv.batching = batching
    v0 = cp.version
    assert handler(inv, None) == {"Status": "SUCCEEDED", "Result": str(sum(range(200)))}
    if batching:
        # opt-in: 200 steps = 400 records + execution end, written in one append
        assert store.load(arn).version == v0 + 1
    else:
        # default: each step's START + SUCCEED in one append before it returns, then the end
        assert store.load(arn).version == v0 + 201
    ops = fold(store.load(arn).records)
    assert sum(1 for o in ops.values() if o["Type"] == "STEP") == 200


def test_invocation_retries_then_execution_fails(store: Any) -> None:
    from lambdarun_durable.exceptions import RetryableSerDesError

    calls: list[int] = []

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> None:
        calls.append(1)
        ctx.step(lambda _: 1, name="fine")
        raise RetryableSerDesError("blob store unreachable")

    service, orch, arn = drive(store, {"fn": handler})
    orch.max_invocation_retries = 2
    result = orch.run("fn", arn)
    assert len(calls) == 3  # first try + 2 Lambda-style retries
    assert result["Status"] == "FAILED" and "blob store unreachable" in result["Error"]["ErrorMessage"]
    assert service.describe(arn)["Status"] == "FAILED"
    # the step checkpointed by the first invocation was replayed, not re-run, by the retries
    assert sum(1 for r in store.load(arn).records if r.get("E") == "StepStarted") == 1


def test_buffered_checkpoints_are_flushed_while_a_long_step_runs(store: Any) -> None:
    import threading

    seen: dict[str, int] = {}
    release = threading.Event()

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        ctx.step(lambda _: "quick", name="quick")

        def long_step(_: Any) -> str:
            # the timer thread must persist "quick" while this step is still running
            deadline = __import__("time").monotonic() + 10
            while __import__("time").monotonic() < deadline:
                records = store.load(arn).records
                if any(r.get("E") == "StepSucceeded" and r["Op"].get("Name") == "quick" for r in records):
                    seen["quick"] = 1
                    break
                release.wait(0.02)
            return "long"

        return ctx.step(long_step, name="long")

    service = DurableService(store)
    arn = service.start_execution("fn", None)
    inv = service.in_process_input(arn, batch_age=0.1)
    assert handler(inv, None)["Status"] == "SUCCEEDED"
    assert seen == {"quick": 1}
