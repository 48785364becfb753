"""The per-invocation configuration handed to the ``configure`` callback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import ClientConnectConfig
from temporalio.worker import WorkerConfig

from lambdarun_temporal.lambda_worker._defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SHUTDOWN_HOOK_BUDGET,
    SHUTDOWN_MARGIN,
)
from lambdarun_temporal.lambda_worker._shutdown import HookWindow, run_shutdown_hooks

__all__ = ["LambdaWorkerConfig", "ShutdownHook", "derived_shutdown_buffer"]


ShutdownHook = Callable[[], "Awaitable[None] | None"]


def derived_shutdown_buffer(graceful_shutdown_timeout: timedelta, hook_budget: timedelta) -> timedelta:
    """Time reserved before the deadline: graceful worker shutdown + hooks + a fixed margin."""
    return graceful_shutdown_timeout + hook_budget + SHUTDOWN_MARGIN


@dataclass
class LambdaWorkerConfig:
    """Passed to the ``configure`` callback of :func:`run_worker`, one fresh copy per invocation.

    A dataclass (``dataclasses.replace`` / ``fields`` work) with the fields of
    ``temporalio.contrib.aws.lambda_worker.LambdaWorkerConfig`` first, in its order, then
    the lifecycle knobs this implementation adds (all with defaults).

    :ivar client_connect_config: keyword arguments for ``temporalio.client.Client.connect``,
        pre-filled from ``temporal.toml`` / ``TEMPORAL_*`` environment variables.
    :ivar worker_config: keyword arguments for ``temporalio.worker.Worker`` (``client`` is
        managed), pre-filled with our Lambda defaults and ``TEMPORAL_TASK_QUEUE``.
    :ivar shutdown_deadline_buffer: how long before the deadline shutdown begins. Left
        untouched, it is *derived* after ``configure`` from ``graceful_shutdown_timeout`` +
        ``shutdown_hook_budget`` (only when hooks or a teardown exist) + 0.5 s, so changing
        either moves it; set it to pin it.
    :ivar shutdown_hooks: called in order after the worker stops on every exit path (also
        after a failed connect or worker start); sync or async; each bounded in time.
    :ivar idle_timeout: return once no task has run for this long; ``None`` runs until
        the deadline like the reference.
    :ivar shutdown_hook_budget: total time the hooks (and an async-generator configure's
        teardown) may take.
    :ivar connect_timeout: upper bound of ``Client.connect`` (also bounded by the deadline).
    """

    client_connect_config: ClientConnectConfig = field(default_factory=ClientConnectConfig)
    worker_config: WorkerConfig = field(default_factory=WorkerConfig)
    shutdown_deadline_buffer: timedelta = field(
        default_factory=lambda: derived_shutdown_buffer(
            DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_HOOK_BUDGET
        )
    )
    shutdown_hooks: list[ShutdownHook] = field(default_factory=list)
    idle_timeout: timedelta | None = DEFAULT_IDLE_TIMEOUT
    shutdown_hook_budget: timedelta = DEFAULT_SHUTDOWN_HOOK_BUDGET
    connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT

    def graceful_shutdown_timeout(self) -> timedelta:
        value: Any = self.worker_config.get("graceful_shutdown_timeout")
        return value if isinstance(value, timedelta) else DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT


async def _run_shutdown_hooks(config: LambdaWorkerConfig) -> None:
    """Run ``config.shutdown_hooks`` in order, each failure logged (the reference's name).

    Without a Lambda deadline at hand, the hooks share ``config.shutdown_hook_budget``
    as in an invocation (see :class:`~._shutdown.HookWindow`).
    """
    hooks = list(config.shutdown_hooks)
    await run_shutdown_hooks(HookWindow.open(config, None, len(hooks)), hooks)
