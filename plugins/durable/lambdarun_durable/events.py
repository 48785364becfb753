"""The durable invocation event as lambdarun sends it: AWS's shape plus the handler envelope.

An AWS durable invocation event carries ``DurableExecutionArn`` and ``CheckpointToken``;
the durable backend adds the handler as a base64 signed lambdarun call envelope under
:data:`HANDLER_KEY` (the AWS SDK ignores unknown keys).
"""

from __future__ import annotations

from typing import Any

#: event field holding the handler's signed call envelope (base64)
HANDLER_KEY = "LambdarunDurableHandler"
#: on Lambda's durable-execution API the handler travels in the execution's input instead:
#: ``{HANDLER_KEY: envelope, INPUT_KEY: the handler's event}`` (the durable backend's Invoke payload)
INPUT_KEY = "LambdarunDurableInput"


def is_durable_event(event: Any) -> bool:
    """Whether ``event`` is a durable invocation event (AWS's shape)."""
    return isinstance(event, dict) and "DurableExecutionArn" in event and "CheckpointToken" in event
