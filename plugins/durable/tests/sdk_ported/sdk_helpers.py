# Ported from aws/aws-durable-execution-sdk-python@f7cc397 (packages/aws-durable-execution-sdk-python-examples/test/conftest.py: deserialize_operation_payload), Apache-2.0.
# Changed: the imports, the runner mode read from DURABLE_RUNNER_MODE instead of a CLI option,
# deserialize_operation_payload moved to sdk_helpers.py, the X-Ray fixtures left out.
"""deserialize_operation_payload from AWS's examples conftest (imported as test.conftest there)."""

import json
from typing import Any

from lambdarun_durable.lambda_service import OperationPayload
from lambdarun_durable.serdes import ExtendedTypeSerDes


def deserialize_operation_payload(
    payload: OperationPayload | None, serdes: ExtendedTypeSerDes | None = None
) -> Any:
    """Deserialize an operation payload using the provided or default serializer.

    This utility function helps test code deserialize operation results that are
    returned as raw strings. It supports both the default ExtendedTypeSerDes and
    custom serializers.

    Args:
        payload: The operation payload string to deserialize, or None.
        serdes: Optional custom serializer. If None, uses ExtendedTypeSerDes.

    Returns:
        Deserialized result object, or None if payload is None.
    """
    if not payload:
        return None

    if serdes is None:
        serdes = ExtendedTypeSerDes()

    try:
        return serdes.deserialize(payload)
    except Exception:
        # Fallback to plain JSON for backwards compatibility
        return json.loads(payload)


