# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/test/handler_error/test_handler_error.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Tests for handler_error."""

import pytest
from lambdarun_durable.execution import InvocationStatus

from src.handler_error import handler_error


@pytest.mark.example
@pytest.mark.durable_execution(
    handler=handler_error.handler,
    lambda_function_name="handler error",
)
def test_handle_handler_errors_gracefully_and_capture_error_details(durable_runner):
    """Test that handler errors are handled gracefully and error details are captured."""
    test_payload = {"test": "error-case"}

    with durable_runner:
        result = durable_runner.run(input=test_payload, timeout=10)

    # Verify execution failed
    assert result.status is InvocationStatus.FAILED

    # Check that error was captured in the result
    error = result.error
    assert error is not None

    assert error.message == "Intentional handler failure"
    assert error.type == "Exception"

    # Verify no operations were completed due to early error
    assert len(result.operations) == 0
