"""The state every durable operation works on: ids, replay status, checkpoint writes.

:class:`ContextCore` is the base of :class:`~lambdarun_durable.context.DurableContext`;
each operation kind adds its methods from its own module of this package (``step``,
``wait``, ``callback``, ``invoke``, ``child``, ``batch``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

from lambdarun_durable.exceptions import (
    CheckpointPayloadTooLargeError,
    DurableOperationError,
    NonDeterministicExecutionError,
)
from lambdarun_durable.identifier import OperationIdentifier, OperationIdNamespace
from lambdarun_durable.lambda_service import ErrorObject, OperationType
from lambdarun_durable.logger import Logger, default_logger
from lambdarun_durable.serdes import PassThroughSerDes, SerDes
from lambdarun_durable.state import CHECKPOINT_SIZE_LIMIT_BYTES, ExecutionState, is_terminal

PASS_THROUGH_SERDES: SerDes[Any] = PassThroughSerDes()


class ReplayFlag:
    """A context's replay status, shared with its loggers.

    The loggers hold this flag, not the context: a logger holding ``ctx.is_replaying`` (a bound
    method) would make context -> logger -> context a reference cycle, which keeps the whole
    execution state (every operation of the invocation) alive until the cyclic garbage collector
    runs, so each invocation leaves its history behind for a later one's full collection.
    """

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __call__(self) -> bool:
        return self.value


@dataclass(frozen=True)
class ExecutionContext:
    durable_execution_arn: str


def op_details(op: dict[str, Any], key: str) -> dict[str, Any]:
    """``op[key]`` (``StepDetails``, ``CallbackDetails``, ...), ``{}`` when absent."""
    return op.get(key) or {}


def raise_op_error(op: dict[str, Any], key: str, cls: type[DurableOperationError]) -> None:
    """Raise the error recorded in ``op[key]`` as ``cls`` (or the SDK type it names)."""
    err = op_details(op, key).get("Error")
    ErrorObject.from_dict(err or {}).raise_as_operation_error(cls)


def check_size(serialized: str | None, what: str) -> None:
    """Refuse a serialized payload over the checkpoint limit (256 KiB), naming ``what``."""
    if serialized is not None and len(serialized.encode("utf-8")) > CHECKPOINT_SIZE_LIMIT_BYTES:
        raise CheckpointPayloadTooLargeError(
            f"{what} is {len(serialized.encode('utf-8'))} bytes serialized; the durable checkpoint "
            f"limit is {CHECKPOINT_SIZE_LIMIT_BYTES} bytes (256 KiB). Return a smaller value, e.g. "
            "store the data in S3 and return its key."
        )


class ContextCore:
    """Operation ids, replay status and checkpoint writes of one (child) context."""

    def __init__(
        self,
        state: ExecutionState,
        execution_context: ExecutionContext,
        lambda_context: Any = None,
        parent_id: str | None = None,
        logger: Logger | None = None,
        step_id_prefix: str | None = None,
        replaying: bool = False,
        orphan_flag: threading.Event | None = None,
    ) -> None:
        self.state = state
        self.execution_context = execution_context
        self.lambda_context = lambda_context
        self._parent_id = parent_id
        self._step_id_prefix = step_id_prefix if step_id_prefix is not None else parent_id
        self._namespace = OperationIdNamespace(self._step_id_prefix)
        self._counter = 0
        self._counter_lock = threading.Lock()
        self._replay = ReplayFlag(replaying)
        self._orphan_flag = orphan_flag
        base = logger or Logger(default_logger(), {"durableExecutionArn": state.durable_execution_arn}, lambda: False)
        self.logger: Logger = base.with_is_replaying(self._replay)

    def create_child_context(
        self, operation_id: str, *, is_virtual: bool = False, orphan_flag: threading.Event | None = None
    ) -> Self:
        """A context for the operations of child operation ``operation_id`` (virtual: same parent)."""
        child_parent = self._parent_id if is_virtual else operation_id
        return type(self)(
            state=self.state,
            execution_context=self.execution_context,
            lambda_context=self.lambda_context,
            parent_id=child_parent,
            step_id_prefix=operation_id,
            replaying=self.is_replaying(),
            logger=self.logger.with_extra(parentId=child_parent),
            orphan_flag=orphan_flag or self._orphan_flag,
        )

    @property
    def parent_id(self) -> str | None:
        """Id of the operation this context's operations belong to (None at the top)."""
        return self._parent_id

    @property
    def is_virtual(self) -> bool:
        return self._parent_id != self._step_id_prefix

    def set_logger(self, new_logger: Any) -> None:
        self.logger = Logger(new_logger, {"durableExecutionArn": self.state.durable_execution_arn}, self._replay)

    @staticmethod
    def _resolve_step_name(name: str | None, func: Callable) -> str | None:
        return name or getattr(func, "_original_name", None)

    # -- replay status
    def is_replaying(self) -> bool:
        """True while this context re-executes operations already in the checkpoint."""
        return self._replay.value

    def stop_replaying(self) -> None:
        """From here on this context runs new operations (its logger speaks again)."""
        self._replay.value = False

    @property
    def _replaying(self) -> bool:
        return self._replay.value

    @_replaying.setter
    def _replaying(self, value: bool) -> None:
        self._replay.value = value

    def _next_id(self) -> str:
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        return self._namespace.create_id_for_step(n)

    def _peek_next_id(self) -> str:
        return self._namespace.create_id_for_step(self._counter + 1)

    @contextmanager
    def _operation(
        self, sub_type: str, name: str | None, op_type: OperationType, *, is_virtual: bool = False
    ) -> Iterator[OperationIdentifier]:
        ident = OperationIdentifier(
            operation_id=self._next_id(),
            sub_type=sub_type,
            parent_id=self._parent_id,
            name=name,
            operation_type=op_type,
        )
        was = self._replaying
        op = self.state.get(ident.operation_id)
        if op is not None:
            ident.validate_checkpoint(op)
            if is_virtual:
                raise NonDeterministicExecutionError(
                    f"Non-deterministic child context at id={ident.operation_id!r}: checkpoint contains a "
                    "non-virtual child context but current child context is virtual",
                    step_id=ident.operation_id,
                )
        if was and op is not None:
            self.state.emit_replay_or_update_hook(op)
        terminal = is_terminal(op)
        is_step = op is not None and op["Type"] == "STEP"
        flip_after = was and op is not None and not terminal and not is_step
        if was and (op is None or (is_step and not terminal)):
            self._replaying = False
        try:
            yield ident
        finally:
            if flip_after:
                self._replaying = False
            elif self._replaying and self.state.get(self._peek_next_id()) is None:
                self._replaying = False

    def _checkpoint(
        self, ident: OperationIdentifier, action: str, orphan_flag: threading.Event | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.state.checkpoint(
            op_id=ident.operation_id,
            op_type=ident.operation_type.value,
            action=action,
            parent_id=ident.parent_id,
            name=ident.name,
            sub_type=ident.sub_type,
            orphan_flag=orphan_flag or self._orphan_flag,
            **kw,
        )
