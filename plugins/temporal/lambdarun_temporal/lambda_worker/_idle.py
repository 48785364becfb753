"""Knowing when the worker has nothing to do.

The worker counts, with public temporalio extension points only, every workflow activation
(a wrapping :class:`~temporalio.worker.WorkflowRunner`, whose instances' ``activate`` runs
once per workflow task) and every activity execution (a worker
:class:`~temporalio.worker.Interceptor`). The queue is idle when nothing is running and
nothing started or finished for ``idle_timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import temporalio.worker
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)

__all__ = ["TaskTracker", "TrackingInterceptor", "TrackingWorkflowRunner"]


class TaskTracker:
    """Counts running tasks and remembers when the last one started or ended (thread-safe)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._last_change = clock()
        self.workflow_activations = 0
        self.activities = 0

    def begin(self, kind: str) -> None:
        with self._lock:
            self._running += 1
            self._last_change = self._clock()
            if kind == "workflow":
                self.workflow_activations += 1
            else:
                self.activities += 1

    def end(self) -> None:
        with self._lock:
            self._running -= 1
            self._last_change = self._clock()

    def reset_clock(self) -> None:
        """Start the idle clock now (when the worker starts polling)."""
        with self._lock:
            self._last_change = self._clock()

    def idle_for(self) -> float:
        """Seconds since the last task started or ended; 0 while one is running."""
        with self._lock:
            if self._running:
                return 0.0
            return self._clock() - self._last_change


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
