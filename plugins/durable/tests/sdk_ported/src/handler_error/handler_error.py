# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/handler_error/handler_error.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
"""Demonstrates how handler-level errors are captured and structured in results."""

from typing import Any

from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution


@durable_execution
def handler(_event: Any, _context: DurableContext) -> None:
    """Handler demonstrating handler-level error capture."""
    # Simulate a handler-level error that might occur in real applications
    raise Exception("Intentional handler failure")
