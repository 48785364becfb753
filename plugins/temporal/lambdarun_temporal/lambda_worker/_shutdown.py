"""The end of every invocation, on every path: the worker's bounded shutdown, the shutdown
hooks (each bounded by its share of the hook budget, run in order, failures logged) and the
configure teardown (an async generator's or context manager's exit)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import temporalio.worker

from lambdarun_temporal.lambda_worker._defaults import RETURN_SAFETY, SHUTDOWN_MARGIN, module_logger

if TYPE_CHECKING:  # annotations only: _configure imports this module
    from lambdarun_temporal.lambda_worker._configure import LambdaWorkerConfig

__all__ = ["HookWindow", "exit_configure", "run_shutdown_hooks", "shutdown_worker"]

logger = module_logger(__name__)


async def exit_configure(
    cm: Any, timeout: float, error: BaseException | None
) -> BaseException | None:
    """Run the async-generator teardown (bounded); its error becomes the error if none yet."""
    exc_info = (type(error), error, error.__traceback__) if error is not None else (None, None, None)
    try:
        await asyncio.wait_for(cm.__aexit__(*exc_info), timeout=max(timeout, 0.001))
    except asyncio.TimeoutError:
        logger.error("configure teardown did not finish in its time slice (%.3f s)", timeout)
    except BaseException as exc:  # noqa: BLE001
        if exc is error:
            return error
        logger.error("configure teardown failed: %s", exc, exc_info=exc)
        return error if error is not None else exc
    return error


async def shutdown_worker(
    worker: temporalio.worker.Worker,
    run_task: asyncio.Task[None] | None,
    config: LambdaWorkerConfig,
    deadline: float | None,
    error: BaseException | None,
) -> BaseException | None:
    """Stop the worker within graceful timeout + margin, never eating the hooks' budget."""
    limit = config.graceful_shutdown_timeout().total_seconds() + SHUTDOWN_MARGIN.total_seconds()
    if deadline is not None:
        hooks_reserve = config.shutdown_hook_budget.total_seconds() + RETURN_SAFETY.total_seconds()
        limit = min(limit, max(0.0, deadline - hooks_reserve - time.monotonic()))
    try:
        await asyncio.wait_for(worker.shutdown(), timeout=max(limit, 0.001))
    except asyncio.TimeoutError:
        logger.error("temporal worker did not shut down in time (%.3f s); abandoning it", limit)
    except Exception as exc:  # noqa: BLE001
        logger.error("temporal worker shutdown failed: %s", exc, exc_info=exc)
    if run_task is not None:
        if not run_task.done():
            run_task.cancel()
            await asyncio.wait({run_task}, timeout=0.05)
        if run_task.done() and not run_task.cancelled():
            exc = run_task.exception()
            if exc is not None and error is None:
                return exc
    return error


@attrs.define
class HookWindow:
    """Time for the shutdown hooks and the configure teardown.

    ``slots`` items share ``budget`` seconds starting now. Each item gets the larger of its
    fair share of what is left and ``budget / slots`` (so one slow or stalled item cannot
    starve the next ones), but never more than what is left before the Lambda deadline
    minus the return margin.
    """

    budget: float
    slots: int
    hard_end: float  # deadline - RETURN_SAFETY (inf without a deadline)
    start: float = attrs.field(factory=time.monotonic)
    used: int = 0

    @classmethod
    def open(cls, config: LambdaWorkerConfig, deadline: float | None, slots: int) -> HookWindow:
        hard_end = float("inf") if deadline is None else deadline - RETURN_SAFETY.total_seconds()
        return cls(config.shutdown_hook_budget.total_seconds(), max(1, slots), hard_end)

    def next_share(self) -> float:
        now = time.monotonic()
        left_slots = max(1, self.slots - self.used)
        self.used += 1
        fair = (self.start + self.budget - now) / left_slots
        share = max(fair, self.budget / self.slots)
        return min(share, self.hard_end - now)


async def run_shutdown_hooks(window: HookWindow, hooks: list[Callable[[], Any]]) -> None:
    """Run every hook in order, each bounded by its share of the window."""
    for hook in hooks:
        share = window.next_share()
        name = getattr(hook, "__qualname__", repr(hook))
        if share <= 0:
            logger.error("shutdown hook %s skipped: no time left before the Lambda deadline", name)
            continue
        try:
            await asyncio.wait_for(_call_hook(hook), timeout=share)
        except asyncio.TimeoutError:
            logger.error("shutdown hook timed out: %s (%.3f s)", name, share)
        except Exception as exc:  # noqa: BLE001 - every hook runs
            logger.error("shutdown hook error: %s (%s)", exc, name, exc_info=exc)


async def _call_hook(hook: Callable[[], Any]) -> None:
    if inspect.iscoroutinefunction(hook):
        await hook()
        return
    result = await _in_daemon_thread(hook)
    if inspect.isawaitable(result):
        await result


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run a sync callable in a daemon thread (never joined, so a hung hook cannot hold
    the handler past its deadline)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any = None, exc: BaseException | None = None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):  # loop closed: the hook was abandoned
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=target, name="lambda-worker-hook", daemon=True).start()
    return future
