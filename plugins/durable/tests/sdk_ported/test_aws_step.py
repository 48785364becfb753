# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/test/step/test_step.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Tests for step example."""

import pytest
from lambdarun_durable.execution import InvocationStatus

from src.step import step
from sdk_helpers import deserialize_operation_payload


@pytest.mark.example
@pytest.mark.durable_execution(
    handler=step.handler,
    lambda_function_name="Basic Step",
)
def test_step(durable_runner):
    """Test basic step example."""
    with durable_runner:
        result = durable_runner.run(input="test", timeout=10)

    assert result.status is InvocationStatus.SUCCEEDED
    assert deserialize_operation_payload(result.result) == 8

    step_result = result.get_step("add_numbers")
    assert deserialize_operation_payload(step_result.result) == 8
