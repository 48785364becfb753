# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/map/map_operations.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Example demonstrating map operations for processing collections durably."""

from typing import Any

from lambdarun_durable.config import MapConfig
from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution


@durable_execution
def handler(_event: Any, context: DurableContext) -> list[int]:
    """Process a list of items using context.map()."""
    items = [1, 2, 3, 4, 5]

    # Use context.map() to process items concurrently and extract results immediately
    return context.map(
        inputs=items,
        func=lambda ctx, item, index, _: ctx.step(
            lambda _: item * 2, name=f"map_item_{index}"
        ),
        name="map_operation",
        config=MapConfig(max_concurrency=2),
    ).get_results()
