# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/map/map_with_max_concurrency.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Example demonstrating map with maxConcurrency limit."""

from typing import Any

from lambdarun_durable.config import MapConfig
from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution


@durable_execution
def handler(_event: Any, context: DurableContext) -> list[int]:
    """Process items with concurrency limit of 3."""
    items = list(range(1, 11))  # [1, 2, 3, ..., 10]

    # Extract results immediately to avoid BatchResult serialization
    return context.map(
        inputs=items,
        func=lambda ctx, item, index, _: ctx.step(
            lambda _: item * 3, name=f"process_{index}"
        ),
        name="map_with_concurrency",
        config=MapConfig(max_concurrency=3),
    ).get_results()
