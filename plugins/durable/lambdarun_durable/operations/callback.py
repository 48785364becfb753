"""``context.create_callback`` and ``context.wait_for_callback``: wait for an external system."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lambdarun_durable.exceptions import (
    CallbackError,
    CallbackExternalError,
    CallbackSubmitterError,
    CallbackTimeoutError,
    ChildContextError,
    StepError,
    SuspendExecution,
)
from lambdarun_durable.lambda_service import ErrorObject, OperationSubType, OperationType
from lambdarun_durable.operation_config import CallbackConfig, StepConfig, WaitForCallbackConfig
from lambdarun_durable.operations.base import PASS_THROUGH_SERDES, op_details
from lambdarun_durable.operations.child import ChildContextOperations
from lambdarun_durable.serdes import SerDes, deserialize
from lambdarun_durable.state import ExecutionState
from lambdarun_durable.types import StepContext, WaitForCallbackContext

T = TypeVar("T")


class Callback(Generic[T]):
    """A callback future: ``result()`` suspends the execution until the callback completes."""

    def __init__(self, callback_id: str, operation_id: str, state: ExecutionState, serdes: SerDes[T] | None = None):
        self.callback_id = callback_id
        self.operation_id = operation_id
        self.state = state
        self.serdes = serdes

    def result(self) -> T | None:
        op = self.state.get(self.operation_id)
        if op is None:
            raise CallbackError(message="Callback operation must exist")
        status = op["Status"]
        details = op_details(op, "CallbackDetails")
        if status in ("FAILED", "CANCELLED", "TIMED_OUT", "STOPPED"):
            err = ErrorObject.from_dict(details.get("Error") or {})
            timeout = status == "TIMED_OUT"
            cls = CallbackTimeoutError if timeout else CallbackExternalError
            raise cls(
                message=err.message or ("Callback timed out" if timeout else "Callback failed"),
                data=err.data,
                stack_trace=err.stack_trace,
            )
        if status == "SUCCEEDED":
            if details.get("Result") is None:
                return None
            return deserialize(
                self.serdes if self.serdes is not None else PASS_THROUGH_SERDES,
                details["Result"],
                self.operation_id,
                self.state.durable_execution_arn,
            )
        raise SuspendExecution("Callback result not received yet. Suspending execution while waiting for result.")


class CallbackOperations(ChildContextOperations):
    """``create_callback``, ``wait_for_callback`` (a child context: callback + submitter step)."""

    def create_callback(self, name: str | None = None, config: CallbackConfig | None = None) -> Callback:
        """Create a callback; give ``callback.callback_id`` to the external system."""
        config = config or CallbackConfig()
        sub = config.sub_type or OperationSubType.CALLBACK.value
        with self._operation(sub, name, OperationType.CALLBACK) as ident:
            op = self.state.get(ident.operation_id)
            if op is None:
                op = self._checkpoint(
                    ident,
                    "START",
                    options={
                        "TimeoutSeconds": config.timeout_seconds,
                        "HeartbeatTimeoutSeconds": config.heartbeat_timeout_seconds,
                    },
                    sync=True,
                )
            callback_id = op_details(op, "CallbackDetails").get("CallbackId")
            if not callback_id:
                raise CallbackError(message=f"Missing callback details for operation: {ident.operation_id}")
            return Callback(callback_id, ident.operation_id, self.state, config.serdes)

    def wait_for_callback(
        self,
        submitter: Callable[[str, WaitForCallbackContext], Any],
        name: str | None = None,
        config: WaitForCallbackConfig | None = None,
    ) -> Any:
        """Create a callback, run ``submitter(callback_id, ctx)`` as a step, wait for the result."""
        step_name = self._resolve_step_name(name, submitter)

        def wait_in_child_context(context: Any) -> Any:
            prefix = f"{step_name} " if step_name else ""
            callback = context.create_callback(name=f"{prefix}create callback id", config=config)

            def submitter_step(step_context: StepContext) -> Any:
                return submitter(callback.callback_id, WaitForCallbackContext(logger=step_context.logger))

            step_config = (
                StepConfig(retry_strategy=config.retry_strategy, serdes=config.serdes) if config else None
            )
            context.step(submitter_step, name=f"{prefix}submitter", config=step_config)
            return callback.result()

        try:
            return self._run_in_child_context(
                wait_in_child_context, step_name, None, OperationSubType.WAIT_FOR_CALLBACK.value
            )
        except ChildContextError as e:
            inner = e.__cause__
            if isinstance(inner, CallbackError):
                raise inner from None
            if isinstance(inner, StepError) or e.error_type.endswith("StepError"):
                raise CallbackSubmitterError(
                    e.message or "Callback submitter failed", data=e.data, stack_trace=e.stack_trace
                ) from e
            raise
