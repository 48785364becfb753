# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/step/step_with_retry.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
from typing import Any

from lambdarun_durable.config import StepConfig
from lambdarun_durable.context import (
    DurableContext,
    StepContext,
    durable_step,
)
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.retries import (
    RetryStrategyConfig,
    create_retry_strategy,
)


@durable_step
def unreliable_operation(
    step_context: StepContext,
) -> str:
    # Fail on the first durable attempt and succeed on the retry.
    if step_context.attempt == 1:
        msg = f"Attempt {step_context.attempt} failed"
        raise RuntimeError(msg)
    return "Operation succeeded"


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    retry_config = RetryStrategyConfig(
        max_attempts=3,
        retryable_error_types=[RuntimeError],
    )

    result: str = context.step(
        unreliable_operation(),
        config=StepConfig(create_retry_strategy(retry_config)),
    )

    return result
