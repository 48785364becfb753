"""While an execution waits for a callback, the test runner invokes nothing until it is due.

Issue 15: with no execution timeout the runner re-invoked about once a second while a
callback waited. Now it sleeps until something is due (the callback answered, a deadline
reached, the execution stopped); heartbeats move a deadline and wake nothing.
"""

from __future__ import annotations

import time

import pytest

from lambdarun_durable import DurableContext, durable_execution
from lambdarun_durable.config import CallbackConfig, Duration
from lambdarun_durable.lambda_service import InvocationStatus
from lambdarun_durable.testing import DurableFunctionTestRunner


@durable_execution
def approval(event: dict, ctx: DurableContext) -> str:
    cb = ctx.create_callback(name="approval")
    return cb.result()


@durable_execution
def approval_with_heartbeat(event: dict, ctx: DurableContext) -> str:
    cb = ctx.create_callback(
        name="approval",
        config=CallbackConfig(timeout=Duration.from_hours(1), heartbeat_timeout=Duration.from_minutes(10)),
    )
    return cb.result()


def _invocations_seen(runner: DurableFunctionTestRunner, arn: str) -> int:
    return runner._orchestrators[arn].invocations  # noqa: SLF001 - the runner's own driver


@pytest.mark.timeout(60)
@pytest.mark.parametrize("callback_grace", [0.5, None])
def test_waiting_callback_costs_no_invocation(callback_grace: float | None) -> None:
    with DurableFunctionTestRunner(approval, callback_grace=callback_grace) as runner:
        arn = runner.run_async('"go"')
        cb_id = runner.wait_for_callback(arn, name="approval")
        window_end = time.monotonic() + 3.0  # an observation window, not a synchronisation
        while time.monotonic() < window_end:
            assert _invocations_seen(runner, arn) == 1
            time.sleep(0.1)
        runner.send_callback_success(cb_id, b"approved")
        result = runner.wait_for_result(arn, timeout=30)
    assert result.status is InvocationStatus.SUCCEEDED
    assert result.result_value == "approved"  # pass-through serdes, as AWS's SDK
    # the first invocation suspended on the callback; the second returned its result
    assert len(result.invocations) == 2


@pytest.mark.timeout(60)
def test_heartbeats_wake_no_invocation() -> None:
    with DurableFunctionTestRunner(approval_with_heartbeat, callback_grace=None) as runner:
        arn = runner.run_async()
        cb_id = runner.wait_for_callback(arn, name="approval")
        for _ in range(5):
            runner.send_callback_heartbeat(cb_id)
            time.sleep(0.2)
            assert _invocations_seen(runner, arn) == 1
        runner.send_callback_success(cb_id, b"ok")
        result = runner.wait_for_result(arn, timeout=30)
    assert result.result_value == "ok"
    assert len(result.invocations) == 2
