# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/parallel/parallel.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Example demonstrating parallel operations for concurrent execution."""

from typing import Any

from lambdarun_durable.config import ParallelConfig
from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.config import Duration


@durable_execution
def handler(_event: Any, context: DurableContext) -> list[str]:
    """Execute multiple operations in parallel using context.parallel()."""

    # Use context.parallel() to execute functions concurrently and extract results immediately
    return context.parallel(
        functions=[
            lambda ctx: ctx.step(lambda _: "task 1 completed", name="task1"),
            lambda ctx: ctx.step(lambda _: "task 2 completed", name="task2"),
            lambda ctx: (
                ctx.wait(Duration.from_seconds(1), name="wait_in_task3"),
                "task 3 completed after wait",
            )[1],
        ],
        name="parallel_operation",
        config=ParallelConfig(max_concurrency=2),
    ).get_results()
