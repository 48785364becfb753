"""Same handler, two engines: the AWS SDK + its local test runner, and lambdarun-durable.

The handler source is identical except for the package it imports from; results and
histories (event types, operation ids, names, subtypes, parents, payloads) must match.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


def build_handler(pkg: str) -> Any:
    sdk = importlib.import_module(pkg)
    config = importlib.import_module(f"{pkg}.config")
    retries = importlib.import_module(f"{pkg}.retries")
    Duration = config.Duration
    no_jitter = retries.create_retry_strategy(
        retries.RetryStrategyConfig(max_attempts=3, initial_delay=Duration.from_seconds(2), jitter_strategy=config.JitterStrategy.NONE)
    )
    attempts: dict[str, int] = {}

    @sdk.durable_step
    def validate(step_ctx: Any, order_id: str) -> dict:
        return {"order_id": order_id, "valid": True}

    def flaky(step_ctx: Any) -> str:
        attempts["flaky"] = attempts.get("flaky", 0) + 1
        if step_ctx.attempt < 2:
            raise ConnectionError("transient")
        return "ok"

    @sdk.durable_with_child_context
    def ship(ctx: Any, order_id: str) -> str:
        label = ctx.step(lambda _: f"label-{order_id}", name="label")
        ctx.wait(Duration.from_seconds(30), name="courier")
        return label

    @sdk.durable_execution
    def handler(event: dict, ctx: Any) -> dict:
        v = ctx.step(validate(event["order_id"]))
        ctx.wait(duration=Duration.from_seconds(5), name="await_confirmation")
        f = ctx.step(flaky, name="flaky", config=config.StepConfig(retry_strategy=no_jitter))
        label = ctx.run_in_child_context(ship(event["order_id"]))
        squares = ctx.map([1, 2, 3], lambda c, x, i, items: c.step(lambda _: x * x, name="square"), name="squares")
        par = ctx.parallel([lambda c: c.step(lambda _: "a", name="a"), lambda c: "b"], name="both")
        return {"valid": v["valid"], "flaky": f, "label": label, "squares": squares.get_results(), "par": par.get_results()}

    return handler


def normalize(events: list[dict]) -> list[tuple]:
    out = []
    for e in events:
        details = {k: v for k, v in e.items() if k.endswith("Details")}
        detail = next(iter(details.values()), {})
        if e["EventType"] in ("InvocationCompleted",):
            detail = {}
        detail = {k: v for k, v in detail.items() if k not in ("ScheduledEndTimestamp", "StartTimestamp", "EndTimestamp")}
        if e["EventType"] == "ChainedInvokeStarted":
            detail.pop("DurableExecutionArn", None)
        if e["EventType"] == "ExecutionStarted":
            detail = {"Input": detail.get("Input")}
        out.append((e["EventType"], e.get("Id") if not e["EventType"].startswith("Execution") else None,
                    e.get("Name") if not e["EventType"].startswith("Execution") else None, e.get("SubType"), e.get("ParentId"),
                    json.dumps(detail, sort_keys=True, default=str)))
    return out


def test_same_result_and_history_as_aws_sdk(tmp_path: Any) -> None:
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.stores import SQLiteCheckpointStore
    from lambdarun_durable.testing import DurableFunctionTestRunner

    payload = json.dumps({"order_id": "o-1"})
    with AwsRunner(build_handler("aws_durable_execution_sdk_python")) as aws:
        aws_result = aws.run(input=payload)
        (execution,) = aws._store.list_all()
        aws_events = [ev.to_dict() for ev in aws.get_execution_history(execution.durable_execution_arn, include_execution_data=True).events]

    ours = DurableFunctionTestRunner(build_handler("lambdarun_durable"), store=SQLiteCheckpointStore(str(tmp_path / "p.db")))
    our_result = ours.run(payload)

    assert json.loads(our_result.result) == json.loads(aws_result.result)
    assert our_result.status.value == aws_result.status.value
    ours_n = [e for e in normalize(our_result.history) if e[0] != "InvocationCompleted"]
    aws_n = [e for e in normalize(aws_events) if e[0] != "InvocationCompleted"]
    # branches of map/parallel run on threads in both engines, so only per-operation order is fixed
    assert sorted(ours_n) == sorted(aws_n)

    def per_op(events: list[tuple]) -> dict:
        seqs: dict = {}
        for e in events:
            seqs.setdefault(e[1], []).append(e[0])
        return seqs

    assert per_op(ours_n) == per_op(aws_n)
    # everything up to the map's own ContextStarted is strictly sequential: identical order
    prefix = next(i for i, e in enumerate(aws_n) if e[0] == "ContextStarted" and e[3] == "Map") + 1
    assert ours_n[:prefix] == aws_n[:prefix]
    assert sum(e["EventType"] == "InvocationCompleted" for e in our_result.history) == sum(
        e["EventType"] == "InvocationCompleted" for e in aws_events
    )


def build_callback_handler(pkg: str) -> tuple[Any, Any]:
    sdk = importlib.import_module(pkg)
    config = importlib.import_module(f"{pkg}.config")
    waits = importlib.import_module(f"{pkg}.waits")
    retries = importlib.import_module(f"{pkg}.retries")
    D = config.Duration

    @sdk.durable_execution
    def child(event: dict, ctx: Any) -> int:
        return ctx.step(lambda _: event["x"] + 1, name="inc")

    def strategy(state: int, attempt: int) -> Any:
        if state >= 2:
            return waits.WaitForConditionDecision.stop_polling()
        return waits.WaitForConditionDecision.continue_waiting(D.from_seconds(10))

    @sdk.durable_execution
    def handler(event: dict, ctx: Any) -> dict:
        r = ctx.wait_for_callback(
            lambda cid, c: None, name="approve",
            config=config.WaitForCallbackConfig(timeout=D.from_hours(1), heartbeat_timeout=D.from_minutes(10)),
        )
        cond = ctx.wait_for_condition(
            lambda s, c: s + 1, waits.WaitForConditionConfig(wait_strategy=strategy, initial_state=0), name="cond"
        )
        inv = ctx.invoke("child", {"x": 1}, name="call")
        try:
            ctx.step(lambda _: 1 / 0, name="div", config=config.StepConfig(retry_strategy=retries.RetryPresets.none()))
        except sdk.StepError as e:
            err = e.error_type
        return {"r": r, "cond": cond, "inv": inv, "err": err}

    return handler, child


def test_callbacks_conditions_and_invokes_match_aws_sdk() -> None:
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner as AwsRunner

    from lambdarun_durable.testing import DurableFunctionTestRunner

    handler, child = build_callback_handler("aws_durable_execution_sdk_python")
    with AwsRunner(handler) as aws:
        aws.register_durable_function("child", child)
        arn = aws.run_async(input="{}")
        aws.send_callback_success(aws.wait_for_callback(arn, timeout=20), b'"yes"')
        aws_result = aws.wait_for_result(arn, timeout=30)
        aws_events = [e.to_dict() for e in aws.get_execution_history(arn, include_execution_data=True).events]

    handler, child = build_callback_handler("lambdarun_durable")
    ours = DurableFunctionTestRunner(handler, callback_grace=None)
    ours.register_durable_function("child", child)
    arn = ours.run_async("{}")
    ours.send_callback_success(ours.wait_for_callback(arn), b'"yes"')
    our_result = ours.wait_for_result(arn)
    ours.close()

    assert json.loads(our_result.result) == json.loads(aws_result.result) == {
        "r": '"yes"', "cond": 2, "inv": 2, "err": "ZeroDivisionError"
    }

    def comparable(events: list[dict]) -> list[tuple]:
        out = []
        for e in normalize(events):
            if e[0] == "InvocationCompleted":
                continue
            if e[0] == "CallbackStarted":  # callback ids are opaque tokens of each service
                e = (*e[:5], "{}")
            out.append(e)
        return out

    assert comparable(our_result.history) == comparable(aws_events)
