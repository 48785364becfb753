"""DurableContext and the durable operations (AWS SDK names, lambdarun's own engine)."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from lambdarun.errors import CheckpointError as StoreCheckpointError

from lambdarun_durable.concurrency.models import (
    BatchItem,
    BatchResult,
    CompletionPolicy,
    Executable,
)
from lambdarun_durable.completion import BatchItemStatus, CompletionItemStatus
from lambdarun_durable.operation_config import (
    CallbackConfig,
    ChildConfig,
    Duration,
    InvokeConfig,
    MapConfig,
    NestingType,
    ParallelBranch,
    ParallelConfig,
    StepConfig,
    StepSemantics,
    WaitForCallbackConfig,
)
from lambdarun_durable.exceptions import (
    CallbackError,
    CallbackExternalError,
    CallbackSubmitterError,
    CallbackTimeoutError,
    CheckpointPayloadTooLargeError,
    ChildContextError,
    DurableOperationError,
    ExecutionError,
    InvocationError,
    InvokeError,
    NonDeterministicExecutionError,
    OrphanedChildException,
    RetryableSerDesError,
    SerDesError,
    StepError,
    StepInterruptedError,
    SuspendExecution,
    TimedSuspendExecution,
    ValidationError,
    WaitForConditionError,
)
from lambdarun_durable.identifier import OperationIdentifier, OperationIdNamespace
from lambdarun_durable.lambda_service import ErrorObject, OperationSubType, OperationType
from lambdarun_durable.logger import Logger, default_logger
from lambdarun_durable.retries import RetryPresets
from lambdarun_durable.serdes import (
    DEFAULT_JSON_SERDES,
    PassThroughSerDes,
    SerDes,
    deserialize,
    serialize,
)
from lambdarun_durable.state import CHECKPOINT_SIZE_LIMIT_BYTES, ExecutionState, is_terminal
from lambdarun_durable.types import (
    StepContext,
    WaitForCallbackContext,
    WaitForConditionCheckContext,
)
from lambdarun_durable.waits import WaitForConditionConfig

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")
Params = ParamSpec("Params")

logger = logging.getLogger(__name__)

PASS_THROUGH_SERDES: SerDes[Any] = PassThroughSerDes()

_BATCH_THREADS = 16


class _ReplayFlag:
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


# --- decorators -----------------------------------------------------------------------


def durable_step(
    func: Callable[Concatenate[StepContext, Params], T],
) -> Callable[Params, Callable[[StepContext], T]]:
    """``@durable_step def f(step_ctx, a, b)`` -> ``context.step(f(a, b))`` (named ``f``)."""

    def wrapper(*args: Any, **kwargs: Any) -> Callable[[StepContext], T]:
        def function_with_arguments(context: StepContext) -> T:
            return func(context, *args, **kwargs)

        function_with_arguments._original_name = func.__name__  # type: ignore[attr-defined]
        return function_with_arguments

    return wrapper


def durable_with_child_context(
    func: Callable[Concatenate[DurableContext, Params], T],
) -> Callable[Params, Callable[[DurableContext], T]]:
    """``@durable_with_child_context def f(ctx, a)`` -> ``context.run_in_child_context(f(a))``."""

    def wrapper(*args: Any, **kwargs: Any) -> Callable[[DurableContext], T]:
        def function_with_arguments(child_context: DurableContext) -> T:
            return func(child_context, *args, **kwargs)

        function_with_arguments._original_name = func.__name__  # type: ignore[attr-defined]
        return function_with_arguments

    return wrapper


def durable_parallel_branch(name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., ParallelBranch[T]]]:
    def decorator(func: Callable[..., T]) -> Callable[..., ParallelBranch[T]]:
        def wrapper(*args: Any, **kwargs: Any) -> ParallelBranch[T]:
            def function_with_arguments(ctx: DurableContext) -> T:
                return func(ctx, *args, **kwargs)

            return ParallelBranch(func=function_with_arguments, name=name)

        return wrapper

    return decorator


def durable_wait_for_callback(
    func: Callable[Concatenate[str, WaitForCallbackContext, Params], T],
) -> Callable[Params, Callable[[str, WaitForCallbackContext], T]]:
    """Bind extra arguments to a wait_for_callback submitter ``f(callback_id, ctx, ...)``."""

    def wrapper(*args: Any, **kwargs: Any) -> Callable[[str, WaitForCallbackContext], T]:
        def submitter_with_arguments(callback_id: str, context: WaitForCallbackContext) -> T:
            return func(callback_id, context, *args, **kwargs)

        submitter_with_arguments._original_name = func.__name__  # type: ignore[attr-defined]
        return submitter_with_arguments

    return wrapper


# --- helpers ----------------------------------------------------------------------------


def _details(op: dict[str, Any], key: str) -> dict[str, Any]:
    return op.get(key) or {}


def _raise_op_error(op: dict[str, Any], key: str, cls: type[DurableOperationError]) -> None:
    err = _details(op, key).get("Error")
    ErrorObject.from_dict(err or {}).raise_as_operation_error(cls)


def _check_size(serialized: str | None, what: str) -> None:
    if serialized is not None and len(serialized.encode("utf-8")) > CHECKPOINT_SIZE_LIMIT_BYTES:
        raise CheckpointPayloadTooLargeError(
            f"{what} is {len(serialized.encode('utf-8'))} bytes serialized; the durable checkpoint "
            f"limit is {CHECKPOINT_SIZE_LIMIT_BYTES} bytes (256 KiB). Return a smaller value, e.g. "
            "store the data in S3 and return its key."
        )


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
        details = _details(op, "CallbackDetails")
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


# --- the context ------------------------------------------------------------------------------


class DurableContext:
    """The object a durable handler receives; every method is a checkpointed operation."""

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
        self._replay = _ReplayFlag(replaying)
        self._orphan_flag = orphan_flag
        base = logger or Logger(default_logger(), {"durableExecutionArn": state.durable_execution_arn}, lambda: False)
        self.logger: Logger = base.with_is_replaying(self._replay)

    # -- factories
    @staticmethod
    def from_lambda_context(state: ExecutionState, lambda_context: Any, replaying: bool = False) -> DurableContext:
        return DurableContext(
            state=state,
            execution_context=ExecutionContext(durable_execution_arn=state.durable_execution_arn),
            lambda_context=lambda_context,
            replaying=replaying,
        )

    def create_child_context(
        self, operation_id: str, *, is_virtual: bool = False, orphan_flag: threading.Event | None = None
    ) -> DurableContext:
        child_parent = self._parent_id if is_virtual else operation_id
        return DurableContext(
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

    # ================================================================================
    # step
    # ================================================================================

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
                result = _details(op, "StepDetails").get("Result")
                if result is None:
                    return None  # type: ignore[return-value]
                return deserialize(config.serdes, result, oid, state.durable_execution_arn)
            if status == "FAILED":
                _raise_op_error(op, "StepDetails", StepError)
            if status == "PENDING":
                ts = _details(op, "StepDetails").get("NextAttemptTimestamp") or state.now_ms()
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
        attempt = _details(op, "StepDetails").get("Attempt", 0) + 1
        step_ctx = StepContext(logger=self.logger.with_extra(operationId=oid, operationName=ident.name, attempt=attempt), attempt=attempt)
        try:
            raw = func(step_ctx)
            serialized = serialize(config.serdes, raw, oid, state.durable_execution_arn)
            _check_size(serialized, f"Result of step {ident.name or oid!r}")
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
        attempts_before = _details(op, "StepDetails").get("Attempt", 0) if op else 0
        decision = strategy(error, attempts_before + 1)
        if decision.should_retry:
            delay = max(1, decision.delay_seconds)
            self._checkpoint(ident, "RETRY", error=err, options={"NextAttemptDelaySeconds": delay})
            raise TimedSuspendExecution(
                f"Retry scheduled for {ident.operation_id} in {delay} seconds", self.state.now() + delay
            )
        self._checkpoint(ident, "FAIL", error=err)
        err.raise_as_operation_error(StepError)

    # ================================================================================
    # wait
    # ================================================================================

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
            end = _details(op, "WaitDetails").get("ScheduledEndTimestamp") or self.state.now_ms()
            raise TimedSuspendExecution(f"Wait for {seconds} seconds", end / 1000)

    # ================================================================================
    # callbacks
    # ================================================================================

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
            callback_id = _details(op, "CallbackDetails").get("CallbackId")
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

        def wait_in_child_context(context: DurableContext) -> Any:
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

    # ================================================================================
    # invoke
    # ================================================================================

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
                    result = _details(op, "ChainedInvokeDetails").get("Result")
                    if result is None:
                        return None  # type: ignore[return-value]
                    return deserialize(
                        config.serdes_result or DEFAULT_JSON_SERDES, result, oid, self.state.durable_execution_arn
                    )
                if status in ("FAILED", "TIMED_OUT", "STOPPED"):
                    _raise_op_error(op, "ChainedInvokeDetails", InvokeError)
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

    # ================================================================================
    # child contexts
    # ================================================================================

    def run_in_child_context(
        self, func: Callable[[DurableContext], T], name: str | None = None, config: ChildConfig | None = None
    ) -> T:
        """Run ``func(child_context)``; its operations are grouped under one CONTEXT operation."""
        step_name = self._resolve_step_name(name, func)
        sub = (config.sub_type if config else None) or OperationSubType.RUN_IN_CHILD_CONTEXT.value
        return self._run_in_child_context(func, step_name, config, sub)

    def _run_in_child_context(
        self, func: Callable[[DurableContext], T], step_name: str | None, config: ChildConfig | None, sub_type: str
    ) -> T:
        is_virtual = config.is_virtual if config else False
        with self._operation(sub_type, step_name, OperationType.CONTEXT, is_virtual=is_virtual) as ident:
            oid = ident.operation_id
            return self._child_handler(
                lambda: func(self.create_child_context(oid, is_virtual=is_virtual)),
                ident,
                config or ChildConfig(),
                is_virtual=is_virtual,
            )

    def _child_handler(
        self,
        func: Callable[[], T],
        ident: OperationIdentifier,
        config: ChildConfig,
        *,
        is_virtual: bool = False,
        orphan_flag: threading.Event | None = None,
    ) -> T:
        state = self.state
        oid = ident.operation_id
        op = state.get(oid)
        replay_children = bool(op and _details(op, "ContextDetails").get("ReplayChildren"))
        if op is not None:
            if is_virtual:
                raise NonDeterministicExecutionError(
                    f"Non-deterministic child context at id={oid!r}: checkpoint contains a non-virtual "
                    "child context but current child context is virtual",
                    step_id=oid,
                )
            if op["Status"] == "SUCCEEDED" and not replay_children:
                result = _details(op, "ContextDetails").get("Result")
                if result is None:
                    return None  # type: ignore[return-value]
                return deserialize(config.serdes, result, oid, state.durable_execution_arn)
            if op["Status"] == "FAILED":
                _raise_op_error(op, "ContextDetails", ChildContextError)
        if op is None and not is_virtual:
            self._checkpoint(ident, "START", orphan_flag)
        try:
            raw = func()
            serialized = serialize(config.serdes, raw, oid, state.durable_execution_arn)
            value: T = (
                None  # type: ignore[assignment]
                if serialized is None
                else deserialize(config.serdes, serialized, oid, state.durable_execution_arn)
            )
            if is_virtual or replay_children:
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
            err.raise_as_operation_error(ChildContextError)
        raise ExecutionError("unreachable")  # pragma: no cover

    # ================================================================================
    # map / parallel
    # ================================================================================

    def map(
        self,
        inputs: Sequence[U],
        func: Callable[[DurableContext, U, int, Sequence[U]], T],
        name: str | None = None,
        config: MapConfig | None = None,
    ) -> BatchResult[T]:
        """Run ``func(ctx, item, index, items)`` for every item, each in its own child context."""
        map_name = self._resolve_step_name(name, func)
        if config is not None:
            config.completion_config._validate_for_total(len(inputs))
        cfg = config or MapConfig()
        items = list(inputs)

        def bind(i: int, item: U) -> Callable[[DurableContext], T]:
            return lambda child: func(child, item, i, inputs)

        executables = [
            Executable(index=i, func=bind(i, item), name=cfg.item_namer(item, i) if cfg.item_namer else None)
            for i, item in enumerate(items)
        ]
        return self._batch(
            executables,
            name=map_name,
            sub_type=OperationSubType.MAP.value,
            iteration_sub_type=OperationSubType.MAP_ITERATION.value,
            name_prefix="map-item-",
            max_concurrency=cfg.max_concurrency,
            completion_config=cfg.completion_config,
            serdes=cfg.serdes,
            item_serdes=cfg.item_serdes,
            nesting=cfg.nesting_type,
            summary=cfg.summary_generator,
            result_type="MapResult",
        )

    def parallel(
        self,
        functions: Sequence[Callable[[DurableContext], T] | ParallelBranch[T]],
        name: str | None = None,
        config: ParallelConfig | None = None,
    ) -> BatchResult[T]:
        """Run each function in its own child context, concurrently."""
        if config is not None:
            config.completion_config._validate_for_total(len(functions))
        cfg = config or ParallelConfig()
        executables = [
            Executable(index=i, func=f, name=f.name if isinstance(f, ParallelBranch) else None)
            for i, f in enumerate(functions)
        ]
        return self._batch(
            executables,
            name=name,
            sub_type=OperationSubType.PARALLEL.value,
            iteration_sub_type=OperationSubType.PARALLEL_BRANCH.value,
            name_prefix="parallel-branch-",
            max_concurrency=cfg.max_concurrency,
            completion_config=cfg.completion_config,
            serdes=cfg.serdes,
            item_serdes=cfg.item_serdes,
            nesting=cfg.nesting_type,
            summary=cfg.summary_generator,
            result_type="ParallelResult",
        )

    def _batch(
        self,
        executables: list[Executable],
        *,
        name: str | None,
        sub_type: str,
        iteration_sub_type: str,
        name_prefix: str,
        max_concurrency: int | None,
        completion_config: Any,
        serdes: SerDes | None,
        item_serdes: SerDes | None,
        nesting: NestingType,
        summary: Callable[[Any], str] | None,
        result_type: str,
    ) -> BatchResult:
        with self._operation(sub_type, name, OperationType.CONTEXT) as ident:
            batch_ctx = self.create_child_context(ident.operation_id)
            runner = _BatchRunner(
                ctx=batch_ctx,
                batch_id=ident.operation_id,
                executables=executables,
                iteration_sub_type=iteration_sub_type,
                name_prefix=name_prefix,
                max_concurrency=max_concurrency,
                policy=CompletionPolicy.from_config(len(executables), completion_config),
                item_serdes=item_serdes or serdes,
                nesting=nesting,
            )

            def summary_generator(result: BatchResult) -> str:
                import json

                fields: dict[str, Any] = {
                    "type": result_type,
                    "totalCount": result.total_count,
                    "completionReason": result.completion_reason.value,
                    "startedCount": result.started_count,
                    "successCount": result.success_count,
                    "failureCount": result.failure_count,
                    "status": result.status.value,
                }
                if summary is not None:
                    fields["summary"] = str(summary(result))
                return json.dumps(fields)

            return self._child_handler(runner.run, ident, ChildConfig(serdes=serdes, summary_generator=summary_generator))

    # ================================================================================
    # wait_for_condition
    # ================================================================================

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
                    result = _details(op, "StepDetails").get("Result")
                    return None if result is None else deserialize(config.serdes, result, oid, arn)  # type: ignore[return-value]
                if status == "FAILED":
                    _raise_op_error(op, "StepDetails", WaitForConditionError)
                if status == "PENDING":
                    ts = _details(op, "StepDetails").get("NextAttemptTimestamp") or state.now_ms()
                    raise TimedSuspendExecution(f"wait_for_condition {ident.name or oid} scheduled", ts / 1000)
            prior = _details(op, "StepDetails").get("Result") if op else None
            if op is None or op["Status"] == "READY":
                op = self._checkpoint(ident, "START")
            try:
                if prior is not None:
                    current = deserialize(config.serdes, prior, oid, arn)
                else:
                    current = deserialize(config.serdes, serialize(config.serdes, config.initial_state, oid, arn), oid, arn)
                attempt = _details(op, "StepDetails").get("Attempt", 0) + 1
                check_ctx = WaitForConditionCheckContext(
                    logger=self.logger.with_extra(operationId=oid, attempt=attempt), attempt=attempt
                )
                new_state = check(current, check_ctx)
                serialized = serialize(config.serdes, new_state, oid, arn)
                _check_size(serialized, f"State of wait_for_condition {ident.name or oid!r}")
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


# --- map/parallel coordinator ---------------------------------------------------------------


class _BatchRunner:
    """Runs branches in index order on a thread pool, honouring max_concurrency and completion.

    A suspended branch keeps its concurrency slot; when nothing can run, the batch (and
    the invocation) suspends with the earliest resume time of its branches.
    """

    def __init__(
        self,
        *,
        ctx: DurableContext,
        batch_id: str,
        executables: list[Executable],
        iteration_sub_type: str,
        name_prefix: str,
        max_concurrency: int | None,
        policy: CompletionPolicy,
        item_serdes: SerDes | None,
        nesting: NestingType,
    ) -> None:
        self.ctx = ctx
        self.namespace = OperationIdNamespace(batch_id)
        self.executables = executables
        self.iteration_sub_type = iteration_sub_type
        self.name_prefix = name_prefix
        self.max_concurrency = max_concurrency
        self.policy = policy
        self.item_serdes = item_serdes
        self.nesting = nesting
        self.orphan = threading.Event()

    def _name(self, exe: Executable) -> str:
        return exe.name if exe.name is not None else f"{self.name_prefix}{exe.index}"

    def _run_one(self, exe: Executable) -> Any:
        ctx = self.ctx
        ident = OperationIdentifier(
            operation_id=self.namespace.create_id_for_step(exe.index),
            sub_type=self.iteration_sub_type,
            parent_id=ctx._parent_id,
            name=self._name(exe),
            operation_type=OperationType.CONTEXT,
        )
        virtual = self.nesting is NestingType.FLAT
        child = ctx.create_child_context(ident.operation_id, is_virtual=virtual, orphan_flag=self.orphan)
        op = ctx.state.get(ident.operation_id)
        if op is not None:
            ident.validate_checkpoint(op)
        elif child.is_replaying():
            child._replaying = False
        return ctx._child_handler(
            lambda: exe.func(child),
            ident,
            ChildConfig(serdes=self.item_serdes, sub_type=self.iteration_sub_type),
            is_virtual=virtual,
            orphan_flag=self.orphan,
        )

    def run(self) -> BatchResult:
        n = len(self.executables)
        if n == 0:
            return BatchResult([], self.policy.reason(0, 0))
        max_in_flight = self.max_concurrency or n
        status: list[str] = ["PENDING"] * n  # PENDING RUNNING DONE FAILED SUSPENDED
        results: list[Any] = [None] * n
        errors: list[ErrorObject | None] = [None] * n
        resume: list[float | None] = [None] * n
        events: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        pending = deque(range(n))
        in_flight = running = succeeded = failed = 0
        fatal: BaseException | None = None
        retryable: BaseException | None = None

        def worker(i: int) -> None:
            try:
                events.put((i, "DONE", self._run_one(self.executables[i])))
            except TimedSuspendExecution as e:
                events.put((i, "SUSPENDED", e.scheduled_timestamp))
            except SuspendExecution:
                events.put((i, "SUSPENDED", None))
            except OrphanedChildException:
                events.put((i, "ORPHANED", None))
            except (ExecutionError, StoreCheckpointError) as e:
                events.put((i, "FATAL", e))
            except Exception as e:  # noqa: BLE001
                events.put((i, "FAILED", e))
            except BaseException as e:  # noqa: BLE001
                events.put((i, "FATAL", e))

        def snapshot() -> tuple[CompletionItemStatus, ...]:
            if self.policy.should_complete is None:
                return ()
            mapping = {"DONE": BatchItemStatus.SUCCEEDED, "FAILED": BatchItemStatus.FAILED, "PENDING": None}
            return tuple(
                CompletionItemStatus(index=i, name=self.executables[i].name, status=mapping.get(s, BatchItemStatus.STARTED))
                for i, s in enumerate(status)
            )

        threads = min(max_in_flight, _BATCH_THREADS)
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="durable-batch")
        decision = None
        try:
            while True:
                items = snapshot()
                decision = self.policy.evaluate(succeeded, failed, items)
                if self.policy.is_complete(succeeded, failed, items, decision) or not self.policy.should_continue(failed):
                    break
                while pending and in_flight < max_in_flight and self.policy.should_continue(failed):
                    i = pending.popleft()
                    status[i] = "RUNNING"
                    in_flight += 1
                    running += 1
                    pool.submit(worker, i)
                if running == 0:
                    if retryable is not None:
                        raise retryable
                    times = [t for t in resume if t is not None]
                    if times:
                        raise TimedSuspendExecution("All concurrent work complete or suspended pending retry.", min(times))
                    raise SuspendExecution("All concurrent work complete or suspended and pending external callback.")
                i, kind, payload = events.get()
                running -= 1
                if kind == "DONE":
                    status[i], results[i] = "DONE", payload
                    succeeded += 1
                    in_flight -= 1
                elif kind == "FAILED":
                    status[i] = "FAILED"
                    errors[i] = _branch_error(payload)
                    failed += 1
                    in_flight -= 1
                    if isinstance(payload, InvocationError) and payload.is_retryable():
                        retryable = payload
                elif kind == "SUSPENDED":
                    status[i], resume[i] = "SUSPENDED", payload
                elif kind == "FATAL":
                    fatal = payload
                    break
                else:  # ORPHANED
                    pass
        finally:
            self.orphan.set()
            pool.shutdown(wait=False, cancel_futures=True)
        if fatal is not None:
            raise fatal
        reason = self.policy.reason(succeeded, failed, snapshot(), decision)
        all_items: list[BatchItem] = []
        for i, s in enumerate(status):
            if s == "PENDING":
                continue
            if s == "DONE":
                all_items.append(BatchItem(i, BatchItemStatus.SUCCEEDED, results[i], None))
            elif s == "FAILED":
                all_items.append(BatchItem(i, BatchItemStatus.FAILED, None, errors[i]))
            else:
                all_items.append(BatchItem(i, BatchItemStatus.STARTED, None, None))
        return BatchResult(all_items, reason)


def _branch_error(err: Exception) -> ErrorObject:
    if isinstance(err, DurableOperationError):
        return ErrorObject(message=err.message, type=err.error_type, data=err.data, stack_trace=err.stack_trace)
    return ErrorObject.from_exception(err)
