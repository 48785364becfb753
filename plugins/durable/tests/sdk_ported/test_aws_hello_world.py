# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/test/test_hello_world.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Integration tests for hello world example."""

import pytest
from lambdarun_durable.execution import InvocationStatus

from src import hello_world
from sdk_helpers import deserialize_operation_payload


@pytest.mark.example
@pytest.mark.durable_execution(
    handler=hello_world.handler,
    lambda_function_name="hello world",
)
def test_hello_world(durable_runner):
    """Test hello world example."""
    with durable_runner:
        result = durable_runner.run(input="test", timeout=30)

    assert result.status is InvocationStatus.SUCCEEDED
    assert deserialize_operation_payload(result.result) == {
        "statusCode": 200,
        "body": "Hello from Durable Lambda! (status: 200)",
    }
