# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/callback/callback_simple.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
from typing import TYPE_CHECKING, Any

from lambdarun_durable.config import CallbackConfig, Duration
from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution


if TYPE_CHECKING:
    from lambdarun_durable.types import Callback


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    callback_config = CallbackConfig(
        timeout=Duration.from_seconds(120), heartbeat_timeout=Duration.from_seconds(60)
    )

    callback: Callback[str] = context.create_callback(
        name="example_callback", config=callback_config
    )

    return callback.result()
