"""``context.map`` and ``context.parallel``: branches in child contexts, run concurrently.

:class:`BatchRunner` runs the branches on a thread pool, honouring ``max_concurrency`` and
the completion config; a suspended branch keeps its slot."""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Self, TypeVar

from lambdarun.errors import CheckpointError as StoreCheckpointError

from lambdarun_durable.completion import BatchItemStatus, CompletionItemStatus
from lambdarun_durable.concurrency.models import BatchItem, BatchResult, CompletionPolicy, Executable
from lambdarun_durable.exceptions import (
    DurableOperationError,
    ExecutionError,
    InvocationError,
    OrphanedChildException,
    SuspendExecution,
    TimedSuspendExecution,
)
from lambdarun_durable.identifier import OperationIdentifier, OperationIdNamespace
from lambdarun_durable.lambda_service import ErrorObject, OperationSubType, OperationType
from lambdarun_durable.operation_config import ChildConfig, MapConfig, NestingType, ParallelBranch, ParallelConfig
from lambdarun_durable.operations.child import ChildContextOperations
from lambdarun_durable.serdes import SerDes

T = TypeVar("T")
U = TypeVar("U")

_BATCH_THREADS = 16


class _BatchKind(NamedTuple):
    """What tells a map from a parallel in its checkpoints and its summary."""

    sub_type: str
    iteration_sub_type: str
    name_prefix: str
    result_type: str


_MAP = _BatchKind(OperationSubType.MAP.value, OperationSubType.MAP_ITERATION.value, "map-item-", "MapResult")
_PARALLEL = _BatchKind(
    OperationSubType.PARALLEL.value, OperationSubType.PARALLEL_BRANCH.value, "parallel-branch-", "ParallelResult"
)


class BatchOperations(ChildContextOperations):
    """``map``, ``parallel``."""

    def map(
        self,
        inputs: Sequence[U],
        func: Callable[[Self, U, int, Sequence[U]], T],
        name: str | None = None,
        config: MapConfig | None = None,
    ) -> BatchResult[T]:
        """Run ``func(ctx, item, index, items)`` for every item, each in its own child context."""
        map_name = self._resolve_step_name(name, func)
        if config is not None:
            config.completion_config.validate_for_total(len(inputs))
        cfg = config or MapConfig()
        items = list(inputs)

        def bind(i: int, item: U) -> Callable[[Self], T]:
            return lambda child: func(child, item, i, inputs)

        executables = [
            Executable(index=i, func=bind(i, item), name=cfg.item_namer(item, i) if cfg.item_namer else None)
            for i, item in enumerate(items)
        ]
        return self._batch(executables, cfg, _MAP, name=map_name)

    def parallel(
        self,
        functions: Sequence[Callable[[Self], T] | ParallelBranch[T]],
        name: str | None = None,
        config: ParallelConfig | None = None,
    ) -> BatchResult[T]:
        """Run each function in its own child context, concurrently."""
        if config is not None:
            config.completion_config.validate_for_total(len(functions))
        cfg = config or ParallelConfig()
        executables = [
            Executable(index=i, func=f, name=f.name if isinstance(f, ParallelBranch) else None)
            for i, f in enumerate(functions)
        ]
        return self._batch(executables, cfg, _PARALLEL, name=name)

    def _batch(
        self,
        executables: list[Executable],
        cfg: MapConfig | ParallelConfig,
        kind: _BatchKind,
        *,
        name: str | None,
    ) -> BatchResult:
        """Run ``executables`` as one batch of ``kind`` under ``cfg`` (the fields map and parallel share)."""
        sub_type, iteration_sub_type, name_prefix, result_type = kind
        serdes = cfg.serdes
        summary = cfg.summary_generator
        with self._operation(sub_type, name, OperationType.CONTEXT) as ident:
            batch_ctx = self.create_child_context(ident.operation_id)
            runner = BatchRunner(
                ctx=batch_ctx,
                batch_id=ident.operation_id,
                executables=executables,
                iteration_sub_type=iteration_sub_type,
                name_prefix=name_prefix,
                max_concurrency=cfg.max_concurrency,
                policy=CompletionPolicy.from_config(len(executables), cfg.completion_config),
                item_serdes=cfg.item_serdes or serdes,
                nesting=cfg.nesting_type,
            )

            def summary_generator(result: BatchResult) -> str:
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

            return self.run_child_operation(runner.run, ident, ChildConfig(serdes=serdes, summary_generator=summary_generator))


class BatchRunner:
    """Runs branches in index order on a thread pool, honouring max_concurrency and completion.

    A suspended branch keeps its concurrency slot; when nothing can run, the batch (and
    the invocation) suspends with the earliest resume time of its branches.
    """

    def __init__(
        self,
        *,
        ctx: ChildContextOperations,
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
            parent_id=ctx.parent_id,
            name=self._name(exe),
            operation_type=OperationType.CONTEXT,
        )
        virtual = self.nesting is NestingType.FLAT
        child = ctx.create_child_context(ident.operation_id, is_virtual=virtual, orphan_flag=self.orphan)
        op = ctx.state.get(ident.operation_id)
        if op is not None:
            ident.validate_checkpoint(op)
        elif child.is_replaying():
            child.stop_replaying()
        return ctx.run_child_operation(
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
