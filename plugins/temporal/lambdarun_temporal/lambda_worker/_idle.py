"""Knowing when the worker has nothing to do.

Two views, both needed before an invocation returns ``idle``:

* this process: the worker counts, with public temporalio extension points only, every
  workflow activation (a wrapping :class:`~temporalio.worker.WorkflowRunner`, whose
  instances' ``activate`` runs once per workflow task) and every activity execution (a
  worker :class:`~temporalio.worker.Interceptor`) in a :class:`TaskTracker`;
* the server (:class:`ServerView`): ``DescribeTaskQueue`` says whether this worker's pollers
  have reached the server (its identity is among the task queue's pollers, for every task
  type it polls) and how large the backlog is.

The idle clock starts only once the server has listed the worker's pollers (so a slow
connection, namespace validation or a first poll still in flight is never mistaken for an
empty queue), and the worker returns ``idle`` only when nothing ran for ``idle_timeout``
*and* a backlog report asked after that reads 0 for every polled task type.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import temporalio.worker
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)

from lambdarun_temporal.lambda_worker._defaults import module_logger

__all__ = ["ServerView", "TaskTracker", "TrackingInterceptor", "TrackingWorkflowRunner"]

logger = module_logger(__name__)

#: one DescribeTaskQueue call may take this long (it is a unary call, answered at once)
DESCRIBE_TIMEOUT = timedelta(seconds=5)


class TaskTracker:
    """Counts running tasks and remembers when the last one started or ended (thread-safe)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._last_change = clock()
        self._floor = clock()
        self.ready_at: float | None = None  # when reset_clock ran (the server saw the pollers)
        self.generation = 0  # bumped by every begin/end: "did anything happen since?"
        self.workflow_activations = 0
        self.activities = 0

    def begin(self, kind: str) -> None:
        with self._lock:
            self._running += 1
            self._last_change = self._clock()
            self.generation += 1
            if kind == "workflow":
                self.workflow_activations += 1
            else:
                self.activities += 1

    def end(self) -> None:
        with self._lock:
            self._running -= 1
            self._last_change = self._clock()
            self.generation += 1

    def reset_clock(self) -> None:
        """Start the idle clock now: idle time never counts from before this call (used
        once the server has confirmed the worker's pollers)."""
        with self._lock:
            self._floor = self._clock()
            self.ready_at = self._floor

    def idle_for(self) -> float:
        """Seconds since the last task started or ended (or the clock was reset, whichever
        is later); 0 while one is running."""
        with self._lock:
            if self._running:
                return 0.0
            return self._clock() - max(self._last_change, self._floor)


class ServerView:
    """What the Temporal server says about this worker's task queue (``DescribeTaskQueue``).

    :param types: the task types this worker polls (workflow when it has workflows,
        activity when it has activities).
    :param identity: the worker's identity, as its pollers send it; it must be unique to
        this invocation (the default ``<request id>@<function ARN>`` is).

    Each call returns None when the server could not answer (unreachable, timed out): the
    caller then must not conclude anything. A server that refuses the call itself
    (``PERMISSION_DENIED``, ``UNIMPLEMENTED``: an API key without the right, an old server)
    makes :attr:`unsupported` true; the worker then falls back to its own view only.
    """

    def __init__(self, client: Any, task_queue: str, identity: str, types: Sequence[int]) -> None:
        self._service = client.workflow_service
        self._namespace = client.namespace
        self._task_queue = task_queue
        self._identity = identity
        self._types = tuple(types)
        self.unsupported = False

    async def _describe(self, task_type: int, *, stats: bool) -> Any:
        request = DescribeTaskQueueRequest(
            namespace=self._namespace,
            task_queue=TaskQueue(name=self._task_queue),
            task_queue_type=task_type,  # type: ignore[arg-type]
            report_pollers=not stats,
            report_stats=stats,
        )
        return await self._service.describe_task_queue(request, timeout=DESCRIBE_TIMEOUT)

    async def _each(self, stats: bool) -> list[Any] | None:
        if self.unsupported:
            return None
        try:
            return list(await asyncio.gather(*(self._describe(t, stats=stats) for t in self._types)))
        except RPCError as exc:
            if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
                logger.warning(
                    "the Temporal server refuses DescribeTaskQueue (%s: %s); idle is judged "
                    "from this worker's own tasks only (give the worker's API key read access "
                    "to the namespace to restore the backlog check)",
                    exc.status.name,
                    exc.message,
                )
                self.unsupported = True
            else:
                logger.debug("DescribeTaskQueue failed (%s: %s)", exc.status.name, exc.message)
            return None
        except Exception as exc:  # noqa: BLE001 - timeouts, a closed connection: no answer
            logger.debug("DescribeTaskQueue failed (%r)", exc)
            return None

    async def pollers_seen(self) -> bool | None:
        """True once the server lists this worker's identity among the pollers of every
        task type it polls (the long polls reached the server after namespace validation)."""
        answers = await self._each(stats=False)
        if answers is None:
            return None
        return all(any(p.identity == self._identity for p in a.pollers) for a in answers)

    async def backlog(self) -> int | None:
        """Tasks waiting in the queue (all task types this worker polls), per the server's
        approximate backlog count (which the server caches for a few seconds)."""
        answers = await self._each(stats=True)
        if answers is None:
            return None
        return sum(int(a.stats.approximate_backlog_count) for a in answers)


def polled_types(worker_config: dict[str, Any]) -> list[int]:
    """The task queue types a worker built from ``worker_config`` polls."""
    types = []
    if worker_config.get("workflows"):
        types.append(TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    if worker_config.get("activities"):
        types.append(TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    return types


class _TrackingActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, tracker: TaskTracker) -> None:
        super().__init__(next)
        self._tracker = tracker

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        self._tracker.begin("activity")
        try:
            return await super().execute_activity(input)
        finally:
            self._tracker.end()


class TrackingInterceptor(Interceptor):
    """Worker interceptor recording every activity execution in a :class:`TaskTracker`."""

    def __init__(self, tracker: TaskTracker) -> None:
        self._tracker = tracker

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TrackingActivityInbound(next, self._tracker)


class _TrackingInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, tracker: TaskTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    def activate(self, act: Any) -> Any:
        self._tracker.begin("workflow")
        try:
            return self._inner.activate(act)
        finally:
            self._tracker.end()

    def get_serialization_context(self, command_info: Any) -> Any:
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> Any:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()

    def __getattr__(self, name: str) -> Any:  # anything else the worker may read
        return getattr(self._inner, name)


class TrackingWorkflowRunner(WorkflowRunner):
    """Delegates to another runner and records each activation in a :class:`TaskTracker`."""

    def __init__(self, inner: WorkflowRunner, tracker: TaskTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    def prepare_workflow(self, defn: Any) -> None:
        self._inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _TrackingInstance(self._inner.create_instance(det), self._tracker)

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self._inner.set_worker_level_failure_exception_types(types)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install_tracking(worker_config: dict[str, Any], tracker: TaskTracker) -> None:
    """Wrap the configured (or default) runners and add the interceptor, in place."""
    runner = worker_config.get("workflow_runner") or temporalio.worker.workflow_sandbox.SandboxedWorkflowRunner()
    unsandboxed = worker_config.get("unsandboxed_workflow_runner") or temporalio.worker.UnsandboxedWorkflowRunner()
    worker_config["workflow_runner"] = TrackingWorkflowRunner(runner, tracker)
    worker_config["unsandboxed_workflow_runner"] = TrackingWorkflowRunner(unsandboxed, tracker)
    worker_config["interceptors"] = [*worker_config.get("interceptors", ()), TrackingInterceptor(tracker)]
