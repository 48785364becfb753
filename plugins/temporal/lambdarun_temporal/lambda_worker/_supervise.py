"""While the worker runs: stop it when it stops by itself, at the deadline, or once the task
queue is idle (see :mod:`._idle` for what idle means and how the server is asked)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any


from lambdarun_temporal.lambda_worker._defaults import module_logger
from lambdarun_temporal.lambda_worker._idle import ServerView, TaskTracker

__all__ = ["supervise", "time_left"]

logger = module_logger(__name__)

_TICK = 0.05  # seconds between idle / deadline checks
_POLLERS_RETRY = 0.1  # seconds between "has the server seen our pollers?" questions
_BACKLOG_RETRY = 0.5  # seconds between backlog questions while the server reports one
# A server that answers but does not list this worker's pollers after this long (a poller
# list kept per partition, say) starts the idle clock anyway; the backlog check still holds.
_POLLERS_WAIT_LIMIT = 5.0



def time_left(until: float | None) -> float:
    """Seconds until the monotonic time ``until`` (infinite without one)."""
    return float("inf") if until is None else until - time.monotonic()


async def supervise(
    run_task: asyncio.Task[None],
    tracker: TaskTracker,
    stop_at: float | None,
    idle_timeout: timedelta | None,
    view: ServerView,
) -> str:
    """Wait for the worker to stop, the deadline, or idle.

    Idle needs, in order: the server listing this worker's pollers (the idle clock starts
    then; or after ``_POLLERS_WAIT_LIMIT`` of answers without them), ``idle_timeout``
    without a task starting or ending, and a backlog report asked after that quiet period
    began reading 0. At most one question to the server is in flight; its answer is ignored
    if a task started or ended meanwhile. No answer (server down) is never idle.
    """
    idle = idle_timeout.total_seconds() if idle_timeout is not None else None
    started = time.monotonic()
    ready = False
    question: asyncio.Task[Any] | None = None
    asked_at_generation = 0
    next_question = 0.0
    try:
        while True:
            wait = min(_TICK, max(0.0, time_left(stop_at)))
            await asyncio.wait({run_task}, timeout=wait)
            if run_task.done():
                run_task.result()  # raises the worker's fatal error
                return "worker_stopped"
            if stop_at is not None and time.monotonic() >= stop_at:
                return "deadline"
            if idle is None:
                continue
            if question is not None and question.done():
                answer, question = question.result(), None
                if not ready:
                    waited = time.monotonic() - started
                    if answer or view.unsupported or (answer is False and waited > _POLLERS_WAIT_LIMIT):
                        ready = True
                        tracker.reset_clock()
                        if answer:
                            logger.debug("the server lists this worker's pollers; idle clock started")
                        elif not view.unsupported:
                            logger.warning(
                                "the server does not list this worker's pollers after %.2f s; "
                                "idle clock started anyway (the backlog check still applies)",
                                waited,
                            )
                    else:
                        next_question = time.monotonic() + _POLLERS_RETRY
                else:
                    quiet = asked_at_generation == tracker.generation and tracker.idle_for() >= idle
                    if quiet and (answer == 0 or view.unsupported):
                        return "idle"
                    if answer:
                        logger.debug("idle, but the server reports a backlog of %s", answer)
                    next_question = time.monotonic() + _BACKLOG_RETRY
            if question is None and time.monotonic() >= next_question:
                if not ready:
                    question = asyncio.create_task(view.pollers_seen(), name="temporal-pollers")
                elif tracker.idle_for() >= idle:
                    asked_at_generation = tracker.generation
                    question = asyncio.create_task(view.backlog(), name="temporal-backlog")
    finally:
        if question is not None and not question.done():
            question.cancel()
            await asyncio.wait({question}, timeout=0.05)
