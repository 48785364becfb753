# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/step/step.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
from typing import Any

from lambdarun_durable.context import (
    DurableContext,
    StepContext,
    durable_step,
)
from lambdarun_durable.execution import durable_execution


@durable_step
def add_numbers(_step_context: StepContext, a: int, b: int) -> int:
    return a + b


@durable_execution
def handler(_event: Any, context: DurableContext) -> int:
    result: int = context.step(add_numbers(5, 3))
    return result
