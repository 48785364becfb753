"""Every durable operation end to end, on SQLite and on DynamoDB (moto server)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

from lambdarun_durable import (
    BatchResult,
    CallbackError,
    CallbackSubmitterError,
    CallbackTimeoutError,
    ChildContextError,
    DurableContext,
    InvokeError,
    StepContext,
    StepError,
    durable_execution,
    durable_step,
    durable_wait_for_callback,
    durable_with_child_context,
)
from lambdarun_durable.config import (
    CallbackConfig,
    Duration,
    JitterStrategy,
    StepConfig,
    WaitForCallbackConfig,
)
from lambdarun_durable.lambda_service import InvocationStatus
from lambdarun_durable.retries import RetryStrategyConfig, create_retry_strategy
from lambdarun_durable.waits import WaitForConditionConfig, WaitForConditionDecision

pytestmark = pytest.mark.timeout(30)


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> int:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            return self.calls[key]


def events(result: Any, etype: str | None = None) -> list[dict[str, Any]]:
    return [e for e in result.history if etype is None or e["EventType"] == etype]


# --- steps --------------------------------------------------------------------------------


def test_steps_replay_without_rerunning(runner_factory: Any) -> None:
    runs = Counter()

    @durable_step
    def add(step_ctx: StepContext, a: int, b: int) -> int:
        runs.hit("add")
        assert step_ctx.attempt == 1
        return a + b

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> dict:
        x = ctx.step(add(1, 2))
        ctx.wait(Duration.from_seconds(10), name="pause")  # forces a second invocation
        y = ctx.step(add(x, event["n"]), name="second")
        return {"x": x, "y": y}

    result = runner_factory(handler).run({"n": 10})
    assert result.status is InvocationStatus.SUCCEEDED
    assert result.result_value == {"x": 3, "y": 13}
    assert len(result.invocations) == 2
    assert runs.calls["add"] == 2  # the first step was replayed, not re-run
    assert [e["Name"] for e in events(result, "StepSucceeded")] == ["add", "second"]


def test_failed_step_reraises_stored_error_on_replay(runner_factory: Any) -> None:
    runs = Counter()

    def boom(_: StepContext) -> None:
        runs.hit("boom")
        raise ValueError("bad input 42")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        try:
            ctx.step(boom, name="boom", config=StepConfig(retry_strategy=create_retry_strategy(RetryStrategyConfig(max_attempts=1))))
        except StepError as e:
            caught = f"{e.error_type}:{e.message}"
        ctx.wait(Duration.from_seconds(1))
        return caught

    result = runner_factory(handler).run()
    assert result.result_value == "ValueError:bad input 42"
    assert runs.calls["boom"] == 1  # replay re-raised the checkpointed error
    failed = events(result, "StepFailed")
    assert failed[0]["StepFailedDetails"]["Error"]["Payload"]["ErrorType"] == "ValueError"


def test_step_extended_types_round_trip(runner_factory: Any) -> None:
    import datetime
    import decimal
    import uuid

    value = {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("12.50"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "raw": b"\x00\x01",
        "pair": (1, "a"),
    }

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> bool:
        got = ctx.step(lambda _: value, name="typed")
        ctx.wait(Duration.from_seconds(1))
        again = ctx.step(lambda _: value, name="typed2")
        return got == value and again == value

    assert runner_factory(handler).run().result_value is True


# --- waits ------------------------------------------------------------------------------


def test_one_day_wait_takes_no_wall_time(runner_factory: Any) -> None:
    import time

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        ctx.wait(Duration.from_days(1), name="a day")
        return "done"

    start = time.monotonic()
    result = runner_factory(handler).run()
    assert result.result_value == "done"
    assert time.monotonic() - start < 5
    started = events(result, "WaitStarted")[0]
    assert started["WaitStartedDetails"]["Duration"] == 86400
    assert events(result, "WaitSucceeded")[0]["Name"] == "a day"


# --- callbacks --------------------------------------------------------------------------


def test_create_callback_success(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> Any:
        cb = ctx.create_callback(name="approval", config=CallbackConfig(timeout=Duration.from_hours(1)))
        ctx.step(lambda _: cb.callback_id, name="send id")
        return json.loads(cb.result())

    runner = runner_factory(handler, callback_grace=None)
    arn = runner.run_async()
    cb_id = runner.wait_for_callback(arn, name="approval")
    runner.send_callback_success(cb_id, json.dumps({"approved": True}).encode())
    result = runner.wait_for_result(arn)
    assert result.status is InvocationStatus.SUCCEEDED
    assert result.result_value == {"approved": True}
    assert [e["EventType"] for e in events(result) if "Callback" in e["EventType"]] == [
        "CallbackStarted",
        "CallbackSucceeded",
    ]


def test_callback_failure_raises_callback_error(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        cb = ctx.create_callback(name="cb")
        try:
            cb.result()
        except CallbackError as e:
            return f"failed: {e.message}"
        return "ok"

    runner = runner_factory(handler, callback_grace=None)
    arn = runner.run_async()
    runner.send_callback_failure(runner.wait_for_callback(arn), {"ErrorMessage": "rejected", "ErrorType": "Rejected"})
    assert runner.wait_for_result(arn).result_value == "failed: rejected"


def test_callback_timeout(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        cb = ctx.create_callback(config=CallbackConfig(timeout=Duration.from_minutes(5)))
        try:
            cb.result()
        except CallbackTimeoutError as e:
            return f"timeout: {e.message}"
        return "no timeout"

    result = runner_factory(handler, callback_grace=0.05).run()
    assert result.result_value.startswith("timeout: Callback timed out")
    assert events(result, "CallbackTimedOut")


def test_callback_heartbeat_keeps_it_alive_then_expiry_times_out(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        cb = ctx.create_callback(
            name="hb", config=CallbackConfig(timeout=Duration.from_hours(1), heartbeat_timeout=Duration.from_seconds(60))
        )
        try:
            return cb.result()
        except CallbackTimeoutError as e:
            return f"timeout: {e.message}"

    # heartbeats every 45 s keep the callback alive past several heartbeat windows
    runner = runner_factory(handler, callback_grace=None)
    arn = runner.run_async()
    cb_id = runner.wait_for_callback(arn)
    for _ in range(4):
        runner.advance_time(45)
        runner.send_callback_heartbeat(cb_id)
    runner.advance_time(45)
    runner.send_callback_success(cb_id, "alive")
    assert runner.wait_for_result(arn).result_value == "alive"

    # without heartbeats the heartbeat timeout fires
    runner2 = runner_factory(handler, callback_grace=None)
    arn2 = runner2.run_async()
    runner2.wait_for_callback(arn2)
    runner2.advance_time(61)
    result = runner2.wait_for_result(arn2)
    assert "heartbeat" in result.result_value


def test_wait_for_callback_with_decorated_submitter(runner_factory: Any) -> None:
    submitted: list[str] = []

    @durable_wait_for_callback
    def submit(callback_id: str, wctx: Any, system: str) -> None:
        submitted.append(f"{system}:{callback_id}")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> Any:
        return ctx.wait_for_callback(submit("erp"), name="erp", config=WaitForCallbackConfig(timeout=Duration.from_hours(1)))

    runner = runner_factory(handler, callback_grace=None)
    arn = runner.run_async()
    cb_id = runner.wait_for_callback(arn)
    runner.send_callback_success(cb_id, "42")
    result = runner.wait_for_result(arn)
    assert result.result_value == "42"
    assert len(submitted) == 1 and submitted[0].startswith("erp:")
    names = [e.get("Name") for e in events(result, "ContextStarted")]
    assert names == ["erp"]
    assert [e["SubType"] for e in events(result, "ContextStarted")] == ["WaitForCallback"]


def test_wait_for_callback_submitter_failure(runner_factory: Any) -> None:
    def submit(callback_id: str, wctx: Any) -> None:
        raise RuntimeError("erp down")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        try:
            ctx.wait_for_callback(submit, name="erp", config=WaitForCallbackConfig(retry_strategy=create_retry_strategy(RetryStrategyConfig(max_attempts=1))))
        except CallbackSubmitterError as e:
            return f"submitter: {e.message}"
        return "?"

    assert runner_factory(handler).run().result_value == "submitter: erp down"


# --- invoke -------------------------------------------------------------------------------


def test_chained_invoke(runner_factory: Any) -> None:
    @durable_execution
    def child(event: dict, ctx: DurableContext) -> dict:
        doubled = ctx.step(lambda _: event["x"] * 2, name="double")
        ctx.wait(Duration.from_seconds(5))
        return {"doubled": doubled}

    @durable_execution
    def failing_child(event: dict, ctx: DurableContext) -> None:
        raise KeyError("missing")

    @durable_execution
    def parent(event: dict, ctx: DurableContext) -> Any:
        r = ctx.invoke("child-fn", {"x": 21}, name="call child")
        try:
            ctx.invoke("failing-fn", {}, name="call failing")
        except InvokeError as e:
            return {"child": r, "error_type": e.error_type}
        return {"child": r}

    runner = runner_factory(parent)
    runner.register_durable_function("child-fn", child).register_durable_function("failing-fn", failing_child)
    result = runner.run()
    assert result.result_value == {"child": {"doubled": 42}, "error_type": "KeyError"}
    started = events(result, "ChainedInvokeStarted")
    assert started[0]["ChainedInvokeStartedDetails"]["FunctionName"] == "child-fn"
    child_arn = started[0]["ChainedInvokeStartedDetails"]["DurableExecutionArn"]
    child_history = runner.get_execution_history(child_arn)["Events"]
    assert [e["EventType"] for e in child_history][-1] == "ExecutionSucceeded"


# --- child contexts ---------------------------------------------------------------------


def test_nested_child_contexts(runner_factory: Any) -> None:
    runs = Counter()

    @durable_with_child_context
    def inner(ctx: DurableContext, n: int) -> int:
        runs.hit("inner")
        a = ctx.step(lambda _: n + 1, name="inc")
        ctx.wait(Duration.from_seconds(2), name="inner wait")
        return a * 10

    @durable_with_child_context
    def outer(ctx: DurableContext, n: int) -> int:
        return ctx.run_in_child_context(inner(n)) + ctx.step(lambda _: 1, name="one")

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        return ctx.run_in_child_context(outer(4))

    result = runner_factory(handler).run()
    assert result.result_value == 51
    ctx_events = events(result, "ContextSucceeded")
    assert [e["Name"] for e in ctx_events] == ["inner", "outer"]
    outer_op = result.get_context("outer")
    inner_op = outer_op.child_operations[0]
    assert inner_op.name == "inner" and inner_op.parent_id == outer_op.operation_id
    assert [c.name for c in inner_op.child_operations] == ["inc", "inner wait"]


def test_child_context_failure(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        def body(c: DurableContext) -> None:
            raise ValueError("inside")

        try:
            ctx.run_in_child_context(body, name="bad")
        except ChildContextError as e:
            return e.error_type
        return "?"

    result = runner_factory(handler).run()
    assert result.result_value == "ValueError"
    assert events(result, "ContextFailed")[0]["Name"] == "bad"


# --- wait_for_condition -------------------------------------------------------------------


def test_wait_for_condition_polls_durably(runner_factory: Any) -> None:
    def check(state: dict, cctx: Any) -> dict:
        return {"polls": state["polls"] + 1}

    def strategy(state: dict, attempt: int) -> WaitForConditionDecision:
        if state["polls"] >= 3:
            return WaitForConditionDecision.stop_polling()
        return WaitForConditionDecision.continue_waiting(Duration.from_seconds(30))

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> dict:
        return ctx.wait_for_condition(check, WaitForConditionConfig(wait_strategy=strategy, initial_state={"polls": 0}), name="poll")

    result = runner_factory(handler).run()
    assert result.result_value == {"polls": 3}
    assert len(result.invocations) == 3
    assert result.get_step("poll").attempt == 3  # 3 checks: 2 retries + the final one (AWS counts it)


# --- logger -------------------------------------------------------------------------------


def test_logger_silent_during_replay(runner_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        ctx.logger.info("before wait")
        replaying = [ctx.is_replaying()]
        ctx.wait(Duration.from_seconds(3))
        ctx.logger.info("after wait")
        replaying.append(ctx.is_replaying())
        return "ok"

    with caplog.at_level(logging.INFO, logger="lambdarun_durable.user"):
        runner_factory(handler).run()
    messages = [r.getMessage() for r in caplog.records if r.name == "lambdarun_durable.user"]
    assert messages.count("before wait") == 1
    assert messages.count("after wait") == 1


def test_execution_failure_is_reported(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> None:
        ctx.step(lambda _: 1, name="ok")
        raise RuntimeError("handler broke")

    result = runner_factory(handler).run()
    assert result.status is InvocationStatus.FAILED
    assert result.error.message == "handler broke" and result.error.type == "RuntimeError"
    assert events(result)[-1]["EventType"] == "ExecutionFailed"


def test_batch_result_type_in_step(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> list:
        res: BatchResult = ctx.map([1, 2, 3], lambda c, item, i, items: c.step(lambda _: item * item, name="sq"))
        return res.get_results()

    assert runner_factory(handler).run().result_value == [1, 4, 9]


def test_retries_use_backoff_and_suspend(runner_factory: Any) -> None:
    attempts: list[int] = []

    def flaky(sctx: StepContext) -> str:
        attempts.append(sctx.attempt)
        if sctx.attempt < 3:
            raise ConnectionError(f"try {sctx.attempt}")
        return "finally"

    strategy = create_retry_strategy(
        RetryStrategyConfig(
            max_attempts=5, initial_delay=Duration.from_seconds(10), backoff_rate=3, jitter_strategy=JitterStrategy.NONE
        )
    )

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> str:
        return ctx.step(flaky, name="flaky", config=StepConfig(retry_strategy=strategy))

    result = runner_factory(handler).run()
    assert result.result_value == "finally"
    assert attempts == [1, 2, 3]
    assert len(result.invocations) == 3  # each retry delay suspended the execution
    retries = [e["StepFailedDetails"]["RetryDetails"] for e in events(result, "StepFailed")]
    assert retries == [
        {"CurrentAttempt": 1, "NextAttemptDelaySeconds": 10},
        {"CurrentAttempt": 2, "NextAttemptDelaySeconds": 30},
    ]
    assert events(result, "StepSucceeded")[0]["Name"] == "flaky"


def test_large_child_result_replays_children(runner_factory: Any) -> None:
    runs = Counter()

    @durable_with_child_context
    def gather(ctx: DurableContext) -> list:
        def chunk(i: int) -> Any:
            def body(_: Any) -> str:
                runs.hit(f"chunk{i}")
                return str(i) * (100 * 1024)

            return body

        return [ctx.step(chunk(i), name=f"chunk-{i}") for i in range(3)]  # 300 KiB together

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> list:
        parts = ctx.run_in_child_context(gather())
        ctx.wait(Duration.from_seconds(1))
        return [len(p) for p in parts]

    result = runner_factory(handler).run()
    assert result.result_value == [102400] * 3
    assert runs.calls == {"chunk0": 1, "chunk1": 1, "chunk2": 1}  # rebuilt from the steps, not re-run
    ctx_op = result.get_context("gather")
    assert ctx_op.raw["ContextDetails"].get("ReplayChildren") is True
    assert ctx_op.result == ""  # the summary, not the 300 KiB payload


def test_with_retry_reruns_block_after_durable_backoff(runner_factory: Any) -> None:
    from lambdarun_durable import WithRetryConfig, with_retry
    from lambdarun_durable.retries import RetryPresets

    tries: list[int] = []

    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> int:
        def block(c: DurableContext, attempt: int) -> int:
            tries.append(attempt)
            v = c.step(lambda _: attempt, name=f"try-{attempt}")
            if v < 2:
                raise RuntimeError("again")
            return v

        return with_retry(ctx, block, WithRetryConfig(retry_strategy=RetryPresets.linear()), name="blk")

    result = runner_factory(handler).run()
    assert result.result_value == 2
    assert [e["Name"] for e in events(result, "WaitStarted")] == ["blk-backoff-1"]


def test_large_execution_result(runner_factory: Any) -> None:
    @durable_execution
    def handler(event: dict, ctx: DurableContext) -> dict:
        parts = [ctx.step(lambda _, i=i: str(i) * 200_000, name=f"part-{i}") for i in range(3)]
        return {"parts": parts}  # ~600 KB: over a DynamoDB item, under Lambda's 6 MB response

    runner = runner_factory(handler)
    result = runner.run()
    assert [len(p) for p in result.result_value["parts"]] == [200_000] * 3
    described = runner.service.describe(result.execution_arn)
    assert json.loads(described["Result"]) == result.result_value
    assert result.history[-1]["ExecutionSucceededDetails"]["Result"]["Payload"] == result.result
