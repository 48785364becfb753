"""``context.wait`` and ``context.wait_for_condition``: durable timers and polling."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from lambdarun.errors import CheckpointError as StoreCheckpointError

from lambdarun_durable.exceptions import (
    InvocationError,
    TimedSuspendExecution,
    ValidationError,
    WaitForConditionError,
)
from lambdarun_durable.lambda_service import ErrorObject, OperationSubType, OperationType
from lambdarun_durable.operation_config import Duration
from lambdarun_durable.operations.base import ContextCore, check_size, op_details, raise_op_error
from lambdarun_durable.serdes import deserialize, serialize
from lambdarun_durable.types import WaitForConditionCheckContext
from lambdarun_durable.waits import WaitForConditionConfig

T = TypeVar("T")


class WaitOperations(ContextCore):
    """``wait``, ``wait_for_condition``."""

    def wait(self, duration: Duration, name: str | None = None) -> None:
        """Suspend the execution for ``duration`` (no compute is used while waiting)."""
        seconds = duration.to_seconds()
        if seconds < 1:
            raise ValidationError("duration must be at least 1 second")
        with self._operation(OperationSubType.WAIT.value, name, OperationType.WAIT) as ident:
            op = self.state.get(ident.operation_id)
            if op is not None and op["Status"] == "SUCCEEDED":
                return
            if op is None:
                op = self._checkpoint(ident, "START", options={"WaitSeconds": seconds})
            end = op_details(op, "WaitDetails").get("ScheduledEndTimestamp") or self.state.now_ms()
            raise TimedSuspendExecution(f"Wait for {seconds} seconds", end / 1000)

    def wait_for_condition(
        self,
        check: Callable[[T, WaitForConditionCheckContext], T],
        config: WaitForConditionConfig[T],
        name: str | None = None,
    ) -> T:
        """Poll ``check(state, ctx)`` durably until ``config.wait_strategy`` says stop."""
        if check is None:
            raise ValidationError("`check` is required for wait_for_condition")
        if not config:
            raise ValidationError("`config` is required for wait_for_condition")
        with self._operation(OperationSubType.WAIT_FOR_CONDITION.value, name, OperationType.STEP) as ident:
            state = self.state
            oid = ident.operation_id
            arn = state.durable_execution_arn
            op = state.get(oid)
            if op is not None:
                status = op["Status"]
                if status == "SUCCEEDED":
                    result = op_details(op, "StepDetails").get("Result")
                    return None if result is None else deserialize(config.serdes, result, oid, arn)  # type: ignore[return-value]
                if status == "FAILED":
                    raise_op_error(op, "StepDetails", WaitForConditionError)
                if status == "PENDING":
                    ts = op_details(op, "StepDetails").get("NextAttemptTimestamp") or state.now_ms()
                    raise TimedSuspendExecution(f"wait_for_condition {ident.name or oid} scheduled", ts / 1000)
            prior = op_details(op, "StepDetails").get("Result") if op else None
            if op is None or op["Status"] == "READY":
                op = self._checkpoint(ident, "START")
            try:
                if prior is not None:
                    current = deserialize(config.serdes, prior, oid, arn)
                else:
                    current = deserialize(config.serdes, serialize(config.serdes, config.initial_state, oid, arn), oid, arn)
                attempt = op_details(op, "StepDetails").get("Attempt", 0) + 1
                check_ctx = WaitForConditionCheckContext(
                    logger=self.logger.with_extra(operationId=oid, attempt=attempt), attempt=attempt
                )
                new_state = self.state.wrap_user_function(check, ident, False, attempt)(current, check_ctx)
                serialized = serialize(config.serdes, new_state, oid, arn)
                check_size(serialized, f"State of wait_for_condition {ident.name or oid!r}")
                round_tripped = deserialize(config.serdes, serialized, oid, arn)
                decision = config.wait_strategy(round_tripped, attempt)
                if not decision.should_continue:
                    self._checkpoint(ident, "SUCCEED", payload=serialized)
                    return deserialize(config.serdes, serialized, oid, arn)
                delay = max(1, decision.delay_seconds)
                self._checkpoint(ident, "RETRY", payload=serialized, options={"NextAttemptDelaySeconds": delay})
            except StoreCheckpointError:
                raise
            except Exception as e:  # noqa: BLE001
                if isinstance(e, InvocationError) and e.is_retryable():
                    raise
                err = ErrorObject.from_exception(e)
                self._checkpoint(ident, "FAIL", error=err)
                err.raise_as_operation_error(WaitForConditionError)
            raise TimedSuspendExecution(f"wait_for_condition {ident.name or oid} will retry in {delay} seconds", state.now() + delay)
