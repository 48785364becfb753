"""``context.run_in_child_context``: group operations under one CONTEXT operation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self, TypeVar

from lambdarun.errors import CheckpointError as StoreCheckpointError

from lambdarun_durable.exceptions import (
    ChildContextError,
    ExecutionError,
    InvocationError,
    NonDeterministicExecutionError,
)
from lambdarun_durable.identifier import OperationIdentifier
from lambdarun_durable.lambda_service import ErrorObject, OperationStatus, OperationSubType, OperationType
from lambdarun_durable.operation_config import ChildConfig
from lambdarun_durable.operations.base import ContextCore, op_details, raise_op_error
from lambdarun_durable.serdes import deserialize, serialize
from lambdarun_durable.state import CHECKPOINT_SIZE_LIMIT_BYTES

T = TypeVar("T")


class ChildContextOperations(ContextCore):
    """``run_in_child_context``, and :meth:`run_child_operation` which map/parallel share."""

    def run_in_child_context(
        self, func: Callable[[Self], T], name: str | None = None, config: ChildConfig | None = None
    ) -> T:
        """Run ``func(child_context)``; its operations are grouped under one CONTEXT operation."""
        step_name = self._resolve_step_name(name, func)
        sub = (config.sub_type if config else None) or OperationSubType.RUN_IN_CHILD_CONTEXT.value
        return self._run_in_child_context(func, step_name, config, sub)

    def _run_in_child_context(
        self, func: Callable[[Self], T], step_name: str | None, config: ChildConfig | None, sub_type: str
    ) -> T:
        is_virtual = config.is_virtual if config else False
        with self._operation(sub_type, step_name, OperationType.CONTEXT, is_virtual=is_virtual) as ident:
            oid = ident.operation_id
            return self.run_child_operation(
                lambda: func(self.create_child_context(oid, is_virtual=is_virtual)),
                ident,
                config or ChildConfig(),
                is_virtual=is_virtual,
            )

    def run_child_operation(
        self,
        func: Callable[[], T],
        ident: OperationIdentifier,
        config: ChildConfig,
        *,
        is_virtual: bool = False,
        orphan_flag: threading.Event | None = None,
    ) -> T:
        """Run ``func()`` as the CONTEXT operation ``ident``: return its stored result on replay,
        checkpoint its START/SUCCEED/FAIL (not for a virtual context), raise its error as
        :class:`ChildContextError`. Engine API, shared by child contexts and map/parallel."""
        state = self.state
        oid = ident.operation_id
        op = state.get(oid)
        replay_children = bool(op and op_details(op, "ContextDetails").get("ReplayChildren"))
        if op is not None:
            if is_virtual:
                raise NonDeterministicExecutionError(
                    f"Non-deterministic child context at id={oid!r}: checkpoint contains a non-virtual "
                    "child context but current child context is virtual",
                    step_id=oid,
                )
            if op["Status"] == "SUCCEEDED" and not replay_children:
                result = op_details(op, "ContextDetails").get("Result")
                if result is None:
                    return None  # type: ignore[return-value]
                return deserialize(config.serdes, result, oid, state.durable_execution_arn)
            if op["Status"] == "FAILED":
                raise_op_error(op, "ContextDetails", ChildContextError)
        existed = op is not None
        if op is None and not is_virtual:
            self._checkpoint(ident, "START", orphan_flag)
        try:
            raw = state.wrap_user_function(func, ident, replay_children, None if existed else 1)()
            serialized = serialize(config.serdes, raw, oid, state.durable_execution_arn)
            value: T = (
                None  # type: ignore[assignment]
                if serialized is None
                else deserialize(config.serdes, serialized, oid, state.durable_execution_arn)
            )
            if is_virtual or replay_children:
                state.emit_child_context_end_hook(
                    ident, OperationStatus.SUCCEEDED, is_replayed=existed or replay_children
                )
                return value
            payload = serialized
            large = serialized is not None and len(serialized.encode("utf-8")) > CHECKPOINT_SIZE_LIMIT_BYTES
            if large:
                payload = config.summary_generator(raw) if config.summary_generator else ""
            self._checkpoint(ident, "SUCCEED", orphan_flag, payload=payload, options={"ReplayChildren": large})
            return value
        except (ExecutionError, StoreCheckpointError):
            raise
        except Exception as e:  # noqa: BLE001
            if isinstance(e, InvocationError) and e.is_retryable():
                raise
            err = ErrorObject.from_exception(e)
            if not is_virtual:
                self._checkpoint(ident, "FAIL", orphan_flag, error=err)
            else:
                state.emit_child_context_end_hook(ident, OperationStatus.FAILED, error=err, is_replayed=existed)
            err.raise_as_operation_error(ChildContextError)
        raise ExecutionError("unreachable")  # pragma: no cover
