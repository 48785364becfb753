"""Exceptions with the AWS durable-execution SDK's names and semantics.

Every class here also derives from :class:`lambdarun.errors.LambdarunError`, so
``except LambdarunError`` catches them. The SDK's own operation errors record the
AWS SDK's fully-qualified class name as their wire ``ErrorType`` (``_wire_type``),
so histories and checkpoints are interchangeable with executions written by
``aws_durable_execution_sdk_python``.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from lambdarun.errors import LambdarunError

_AWS_MODULE = "aws_durable_execution_sdk_python.exceptions"


class TerminationReason(Enum):
    UNHANDLED_ERROR = "UNHANDLED_ERROR"
    INVOCATION_ERROR = "INVOCATION_ERROR"
    EXECUTION_ERROR = "EXECUTION_ERROR"
    CHECKPOINT_FAILED = "CHECKPOINT_FAILED"
    NON_DETERMINISTIC_EXECUTION = "NON_DETERMINISTIC_EXECUTION"
    STEP_INTERRUPTED = "STEP_INTERRUPTED"
    SERIALIZATION_ERROR = "SERIALIZATION_ERROR"


class DurableExecutionsError(LambdarunError):
    """Base class for durable-execution errors."""

    _wire_type: ClassVar[str | None] = None


class PluginLoadError(DurableExecutionsError):
    """An instrumentation plugin could not be loaded."""


class UnrecoverableError(DurableExecutionsError):
    """Base class for errors that terminate the execution."""

    def __init__(self, message: str, termination_reason: TerminationReason):
        super().__init__(message)
        self.termination_reason = termination_reason


class ExecutionError(UnrecoverableError):
    """Fails the execution (status FAILED) without retrying the invocation."""

    def __init__(
        self,
        message: str,
        termination_reason: TerminationReason = TerminationReason.EXECUTION_ERROR,
    ):
        super().__init__(message, termination_reason)


class InvocationError(UnrecoverableError):
    """Fails the invocation so that it is retried (raised out of the handler)."""

    def __init__(
        self,
        message: str,
        termination_reason: TerminationReason = TerminationReason.INVOCATION_ERROR,
    ):
        super().__init__(message, termination_reason)

    def is_retryable(self) -> bool:
        return True


class NonDeterministicExecutionError(ExecutionError):
    """The handler took a different path than the checkpointed history.

    The message names the operation id and what differs (type, subtype, name or
    parent). Make the handler deterministic, or start a new execution.
    """

    def __init__(self, message: str, step_id: str | None = None):
        super().__init__(message, TerminationReason.NON_DETERMINISTIC_EXECUTION)
        self.step_id = step_id


class CheckpointError(InvocationError):
    """Writing a checkpoint failed; the invocation ends and is retried."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message, TerminationReason.CHECKPOINT_FAILED)
        self._retryable = retryable

    def is_retryable(self) -> bool:
        return self._retryable


class ValidationError(DurableExecutionsError):
    """Incorrect arguments to a durable operation."""


class InvalidStateError(DurableExecutionsError):
    """An operation was attempted on an object in an invalid state."""


