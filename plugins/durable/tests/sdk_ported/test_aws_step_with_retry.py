# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/test/step/test_step_with_retry.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Tests for step_with_retry example."""

from unittest.mock import Mock

import pytest
from lambdarun_durable.context import StepContext
from lambdarun_durable.execution import InvocationStatus
from lambdarun_durable.lambda_service import OperationType
from src.step import step_with_retry
from sdk_helpers import deserialize_operation_payload


def test_unreliable_operation_uses_durable_attempt():
    """Retry behavior is independent of process-level state."""
    operation = step_with_retry.unreliable_operation()
    first_attempt = StepContext(logger=Mock(), attempt=1)
    second_attempt = StepContext(logger=Mock(), attempt=2)

    with pytest.raises(RuntimeError, match="Attempt 1 failed"):
        operation(first_attempt)

    assert operation(second_attempt) == "Operation succeeded"

    with pytest.raises(RuntimeError, match="Attempt 1 failed"):
        operation(first_attempt)


@pytest.mark.example
@pytest.mark.durable_execution(
    handler=step_with_retry.handler,
    lambda_function_name="step with retry",
)
def test_step_with_retry(durable_runner):
    """Test step with retry configuration.

    With durable-attempt-based deterministic behavior:
    - Attempt 1: step context attempt = 1, so the operation raises RuntimeError.
    - Attempt 2: step context attempt = 2, so the operation succeeds.

    The function deterministically fails once then succeeds on the second attempt.
    """
    with durable_runner:
        result = durable_runner.run(input="test", timeout=30)

    # With durable-attempt-based deterministic behavior, succeeds on attempt 2
    assert result.status is InvocationStatus.SUCCEEDED
    assert deserialize_operation_payload(result.result) == "Operation succeeded"

    # Verify step operation exists with retry details
    step_ops = [
        op for op in result.operations if op.operation_type == OperationType.STEP
    ]
    assert len(step_ops) == 1

    # The step should have succeeded on attempt 2 (after 1 failure)
    # Attempt numbering: 1 (initial attempt), 2 (first retry)
    step_op = step_ops[0]
    assert step_op.attempt == 2  # Succeeded on first retry (1-indexed: 2=first retry)
