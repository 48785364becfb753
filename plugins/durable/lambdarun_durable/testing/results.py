"""The result model of the test runners: operations, invocations, the test result.

AWS's testing package's names and fields (its ``runner`` module's ``Operation`` classes,
``create_operation`` and ``DurableFunctionTestResult``), built from service-shaped
operations: the local runner's checkpoint records or the cloud runner's
``GetDurableExecution``/``GetDurableExecutionHistory`` answers.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lambdarun_durable.lambda_service import ErrorObject, InvocationStatus, OperationStatus, OperationType
from lambdarun_durable.records import public_op
from lambdarun_durable.testing.exceptions import DurableFunctionsTestError


class ExecutionStatus(Enum):
    """The execution's own status (``GetDurableExecution``), beside the invocation status."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    TIMED_OUT = "TIMED_OUT"


_DETAILS = {
    "STEP": "StepDetails",
    "CONTEXT": "ContextDetails",
    "CALLBACK": "CallbackDetails",
    "CHAINED_INVOKE": "ChainedInvokeDetails",
    "WAIT": "WaitDetails",
    "EXECUTION": "ExecutionDetails",
}


@dataclass
class Operation:
    """An operation of the execution, as ``aws_durable_execution_sdk_python_testing`` has it.

    ``operation_type``/``status`` are the SDK's enums; timestamps are aware datetimes;
    ``result`` is the operation's serialized payload (a string, as on AWS). ``raw`` keeps
    the service-shaped operation dict.
    """

    operation_id: str
    operation_type: OperationType
    status: OperationStatus
    parent_id: str | None = field(default=None, kw_only=True)
    name: str | None = field(default=None, kw_only=True)
    sub_type: str | None = field(default=None, kw_only=True)
    start_timestamp: datetime.datetime | None = field(default=None, kw_only=True)
    end_timestamp: datetime.datetime | None = field(default=None, kw_only=True)
    raw: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    def _details(self) -> dict[str, Any]:
        return self.raw.get(_DETAILS.get(self.operation_type.value, ""), None) or {}


class _ByName:
    """The by-name accessors AWS's ``ContextOperation`` and ``DurableFunctionTestResult`` share."""

    def _named_operations(self) -> tuple[list[Operation], str]:
        raise NotImplementedError

    def get_operation_by_name(self, name: str) -> Operation:
        operations, what = self._named_operations()
        for operation in operations:
            if operation.name == name:
                return operation
        raise DurableFunctionsTestError(f"{what} with name '{name}' not found")

    def get_step(self, name: str) -> StepOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_wait(self, name: str) -> WaitOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_context(self, name: str) -> ContextOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_callback(self, name: str) -> CallbackOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_invoke(self, name: str) -> InvokeOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_execution(self, name: str) -> ExecutionOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]


@dataclass
class ExecutionOperation(Operation):
    input_payload: str | None = None


@dataclass
class ContextOperation(_ByName, Operation):
    child_operations: list[Operation] = field(default_factory=list)
    result: str | None = None
    error: ErrorObject | None = None

    def _named_operations(self) -> tuple[list[Operation], str]:
        return self.child_operations, "Child Operation"


@dataclass
class StepOperation(ContextOperation):
    attempt: int = 0
    next_attempt_timestamp: datetime.datetime | None = None


@dataclass
class WaitOperation(Operation):
    scheduled_end_timestamp: datetime.datetime | None = None


@dataclass
class CallbackOperation(ContextOperation):
    callback_id: str | None = None


@dataclass
class InvokeOperation(Operation):
    result: str | None = None
    error: ErrorObject | None = None


