# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/block_example/block_example.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Example demonstrating nested child contexts (blocks)."""

from typing import Any

from lambdarun_durable.context import (
    DurableContext,
    durable_with_child_context,
)
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.config import Duration


@durable_with_child_context
def nested_block(ctx: DurableContext) -> str:
    """Nested block with its own child context."""
    # Wait in the nested block
    ctx.wait(Duration.from_seconds(1))
    return "nested block result"


@durable_with_child_context
def parent_block(ctx: DurableContext) -> dict[str, str]:
    """Parent block with nested operations."""
    # Nested step
    nested_result: str = ctx.step(
        lambda _: "nested step result",
        name="nested_step",
    )

    # Nested block with its own child context
    nested_block_result: str = ctx.run_in_child_context(nested_block())

    return {
        "nestedStep": nested_result,
        "nestedBlock": nested_block_result,
    }


@durable_execution
def handler(_event: Any, context: DurableContext) -> dict[str, str]:
    """Handler demonstrating nested child contexts."""
    # Run parent block which contains nested operations
    result: dict[str, str] = context.run_in_child_context(
        parent_block(), name="parent_block"
    )

    return result
