# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/parallel/parallel_with_wait.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Example demonstrating parallel with wait operations."""

from typing import Any

from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.config import Duration


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    """Execute parallel waits."""

    # Call get_results() to extract data and avoid BatchResult serialization
    context.parallel(
        functions=[
            lambda ctx: ctx.wait(Duration.from_seconds(1), name="wait_1_second"),
            lambda ctx: ctx.wait(Duration.from_seconds(2), name="wait_2_seconds"),
            lambda ctx: ctx.wait(Duration.from_seconds(5), name="wait_5_seconds"),
        ],
        name="parallel_waits",
    ).get_results()

    return "Completed waits"
