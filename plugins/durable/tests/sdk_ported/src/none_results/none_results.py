# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/none_results/none_results.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Demonstrates handling of operations that return undefined values during replay."""

from typing import Any

from lambdarun_durable.context import (
    DurableContext,
    durable_with_child_context,
)
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.config import Duration


@durable_with_child_context
def parent_context(ctx: DurableContext) -> None:
    """Parent context that returns None."""
    return None


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    """Handler demonstrating operations with undefined/None results."""
    context.step(
        lambda _: None,
        name="fetch-user",
    )

    context.run_in_child_context(parent_context(), name="parent")

    context.wait(Duration.from_seconds(1), name="wait")

    return "result"
