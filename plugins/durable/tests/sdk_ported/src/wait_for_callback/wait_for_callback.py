# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/wait_for_callback/wait_for_callback.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
from typing import Any

from lambdarun_durable.config import Duration, WaitForCallbackConfig
from lambdarun_durable.context import (
    DurableContext,
    WaitForCallbackContext,
)
from lambdarun_durable.execution import durable_execution


def external_system_call(_callback_id: str, _context: WaitForCallbackContext) -> None:
    """Simulate calling an external system with callback ID."""
    # In real usage, this would make an API call to an external system
    # passing the callback_id for the system to call back when done


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    config = WaitForCallbackConfig(
        timeout=Duration.from_seconds(120), heartbeat_timeout=Duration.from_seconds(60)
    )

    result = context.wait_for_callback(
        external_system_call, name="external_call", config=config
    )

    return f"External system result: {result}"
