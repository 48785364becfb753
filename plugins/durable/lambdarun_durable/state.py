"""The state of one invocation: the operations it replays and the batched checkpoint writer.

Records and their folding are in :mod:`lambdarun_durable.records` (re-exported here).

Durability point
----------------
As in AWS's SDK (``create_checkpoint(is_sync=True)`` is its default), every operation's
outcome is committed before the operation returns to user code: a step's SUCCEED/FAIL/RETRY,
a wait's or callback's START, a chained invoke's START, a child context's end. Only the
START of an at-least-once step or of a child context is buffered (the SDK's
``is_sync=False``); it is written in the same append as the outcome that follows it, so
a 1,000-step execution makes 1,000 appends (one SQLite transaction / one DynamoDB
TransactWriteItems each). Whether an append survives power loss is the store's rule (the
SQLite store's ``synchronous`` setting: FULL fsyncs each commit; NORMAL survives a killed
process but not power loss).

``batching=True`` (``[durable] checkpoint_batching``, the test runner's
``checkpoint_batching=True``) is the explicit opt-in to batching: records are buffered and
written with ONE append when any of these happens:

* an at-most-once step is about to run its body (its START must be durable first);
* a callback is created, a chained invoke is started (other parties act on them);
* the invocation suspends, succeeds or fails (before the response is returned);
* the buffer reaches ``max_batch_records`` (default 1000) records or ~``max_batch_bytes``
  (2 MB, under DynamoDB's 4 MB transaction limit), or its oldest record is older than
  ``max_batch_age`` seconds (default 1.0; a timer thread enforces it while user code runs).

So in batched mode a step result returned to user code may not be durable yet; if the
invocation dies before the next flush, those steps run again on the next invocation, which
is the at-least-once contract. In both modes nothing the invocation *reports*
(PENDING/SUCCEEDED/FAILED) and no at-most-once step body ever runs ahead of its
persisted checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from lambdarun.errors import CheckpointConflictError

from lambdarun_durable.exceptions import CheckpointError, OrphanedChildException, SuspendExecution
from lambdarun_durable.instrumentation import PluginExecutor, UserFunctionOutcome
from lambdarun_durable.lambda_service import (
    TERMINAL_STATUSES,
    ErrorObject,
    OperationAction,
    OperationStatus,
    OperationType,
)
from lambdarun_durable.plugin_views import Operation, OperationUpdate, OperationViews
from lambdarun_durable.records import (  # noqa: F401 - re-exported: their former home
    CHECKPOINT_SIZE_LIMIT_BYTES,
    Op,
    Record,
    STATE_RESULT_LIMIT,
    build_state,
    decode_callback_id,
    decode_token,
    encode_callback_id,
    encode_token,
    event_for,
    fold,
    is_terminal,
    make_arn,
    make_record,
    now_ms_real,
    parse_arn,
    public_op,
    transition,
)

log = structlog.get_logger(__name__)


# --- execution state (one invocation) -----------------------------------------------------


class ExecutionState:
    """Operations of one execution as seen by one invocation, plus its write buffer."""

    def __init__(
        self,
        *,
        durable_execution_arn: str,
        store: Any,
        version: int,
        operations: dict[str, Op],
        invocation_id: str,
        clock: Callable[[], float] = time.time,
        max_batch_records: int = 1000,
        max_batch_age: float = 1.0,
        max_batch_bytes: int = 2_000_000,
        batching: bool = False,
        plugin_executor: PluginExecutor | None = None,
        updated_operation_ids: Sequence[str] = (),
    ) -> None:
        self.durable_execution_arn = durable_execution_arn
        self.store = store
        self.version = version
        self.operations = operations
        self.invocation_id = invocation_id
        self._clock = clock
        self.max_batch_records = max_batch_records
        self.max_batch_age = max_batch_age
        self.max_batch_bytes = max_batch_bytes  # DynamoDB transactions carry at most 4 MB
        #: False (default): commit each operation's outcome before it returns (AWS's SDK);
        #: True: buffer records until a batch limit or a durability point (module docstring)
        self.batching = batching
        self._buffer_bytes = 0
        self._buffer: list[Record] = []
        self._buffer_since: float | None = None
        self._lock = threading.RLock()
        self.flushes = 0
        self._has_prior = any(op["Type"] != "EXECUTION" for op in operations.values())
        #: this invocation's instrumentation plugins (AWS's ``durable_execution(plugins=...)``)
        self.plugin_executor = plugin_executor if plugin_executor is not None else PluginExecutor(None)
        self._plugins = self.plugin_executor.has_plugins
        self._updated_operation_ids = frozenset(updated_operation_ids)
        self._replayed_operation_hooks: set[str] = set()
        self._views = OperationViews()

    # -- reading
    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def now(self) -> float:
        return self._clock()

    def get(self, op_id: str) -> Op | None:
        return self.operations.get(op_id)

    def has_prior_operations(self) -> bool:
        return self._has_prior

    def execution_operation(self) -> Op | None:
        for op in self.operations.values():
            if op["Type"] == "EXECUTION":
                return op
        return None

    # -- writing
    def checkpoint(
        self,
        *,
        op_id: str,
        op_type: str,
        action: str,
        parent_id: str | None = None,
        name: str | None = None,
        sub_type: str | None = None,
        payload: str | None = None,
        error: ErrorObject | None = None,
        options: Mapping[str, Any] | None = None,
        sync: bool = False,
        orphan_flag: threading.Event | None = None,
    ) -> Op:
        """Apply an update locally, buffer its record, flush when ``sync`` or the batch is full."""
        if self._plugins and action == "START":
            if orphan_flag is not None and orphan_flag.is_set():
                raise OrphanedChildException("batch already completed", operation_id=op_id)
            before = self.operations.get(op_id)
            # before the START is checkpointed, as AWS's SDK (state.create_checkpoint)
            self.plugin_executor.on_operation_action(
                OperationUpdate(
                    operation_id=op_id,
                    operation_type=OperationType(op_type),
                    action=OperationAction.START,
                    parent_id=parent_id,
                    name=name,
                    sub_type=sub_type,
                ),
                previous_operation=Operation.from_wire(before) if before is not None else None,
            )
        with self._lock:
            if orphan_flag is not None and orphan_flag.is_set():
                raise OrphanedChildException("batch already completed", operation_id=op_id)
            now = self.now_ms()
            previous = self.operations.get(op_id)
            op, extra = transition(
                previous,
                op_id=op_id,
                op_type=op_type,
                action=action,
                now=now,
                parent_id=parent_id,
                name=name,
                sub_type=sub_type,
                payload=payload,
                error=error,
                options=options,
                arn=self.durable_execution_arn,
            )
            self.operations[op_id] = op
            self._buffer.append(make_record(op, extra, now, "i", self.invocation_id))
            self._buffer_bytes += 300 + len(payload or "")
            if self._buffer_since is None:
                self._buffer_since = time.monotonic()
            if (
                sync
                or (not self.batching and not _deferrable(op_type, action))
                or len(self._buffer) >= self.max_batch_records
                or self._buffer_bytes >= self.max_batch_bytes
                or time.monotonic() - self._buffer_since >= self.max_batch_age
            ):
                self.flush()
        if self._plugins:
            self._report_checkpointed(op, previous)
        return op

    # -- instrumentation plugins (the calls AWS's SDK makes from state.py/context.py/operation/)
    def operation_views(self) -> dict[str, Operation]:
        """The operations as AWS's ``Operation`` objects (for the plugins' snapshots)."""
        with self._lock:
            return self._views.operation_map(self.operations)

    def _report_checkpointed(self, op: Op, previous: Op | None) -> None:
        """The checkpoint's outcome: the end hook of a terminal operation, the change hook.

        AWS's SDK makes these calls when the checkpoint response arrives; here the update is
        applied when it is checkpointed (committed by default, buffered with batching)."""
        with self._lock:
            operations = self._views.operation_map(self.operations)
        previous_operations = dict(operations)
        if previous is None:
            previous_operations.pop(op["Id"], None)
        else:
            previous_operations[op["Id"]] = Operation.from_wire(previous)
        self.plugin_executor.on_operation_update(
            operations[op["Id"]], operations=operations, previous_operations=previous_operations
        )

    def emit_replay_or_update_hook(self, op: Op) -> None:
        """An operation a replaying context reaches: an update if the service changed it while
        the execution was suspended (``UpdatedOperationIds``), else replayed history (once)."""
        if not self._plugins or op["Type"] == "EXECUTION":
            return
        view = Operation.from_wire(op)
        if op["Id"] in self._updated_operation_ids:
            self.plugin_executor.on_operation_update(view)
            return
        if view.status is OperationStatus.READY:
            return
        with self._lock:
            if op["Id"] in self._replayed_operation_hooks:
                return
            self._replayed_operation_hooks.add(op["Id"])
        self.plugin_executor.on_operation_replay(view)

    def emit_child_context_end_hook(
        self, ident: Any, status: OperationStatus, *, error: ErrorObject | None = None, is_replayed: bool = False
    ) -> None:
        """A child context that completed without a checkpoint (virtual, or replaying children)."""
        if self._plugins:
            self.plugin_executor.on_child_context_end(ident, status, error=error, is_replayed=is_replayed)

    def wrap_user_function(
        self, user_function: Callable[..., Any], ident: Any, is_replay_children: bool = False, attempt: int | None = None
    ) -> Callable[..., Any]:
        """``user_function`` between the user-function start and end hooks (AWS's SDK)."""
        if not self._plugins:
            return user_function
        executor = self.plugin_executor

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start_info = executor.on_user_function_start(ident, is_replay_children, attempt)
            outcome = UserFunctionOutcome.INCOMPLETE
            error = None
            try:
                result = user_function(*args, **kwargs)
            except Exception as exception:
                outcome = UserFunctionOutcome.FAILED
                error = ErrorObject.from_exception(exception)
                raise
            else:
                outcome = UserFunctionOutcome.SUCCEEDED
                return result
            finally:
                executor.on_user_function_end(start_info, error, outcome=outcome)

        return wrapper

    def flush(self, extra_records: Sequence[Record] = (), state: Mapping[str, Any] | None = None) -> None:
        """Write the buffer (plus ``extra_records``) in one append; rebase over service writes."""
        with self._lock:
            records = self._buffer + list(extra_records)
            if not records and state is None:
                return
            for _ in range(20):
                for rec in records:
                    rec["V"] = self.version + 1
                try:
                    self.version = self.store.append(
                        self.durable_execution_arn, records, expected_version=self.version, state=state
                    )
                    break
                except SuspendExecution:
                    # the service withdrew the token (a pause): what it accepted is durable, the
                    # rest is abandoned (AWS's SDK); the invocation ends with PENDING
                    self._buffer = []
                    self._buffer_since = None
                    self._buffer_bytes = 0
                    raise
                except CheckpointConflictError:
                    if self._rebase():  # our write had landed (a request retried after a lost response)
                        log.info("durable.checkpoint.landed", arn=self.durable_execution_arn, version=self.version)
                        break
            else:  # pragma: no cover - pathological contention
                raise CheckpointError("checkpoint kept conflicting with service updates; retry the invocation")
            self._buffer = []
            self._buffer_since = None
            self._buffer_bytes = 0
            self.flushes += 1

    def _rebase(self) -> bool:
        """Someone wrote since we loaded. Accept service-side records; refuse other invocations.

        Returns True when the write that conflicted had in fact landed: a request whose
        response was lost (dropped connection) and that the client retried finds its own
        records at the version it wrote; they are not written twice.
        """
        cp = self.store.load(self.durable_execution_arn)
        mine = self.version + 1
        landed = any(
            rec.get("V") == mine and rec.get("S") == "i" and rec.get("I") == self.invocation_id for rec in cp.records
        )
        ours = {rec["Op"]["Id"] for rec in self._buffer if rec.get("Op")}
        stored_exec = next((op for op in fold(cp.records).values() if op["Type"] == "EXECUTION"), None)
        last_exec = next(
            (r for r in reversed(cp.records) if (r.get("Op") or {}).get("Type") == "EXECUTION"), None
        )
        closed_by_us = landed and last_exec is not None and last_exec.get("V") == mine and last_exec.get("I") == self.invocation_id
        if stored_exec is not None and stored_exec["Status"] in TERMINAL_STATUSES and not closed_by_us:
            self._buffer = []
            self.operations[stored_exec["Id"]] = stored_exec
            raise ExecutionClosed(f"execution {self.durable_execution_arn} is {stored_exec['Status']}")
        for rec in cp.records:
            if rec.get("V", 0) <= self.version:
                continue
            if landed and rec.get("V") == mine:
                continue  # our own landed write
            if rec.get("S") == "i" and rec.get("I") != self.invocation_id:
                raise CheckpointConflictError(
                    f"Execution {self.durable_execution_arn} was checkpointed by another invocation "
                    f"({rec.get('I')}) since this one loaded it; this invocation stops so the two never "
                    "merge silently. The orchestrator re-invokes from the stored state."
                )
            op = rec.get("Op")
            if op is not None and op["Id"] not in ours:
                self.operations[op["Id"]] = op
        self.version = cp.version
        if landed:
            return True
        exec_op = self.execution_operation()
        if exec_op is not None and exec_op["Status"] in TERMINAL_STATUSES:
            self._buffer = []
            raise ExecutionClosed(f"execution {self.durable_execution_arn} is {exec_op['Status']}")
        return False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def flush_if_stale(self) -> None:
        """Flush when the oldest buffered record is older than ``max_batch_age`` (timer thread)."""
        since = self._buffer_since
        if since is None or time.monotonic() - since < self.max_batch_age:
            return
        with self._lock:
            if self._buffer_since is not None and time.monotonic() - self._buffer_since >= self.max_batch_age:
                self.flush()

    def start_flusher(self) -> Callable[[], None]:
        """Bound the age of buffered records even while user code runs; returns the stopper."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.max_batch_age / 2):
                try:
                    self.flush_if_stale()
                except BaseException:  # noqa: BLE001 - the invocation's own next flush reports it
                    log.warning("durable.flusher.failed", arn=self.durable_execution_arn, exc_info=True)

        thread = threading.Thread(target=loop, name="durable-flusher", daemon=True)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join(timeout=5)

        return stopper


def _deferrable(op_type: str, action: str) -> bool:
    """Records AWS's SDK checkpoints with ``is_sync=False``: a step's or child context's START."""
    return action == "START" and op_type in ("STEP", "CONTEXT")


class ExecutionClosed(BaseException):  # noqa: N818
    """The execution was stopped or completed elsewhere while this invocation ran."""
