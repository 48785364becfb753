"""Wire shapes of the durable-execution service (enums, ErrorObject, invocation output).

Operations themselves are kept as JSON dicts in the service's own shape
(``{"Id", "Type", "Status", "ParentId", "Name", "SubType", "StartTimestamp",
"EndTimestamp", "StepDetails": {...}, ...}``, timestamps in epoch milliseconds), the
same shape ``Operation.to_json_dict()`` produces in the AWS SDK.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NoReturn

from lambdarun_durable.exceptions import DurableOperationError, SerDesError, wire_type_of

#: an operation's serialized result (the SDK's alias)
OperationPayload = str


class OperationAction(Enum):
    START = "START"
    SUCCEED = "SUCCEED"
    FAIL = "FAIL"
    RETRY = "RETRY"
    CANCEL = "CANCEL"


class OperationStatus(Enum):
    STARTED = "STARTED"
    PENDING = "PENDING"
    READY = "READY"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    STOPPED = "STOPPED"


TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "STOPPED"})


class OperationType(Enum):
    EXECUTION = "EXECUTION"
    CONTEXT = "CONTEXT"
    STEP = "STEP"
    WAIT = "WAIT"
    CALLBACK = "CALLBACK"
    CHAINED_INVOKE = "CHAINED_INVOKE"


class OperationSubType(StrEnum):
    STEP = "Step"
    WAIT = "Wait"
    CALLBACK = "Callback"
    RUN_IN_CHILD_CONTEXT = "RunInChildContext"
    MAP = "Map"
    MAP_ITERATION = "MapIteration"
    PARALLEL = "Parallel"
    PARALLEL_BRANCH = "ParallelBranch"
    WAIT_FOR_CALLBACK = "WaitForCallback"
    WAIT_FOR_CONDITION = "WaitForCondition"
    CHAINED_INVOKE = "ChainedInvoke"


class InvocationStatus(Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PENDING = "PENDING"

    # as in AWS's SDK, used internally only: the invocation raised and is retried
    # (what instrumentation plugins' on_invocation_end sees then)
    RETRY = "RETRY"


@dataclass(frozen=True)
class ErrorObject:
    message: str | None
    type: str | None
    data: str | None
    stack_trace: list[str] | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorObject:
        return cls(
            message=data.get("ErrorMessage"),
            type=data.get("ErrorType"),
            data=data.get("ErrorData"),
            stack_trace=data.get("StackTrace"),
        )

    @classmethod
    def from_exception(cls, exception: BaseException) -> ErrorObject:
        if isinstance(exception, SerDesError):
            return cls(
                message=exception.message,
                type=wire_type_of(SerDesError),
                data=exception.data,
                stack_trace=exception.stack_trace,
            )
        wire = wire_type_of(type(exception))
        if isinstance(exception, DurableOperationError):
            return cls(
                message=exception.message,
                type=wire,
                data=exception.data,
                stack_trace=exception.stack_trace,
            )
        return cls(message=str(exception), type=wire, data=None, stack_trace=None)

    @classmethod
    def from_message(cls, message: str) -> ErrorObject:
        return cls(message=message, type=None, data=None, stack_trace=None)

    def to_dict(self) -> MutableMapping[str, Any]:
        out: MutableMapping[str, Any] = {}
        if self.message is not None:
            out["ErrorMessage"] = self.message
        if self.type is not None:
            out["ErrorType"] = self.type
        if self.data is not None:
            out["ErrorData"] = self.data
        if self.stack_trace is not None:
            out["StackTrace"] = self.stack_trace
        return out

    def to_durable_operation_error(self) -> DurableOperationError:
        return DurableOperationError.from_error_fields(
            self.type, self.message, self.data, self.stack_trace
        )

    def raise_as_operation_error(
        self, operation_error_cls: builtins.type[DurableOperationError]
    ) -> NoReturn:
        """Raise ``operation_error_cls`` rebuilt from this object (same on first run and replay)."""
        cause = self.to_durable_operation_error()
        if self.type == wire_type_of(SerDesError):
            raise SerDesError(
                message=self.message, error_type=self.type, data=self.data, stack_trace=self.stack_trace
            ) from cause
        raise operation_error_cls(
            message=self.message, error_type=self.type, data=self.data, stack_trace=self.stack_trace
        ) from cause


@dataclass(frozen=True)
class DurableExecutionInvocationOutput:
    """What a durable handler returns: ``{"Status", "Result"?, "Error"?}``."""

    status: InvocationStatus
    result: str | None = None
    error: ErrorObject | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DurableExecutionInvocationOutput:
        error = ErrorObject.from_dict(data["Error"]) if data.get("Error") else None
        return cls(status=InvocationStatus(data.get("Status")), result=data.get("Result"), error=error)

    def to_dict(self) -> MutableMapping[str, Any]:
        out: MutableMapping[str, Any] = {"Status": self.status.value}
        if self.result is not None:
            out["Result"] = self.result
        if self.error:
            out["Error"] = self.error.to_dict()
        return out

    @classmethod
    def create_succeeded(cls, result: str) -> DurableExecutionInvocationOutput:
        return cls(status=InvocationStatus.SUCCEEDED, result=result)

    @classmethod
    def create_retry(cls, error: ErrorObject) -> DurableExecutionInvocationOutput:
        return cls(status=InvocationStatus.RETRY, error=error)

    @classmethod
    def create_pending(cls) -> DurableExecutionInvocationOutput:
        return cls(status=InvocationStatus.PENDING)
