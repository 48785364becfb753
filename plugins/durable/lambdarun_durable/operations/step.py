"""``context.step``: run a function once, checkpoint its result, retry it by its strategy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lambdarun.errors import CheckpointError as StoreCheckpointError

from lambdarun_durable.exceptions import (
    CheckpointPayloadTooLargeError,
    ExecutionError,
    RetryableSerDesError,
    SerDesError,
    StepError,
    StepInterruptedError,
    TimedSuspendExecution,
)
from lambdarun_durable.identifier import OperationIdentifier
from lambdarun_durable.lambda_service import ErrorObject, OperationSubType, OperationType
from lambdarun_durable.operation_config import StepConfig, StepSemantics
from lambdarun_durable.operations.base import ContextCore, check_size, op_details, raise_op_error
from lambdarun_durable.retries import RetryPresets
from lambdarun_durable.serdes import deserialize, serialize
from lambdarun_durable.types import StepContext

T = TypeVar("T")


class StepOperations(ContextCore):
    """``step``."""

    def step(self, func: Callable[[StepContext], T], name: str | None = None, config: StepConfig | None = None) -> T:
        """Run ``func`` once and checkpoint its result; on replay return the stored result."""
        step_name = self._resolve_step_name(name, func)
        config = config or StepConfig()
        with self._operation(config.sub_type or OperationSubType.STEP.value, step_name, OperationType.STEP) as ident:
            return self._run_step(func, ident, config)

    def _run_step(self, func: Callable[[StepContext], T], ident: OperationIdentifier, config: StepConfig) -> T:
        state = self.state
        oid = ident.operation_id
        op = state.get(oid)
        if op is not None:
            status = op["Status"]
            if status == "SUCCEEDED":
                result = op_details(op, "StepDetails").get("Result")
                if result is None:
                    return None  # type: ignore[return-value]
                return deserialize(config.serdes, result, oid, state.durable_execution_arn)
            if status == "FAILED":
                raise_op_error(op, "StepDetails", StepError)
            if status == "PENDING":
                ts = op_details(op, "StepDetails").get("NextAttemptTimestamp") or state.now_ms()
                raise TimedSuspendExecution(f"Retry scheduled for {ident.name or oid}", ts / 1000)
            if status == "STARTED" and config.step_semantics is StepSemantics.AT_MOST_ONCE_PER_RETRY:
                self._retry_handler(
                    StepInterruptedError(
                        f"Step operation_id={oid} name={ident.name} was previously interrupted", step_id=oid
                    ),
                    op,
                    ident,
                    config,
                )
        if op is None or op["Status"] == "READY":
            op = self._checkpoint(
                ident, "START", sync=config.step_semantics is StepSemantics.AT_MOST_ONCE_PER_RETRY
            )
        attempt = op_details(op, "StepDetails").get("Attempt", 0) + 1
        step_ctx = StepContext(logger=self.logger.with_extra(operationId=oid, operationName=ident.name, attempt=attempt), attempt=attempt)
        try:
            raw = state.wrap_user_function(func, ident, False, attempt)(step_ctx)
            serialized = serialize(config.serdes, raw, oid, state.durable_execution_arn)
            check_size(serialized, f"Result of step {ident.name or oid!r}")
            value: T = (
                None  # type: ignore[assignment]
                if serialized is None
                else deserialize(config.serdes, serialized, oid, state.durable_execution_arn)
            )
            # at-most-once steps make their outcome durable before returning, so a crash after
            # the body finished never re-runs it; at-least-once steps ride the batch
            self._checkpoint(
                ident, "SUCCEED", payload=serialized,
                sync=config.step_semantics is StepSemantics.AT_MOST_ONCE_PER_RETRY,
            )
            return value
        except RetryableSerDesError:
            raise
        except (SerDesError, CheckpointPayloadTooLargeError) as e:
            err = ErrorObject.from_exception(e)
            self._checkpoint(ident, "FAIL", error=err)
            err.raise_as_operation_error(StepError)
        except (ExecutionError, StoreCheckpointError):
            raise  # a store refusal (conflict) is the invocation's failure, not the step's
        except Exception as e:  # noqa: BLE001
            self._retry_handler(e, op, ident, config)
        raise ExecutionError("retry handler should have raised an exception, but did not.")

    def _retry_handler(
        self, error: Exception, op: dict[str, Any] | None, ident: OperationIdentifier, config: StepConfig
    ) -> None:
        err = ErrorObject.from_exception(error)
        strategy = config.retry_strategy or RetryPresets.default()
        attempts_before = op_details(op, "StepDetails").get("Attempt", 0) if op else 0
        decision = strategy(error, attempts_before + 1)
        if decision.should_retry:
            delay = max(1, decision.delay_seconds)
            self._checkpoint(ident, "RETRY", error=err, options={"NextAttemptDelaySeconds": delay})
            raise TimedSuspendExecution(
                f"Retry scheduled for {ident.operation_id} in {delay} seconds", self.state.now() + delay
            )
        self._checkpoint(ident, "FAIL", error=err)
        err.raise_as_operation_error(StepError)