def _ts(ms: Any) -> datetime.datetime | None:
    if ms is None:
        return None
    if isinstance(ms, datetime.datetime):
        return ms
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def create_operation(op: dict[str, Any], all_operations: list[dict[str, Any]] | None = None) -> Operation:
    """An :class:`Operation` (of the subclass for its type) from a service-shaped dict."""
    op_type = OperationType(op["Type"])
    common: dict[str, Any] = {
        "operation_id": op["Id"],
        "operation_type": op_type,
        "status": OperationStatus(op["Status"]),
        "parent_id": op.get("ParentId"),
        "name": op.get("Name"),
        "sub_type": op.get("SubType"),
        "start_timestamp": _ts(op.get("StartTimestamp")),
        "end_timestamp": _ts(op.get("EndTimestamp")),
        "raw": public_op(op),
    }
    details = op.get(_DETAILS.get(op_type.value, ""), None) or {}
    error = ErrorObject.from_dict(details["Error"]) if details.get("Error") else None

    def children() -> list[Operation]:
        return [create_operation(o, all_operations) for o in all_operations or () if o.get("ParentId") == op["Id"]]

    if op_type is OperationType.EXECUTION:
        return ExecutionOperation(**common, input_payload=details.get("InputPayload"))
    if op_type is OperationType.STEP:
        return StepOperation(
            **common, child_operations=children(), result=details.get("Result"), error=error,
            attempt=details.get("Attempt", 0), next_attempt_timestamp=_ts(details.get("NextAttemptTimestamp")),
        )
    if op_type is OperationType.WAIT:
        return WaitOperation(**common, scheduled_end_timestamp=_ts(details.get("ScheduledEndTimestamp")))
    if op_type is OperationType.CALLBACK:
        return CallbackOperation(
            **common, child_operations=children(), result=details.get("Result"), error=error,
            callback_id=details.get("CallbackId"),
        )
    if op_type is OperationType.CHAINED_INVOKE:
        return InvokeOperation(**common, result=details.get("Result"), error=error)
    return ContextOperation(**common, child_operations=children(), result=details.get("Result"), error=error)


@dataclass
class Invocation:
    """One invocation of the handler, from its ``InvocationCompleted`` history event."""

    request_id: str | None
    start_timestamp: datetime.datetime | None
    end_timestamp: datetime.datetime | None
    error: ErrorObject | None = None


@dataclass
class DurableFunctionTestResult(_ByName):
    """The end of an execution: AWS testing package's fields, plus ``history``/``invocations``."""

    status: InvocationStatus
    operations: list[Operation]
    result: str | None = None
    error: ErrorObject | None = None
    execution_status: ExecutionStatus | None = None
    execution_arn: str = ""
    #: the GetDurableExecutionHistory events (service shape)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: every invocation of the handler, in order (``len(result.invocations)``: how many)
    invocations: list[Invocation] = field(default_factory=list)

    @property
    def result_value(self) -> Any:
        """The JSON-decoded ``result`` (lambdarun's convenience)."""
        return None if self.result in (None, "") else json.loads(self.result)

    @classmethod
    def from_execution_history(
        cls, execution: dict[str, Any], history: dict[str, Any] | list[dict[str, Any]]
    ) -> DurableFunctionTestResult:
        """Build a result from ``GetDurableExecution`` and ``GetDurableExecutionHistory`` answers."""
        events = history["Events"] if isinstance(history, dict) else list(history)
        status_text = execution.get("Status", "FAILED")
        return cls.from_operations(
            events_to_operations(events),
            events,
            status=InvocationStatus[status_text] if status_text in InvocationStatus.__members__ else InvocationStatus.FAILED,
            execution_status=ExecutionStatus[status_text] if status_text in ExecutionStatus.__members__ else ExecutionStatus.FAILED,
            result=execution.get("Result"),
            error=execution.get("Error"),
            execution_arn=execution.get("DurableExecutionArn", ""),
        )

    @classmethod
    def from_operations(
        cls,
        operations: list[dict[str, Any]],
        history: list[dict[str, Any]],
        *,
        status: InvocationStatus,
        execution_status: ExecutionStatus,
        result: str | None,
        error: dict[str, Any] | None,
        execution_arn: str,
    ) -> DurableFunctionTestResult:
        """A result from the execution's service-shaped operations and its history events.

        ``operations`` holds every operation (nested ones too); the result's
        ``operations`` are its top-level ones, each with its children.
        """
        top = [
            create_operation(o, operations) for o in operations if o["Type"] != "EXECUTION" and not o.get("ParentId")
        ]
        return cls(
            status=status,
            operations=top,
            result=result,
            error=ErrorObject.from_dict(error) if error else None,
            execution_status=execution_status,
            execution_arn=execution_arn,
            history=history,
            invocations=_invocations(history),
        )

    def _named_operations(self) -> tuple[list[Operation], str]:
        return self.operations, "Operation"

    def get_all_operations(self) -> list[Operation]:
        """Every operation, nested ones included (depth first, in execution order)."""
        out: list[Operation] = []
        stack = list(self.operations)
        while stack:
            op = stack.pop(0)
            out.append(op)
            stack[0:0] = getattr(op, "child_operations", None) or []
        return out

    def find_operation(self, name: str) -> Operation:
        """The first operation named ``name`` at any depth (lambdarun's convenience)."""
        for op in self.get_all_operations():
            if op.name == name:
                return op
        raise DurableFunctionsTestError(
            f"no operation named {name!r}; names: {[o.name for o in self.get_all_operations()]}"
        )


