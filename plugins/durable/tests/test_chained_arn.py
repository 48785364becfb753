"""A chained invoke of a function given by its ARN: the child execution's ARN is AWS's
format (the target's name and version), not the whole function ARN nested in a new one."""

from __future__ import annotations

from typing import Any

from lambdarun_durable import DurableContext, durable_execution


def test_the_child_arn_names_the_target_function_and_version(runner_factory: Any) -> None:
    target = "arn:aws:lambda:us-east-1:123456789012:function:child-fn:7"

    @durable_execution
    def child(event: dict, ctx: DurableContext) -> Any:
        return event["x"] * 2

    @durable_execution
    def parent(event: dict, ctx: DurableContext) -> Any:
        return ctx.invoke(target, {"x": 21}, name="call child")

    runner = runner_factory(parent)
    runner.register_durable_function(target, child)
    result = runner.run()
    assert result.result_value == 42
    started = [e for e in result.history if e["EventType"] == "ChainedInvokeStarted"]
    child_arn = started[0]["ChainedInvokeStartedDetails"]["DurableExecutionArn"]
    assert child_arn.startswith("arn:aws:lambda:us-east-1:000000000000:function:child-fn:7/durable-execution/")
    assert child_arn.count("arn:") == 1
