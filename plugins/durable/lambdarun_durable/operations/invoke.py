"""``context.invoke``: start another durable function and wait (suspended) for its result."""

from __future__ import annotations

from typing import TypeVar

from lambdarun_durable.exceptions import InvokeError, SuspendExecution
from lambdarun_durable.lambda_service import OperationSubType, OperationType
from lambdarun_durable.operation_config import InvokeConfig
from lambdarun_durable.operations.base import ContextCore, op_details, raise_op_error
from lambdarun_durable.serdes import DEFAULT_JSON_SERDES, deserialize, serialize

P = TypeVar("P")
R = TypeVar("R")


class InvokeOperations(ContextCore):
    """``invoke``."""

    def invoke(
        self, function_name: str, payload: P, name: str | None = None, config: InvokeConfig[P, R] | None = None
    ) -> R:
        """Invoke another durable function and wait (suspended) for its result."""
        config = config or InvokeConfig()
        with self._operation(OperationSubType.CHAINED_INVOKE.value, name, OperationType.CHAINED_INVOKE) as ident:
            oid = ident.operation_id
            op = self.state.get(oid)
            if op is not None:
                status = op["Status"]
                if status == "SUCCEEDED":
                    result = op_details(op, "ChainedInvokeDetails").get("Result")
                    if result is None:
                        return None  # type: ignore[return-value]
                    return deserialize(
                        config.serdes_result or DEFAULT_JSON_SERDES, result, oid, self.state.durable_execution_arn
                    )
                if status in ("FAILED", "TIMED_OUT", "STOPPED"):
                    raise_op_error(op, "ChainedInvokeDetails", InvokeError)
            if op is None:
                serialized = serialize(
                    config.serdes_payload or DEFAULT_JSON_SERDES, payload, oid, self.state.durable_execution_arn
                )
                self._checkpoint(
                    ident,
                    "START",
                    payload=serialized,
                    options={"FunctionName": function_name, "TenantId": config.tenant_id},
                    sync=True,
                )
            raise SuspendExecution(f"Invoke {oid} started, suspending for completion")