class DurableOperationError(DurableExecutionsError):
    """Base class of typed per-operation failures (step, invoke, child context, ...).

    ``error_type`` names the error that escaped the operation (``"ValueError"``),
    ``message``, ``data`` and ``stack_trace`` come from the checkpointed error, so
    the first run and every replay raise an identical error.
    """

    def __init__(
        self,
        message: str | None = None,
        error_type: str | None = None,
        data: str | None = None,
        stack_trace: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str | None = message
        self.error_type: str = error_type or wire_type_of(type(self))
        self.data: str | None = data
        self.stack_trace: list[str] | None = stack_trace

    @classmethod
    def from_error_fields(
        cls,
        error_type: str | None,
        message: str | None,
        data: str | None,
        stack_trace: list[str] | None,
    ) -> DurableOperationError:
        target = _DURABLE_OPERATION_ERROR_REGISTRY.get(error_type or "", DurableOperationError)
        return target(message=message, error_type=error_type, data=data, stack_trace=stack_trace)


class StepError(DurableOperationError):
    """A step failed (retries exhausted or not retryable)."""


class InvokeError(DurableOperationError):
    """A chained invoke failed, timed out or was stopped."""


class ChildContextError(DurableOperationError):
    """A child context (run_in_child_context, map, parallel) failed."""


class WaitForConditionError(DurableOperationError):
    """A wait_for_condition operation failed."""


class SerDesError(DurableExecutionsError):
    """Serializing or deserializing an operation result failed (permanent)."""

    def __init__(
        self,
        message: str | None = None,
        error_type: str | None = None,
        data: str | None = None,
        stack_trace: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type or wire_type_of(SerDesError)
        self.data = data
        self.stack_trace = stack_trace


class CallbackError(DurableOperationError):
    """Base class for callback failures."""


class CallbackExternalError(CallbackError):
    """The external system reported failure (SendDurableExecutionCallbackFailure)."""


class CallbackTimeoutError(CallbackError):
    """The callback timed out (overall timeout or heartbeat expiry)."""


class CallbackSubmitterError(CallbackError):
    """The submitter step of wait_for_callback failed."""


class StepInterruptedError(InvocationError):
    """An at-most-once step was interrupted mid-run in an earlier invocation."""

    def __init__(self, message: str, step_id: str | None = None):
        super().__init__(message, TerminationReason.STEP_INTERRUPTED)
        self.step_id = step_id


class RetryableSerDesError(InvocationError):
    """A transient serdes failure: fails the invocation so it is retried."""


class CheckpointPayloadTooLargeError(ValidationError):
    """A result is larger than the 256 KiB checkpoint limit of the durable service."""


class SuspendExecution(BaseException):  # noqa: N818 (SDK name)
    """Control flow: end this invocation with PENDING (BaseException like SystemExit)."""

    def __init__(self, message: str):
        super().__init__(message)


class TimedSuspendExecution(SuspendExecution):
    """Suspend until ``scheduled_timestamp`` (unix seconds)."""

    def __init__(self, message: str, scheduled_timestamp: float):
        super().__init__(message)
        self.scheduled_timestamp = scheduled_timestamp

    @classmethod
    def from_delay(cls, message: str, delay_seconds: float, now: float) -> TimedSuspendExecution:
        return cls(message, now + max(delay_seconds, 0))


class OrphanedChildException(BaseException):  # noqa: N818 (SDK name)
    """A map/parallel branch kept running after its batch completed; it stops here."""

    def __init__(self, message: str, operation_id: str | None = None):
        super().__init__(message)
        self.operation_id = operation_id


# AWS wire names for the SDK-owned classes (so histories match the AWS SDK's).
for _cls in (
    StepError,
    InvokeError,
    ChildContextError,
    WaitForConditionError,
    SerDesError,
    CallbackError,
    CallbackExternalError,
    CallbackTimeoutError,
    CallbackSubmitterError,
    DurableOperationError,
    NonDeterministicExecutionError,
    ExecutionError,
    InvocationError,
    StepInterruptedError,
    ValidationError,
    CheckpointError,
    RetryableSerDesError,
):
    _cls._wire_type = f"{_AWS_MODULE}.{_cls.__qualname__}"


def wire_type_of(cls: type[BaseException]) -> str:
    """The ``ErrorType`` recorded for an exception class (builtins unqualified)."""
    wire = getattr(cls, "__dict__", {}).get("_wire_type")
    if wire:
        return wire
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


_DURABLE_OPERATION_ERROR_REGISTRY: dict[str, type[DurableOperationError]] = {}


def register_operation_error(error_cls: type[DurableOperationError]) -> None:
    """Register an operation-error class so replay rebuilds it from its wire type."""
    _DURABLE_OPERATION_ERROR_REGISTRY[wire_type_of(error_cls)] = error_cls
    _DURABLE_OPERATION_ERROR_REGISTRY[f"{error_cls.__module__}.{error_cls.__qualname__}"] = error_cls


for _cls in (
    StepError,
    InvokeError,
    ChildContextError,
    WaitForConditionError,
    CallbackError,
    CallbackExternalError,
    CallbackTimeoutError,
    CallbackSubmitterError,
):
    register_operation_error(_cls)
