# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/src/wait/wait.py), Apache-2.0.
# Only the imports were changed (see README.md in this folder).
from typing import Any

from lambdarun_durable.context import DurableContext
from lambdarun_durable.execution import durable_execution
from lambdarun_durable.config import Duration


@durable_execution
def handler(_event: Any, context: DurableContext) -> str:
    context.wait(Duration.from_seconds(5))
    return "Wait completed"
