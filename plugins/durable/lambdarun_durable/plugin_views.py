"""Read-only attribute views of lambdarun_durable's wire-shaped operations, for :mod:`.instrumentation`.

The engine keeps operations as JSON dicts in the service's shape (``{"Id", "Type", "Status",
"StepDetails": {...}, ...}``, timestamps in epoch milliseconds). AWS's instrumentation plugin
interface reads ``Operation``/``OperationUpdate`` objects (``operation.operation_id``,
``operation.step_details.attempt``, ...); these views give it exactly those attributes, built
only when a plugin is registered.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lambdarun_durable.lambda_service import ErrorObject, OperationAction, OperationStatus, OperationType


def _ts(ms: Any) -> datetime.datetime | None:
    if ms is None:
        return None
    if isinstance(ms, datetime.datetime):
        return ms
    return datetime.datetime.fromtimestamp(float(ms) / 1000, tz=datetime.UTC)


def _error(details: Mapping[str, Any]) -> ErrorObject | None:
    err = details.get("Error")
    return ErrorObject.from_dict(err) if err else None


@dataclass(frozen=True)
class Details:
    """``StepDetails`` / ``CallbackDetails`` / ``ChainedInvokeDetails`` / ``ContextDetails``."""

    result: str | None = None
    error: ErrorObject | None = None
    attempt: int | None = None


def _details(op: Mapping[str, Any], key: str, *, attempt: bool = False) -> Details | None:
    details = op.get(key)
    if details is None:
        return None
    return Details(
        result=details.get("Result"),
        error=_error(details),
        attempt=(details.get("Attempt", 0) if attempt else None),
    )


@dataclass(frozen=True)
class Operation:
    """The attributes of AWS's ``lambda_service.Operation`` the plugin interface reads."""

    operation_id: str
    operation_type: OperationType
    status: OperationStatus
    parent_id: str | None = None
    name: str | None = None
    sub_type: str | None = None
    start_timestamp: datetime.datetime | None = None
    end_timestamp: datetime.datetime | None = None
    step_details: Details | None = None
    callback_details: Details | None = None
    chained_invoke_details: Details | None = None
    context_details: Details | None = None

    @classmethod
    def from_wire(cls, op: Mapping[str, Any]) -> Operation:
        op_type = OperationType(op["Type"])
        return cls(
            operation_id=op["Id"],
            operation_type=op_type,
            status=OperationStatus(op["Status"]),
            parent_id=op.get("ParentId"),
            name=op.get("Name"),
            sub_type=op.get("SubType"),
            start_timestamp=_ts(op.get("StartTimestamp")),
            end_timestamp=_ts(op.get("EndTimestamp")),
            # AWS's service model gives a STEP operation StepDetails from its first attempt
            step_details=_details(op, "StepDetails", attempt=True)
            or (Details(attempt=0) if op_type is OperationType.STEP else None),
            callback_details=_details(op, "CallbackDetails"),
            chained_invoke_details=_details(op, "ChainedInvokeDetails"),
            context_details=_details(op, "ContextDetails"),
        )


class OperationViews:
    """Views of one invocation's operations, each built once per version of the operation.

    The engine replaces an operation's dict when it changes, so a view is reused while its
    dict is the same object: a plugin's per-checkpoint snapshot of the whole map costs a
    lookup per operation, not a conversion."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[Mapping[str, Any], Operation]] = {}

    def view(self, op: Mapping[str, Any]) -> Operation:
        cached = self._views.get(op["Id"])
        if cached is not None and cached[0] is op:
            return cached[1]
        view = Operation.from_wire(op)
        self._views[op["Id"]] = (op, view)
        return view

    def operation_map(self, operations: Mapping[str, Mapping[str, Any]]) -> dict[str, Operation]:
        return {op_id: self.view(op) for op_id, op in list(operations.items())}



@dataclass(frozen=True)
class OperationUpdate:
    """The attributes of AWS's ``lambda_service.OperationUpdate`` the plugin interface reads."""

    operation_id: str
    operation_type: OperationType
    action: OperationAction
    parent_id: str | None = None
    name: str | None = None
    sub_type: str | None = None
