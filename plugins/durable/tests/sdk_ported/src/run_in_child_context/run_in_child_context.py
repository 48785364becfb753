# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/run_in_child_context/run_in_child_context.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
from typing import Any

from lambdarun_durable.context import (
    DurableContext,
    durable_with_child_context,
)
from lambdarun_durable.execution import durable_execution


def multiply_by_two(value: int) -> int:
    return value * 2


@durable_with_child_context
def child_operation(ctx: DurableContext, value: int) -> int:
    return ctx.step(lambda _: multiply_by_two(value), name="multiply")


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    result = context.run_in_child_context(child_operation(5))
    return f"Child context result: {result}"