def _invocations(events: list[dict[str, Any]]) -> list[Invocation]:
    out = []
    for ev in events:
        if ev.get("EventType") != "InvocationCompleted":
            continue
        d = ev.get("InvocationCompletedDetails") or {}
        err = (d.get("Error") or {}).get("Payload") if isinstance(d.get("Error"), dict) else None
        out.append(
            Invocation(
                request_id=d.get("RequestId"),
                start_timestamp=_ts(d.get("StartTimestamp")),
                end_timestamp=_ts(d.get("EndTimestamp")),
                error=ErrorObject.from_dict(err) if err else None,
            )
        )
    return out


_EVENT_TYPES = {
    "Execution": "EXECUTION", "Context": "CONTEXT", "Step": "STEP", "Wait": "WAIT",
    "Callback": "CALLBACK", "ChainedInvoke": "CHAINED_INVOKE",
}
_EVENT_STATUS = {
    "Started": "STARTED", "Succeeded": "SUCCEEDED", "Failed": "FAILED", "TimedOut": "TIMED_OUT",
    "Stopped": "STOPPED", "Cancelled": "CANCELLED",
}


def events_to_operations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold history events (``GetDurableExecutionHistory``) into service-shaped operations."""
    ops: dict[str, dict[str, Any]] = {}
    for ev in events:
        etype = ev.get("EventType", "")
        if "Id" not in ev:
            continue
        kind = next((k for k in sorted(_EVENT_TYPES, key=len, reverse=True) if etype.startswith(k)), None)
        if kind is None:
            continue
        status = _EVENT_STATUS.get(etype[len(kind):])
        if status is None:
            continue
        op_type = _EVENT_TYPES[kind]
        op = ops.setdefault(ev["Id"], {"Id": ev["Id"], "Type": op_type})
        op["Status"] = status
        for key in ("Name", "ParentId", "SubType"):
            if ev.get(key):
                op[key] = ev[key]
        ts = ev.get("EventTimestamp")
        if status == "STARTED":
            op.setdefault("StartTimestamp", ts)
        else:
            op["EndTimestamp"] = ts
        details = ev.get(f"{etype}Details") or {}
        dkey = _DETAILS[op_type]
        d = op.setdefault(dkey, {})
        for src, dst in (("Result", "Result"), ("Error", "Error"), ("Input", "InputPayload")):
            value = details.get(src)
            if isinstance(value, dict) and "Payload" in value:
                d[dst] = value["Payload"]
        if "CallbackId" in details:
            d["CallbackId"] = details["CallbackId"]
        if "ScheduledEndTimestamp" in details:
            d["ScheduledEndTimestamp"] = details["ScheduledEndTimestamp"]
        retry = details.get("RetryDetails") or {}
        if "CurrentAttempt" in retry:
            d["Attempt"] = retry["CurrentAttempt"]
        if "NextAttemptDelaySeconds" in retry:
            d["NextAttemptDelaySeconds"] = retry["NextAttemptDelaySeconds"]
    return list(ops.values())
