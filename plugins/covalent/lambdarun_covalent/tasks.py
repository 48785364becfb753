"""Tasks and attempts of the ``covalent`` backend, the tasks in flight in this process, and
the one thread that fires their deadlines."""

from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.futures import LambdaFuture
from lambdarun.types import InvocationType

if TYPE_CHECKING:
    from lambdarun_covalent.backend import CovalentBackend

__all__ = [
    "Attempt", "MapQueue", "RAMP_GAP", "Task", "Deadlines", "after", "deadlines", "in_flight", "lookup_task", "ramp",
]

log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------------------
# deadlines: one thread for the whole process
# --------------------------------------------------------------------------------------


class Deadlines:
    """Calls a callback when its deadline passes; one daemon thread, a heap of deadlines.

    Removed deadlines drop their callback at once (it may hold a task and its arguments);
    their heap entries are compacted away when they outnumber the live ones.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, when: float, callback: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._counter)
            self._callbacks[token] = callback
            # the thread sleeps until the earliest deadline: wake it only when this one is
            # earlier (tasks of one map share a timeout, so theirs come later: no wake-up each)
            earlier = not self._heap or when < self._heap[0][0]
            heapq.heappush(self._heap, (when, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lambdarun-covalent-deadlines", daemon=True)
                self._thread.start()
            if earlier:
                self._cond.notify()
            return token

    def remove(self, token: int | None) -> None:
        if token is None:
            return
        # dict.pop is atomic: no lock per removal (every finished task removes one; 1,000
        # threads contended for it), only to compact the heap now and then
        if self._callbacks.pop(token, None) is not None and len(self._heap) > 2 * len(self._callbacks) + 1024:
            with self._cond:
                if len(self._heap) > 2 * len(self._callbacks) + 1024:
                    self._heap = [entry for entry in self._heap if entry[1] in self._callbacks]
                    heapq.heapify(self._heap)

    def __len__(self) -> int:
        with self._cond:
            return len(self._callbacks)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    when, token = self._heap[0]
                    now = time.monotonic()
                    if when <= now:
                        heapq.heappop(self._heap)
                        callback = self._callbacks.pop(token, None)  # None: removed meanwhile
                        if callback is None:
                            continue
                        break
                    self._cond.wait(when - now)
            try:
                callback()
            except Exception:  # a deadline callback must never kill the thread
                log.warning("deadline callback failed", exc_info=True)


deadlines = Deadlines()


def after(seconds: float) -> concurrent.futures.Future[None]:
    """A future that completes ``seconds`` from now (from the deadline thread): what a flow
    yields to wait without holding a thread (:mod:`lambdarun_covalent.engine`)."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    deadlines.add(time.monotonic() + seconds, lambda: future.set_result(None))
    return future

#: in-flight tasks of this process by task id (for Covalent's cancel(job_handle) and get_status)
in_flight: weakref.WeakValueDictionary[str, Task] = weakref.WeakValueDictionary()


def lookup_task(task_id: str) -> Task | None:
    """The in-flight task with this id in this process, if any."""
    return in_flight.get(task_id)


# --------------------------------------------------------------------------------------
# tasks and attempts
# --------------------------------------------------------------------------------------


@attrs.define(eq=False)
class Attempt:
    task: Task
    number: int
    prefix: str  # "<run prefix><task>-<n>-<random>/"
    mode: InvocationType
    spilled: bool = False
    outcome_stored: bool | None = None  # None: unknown (delete to be sure)
    started: float = attrs.field(factory=time.monotonic)
    #: epoch seconds carried in the call (files its claim, see lambdarun.claims)
    issued_at: int = attrs.field(factory=lambda: int(time.time()))
    invoked: bool = False  # the invoke request was accepted (Event) or sent (sync)
    finished: bool = False
    batched: bool = False  # sent in a batch with other tasks' attempts (one invocation)

    @property
    def id(self) -> str:
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]

    @property
    def call_key(self) -> str:
        return self.prefix + "call"

    @property
    def outcome_key(self) -> str:
        return self.prefix + "outcome"


def _dropped_future() -> LambdaFuture:
    future = LambdaFuture("dropped")
    future.cancel()
    return future


#: what ``Task.future`` gives once the task has ended and nobody holds its future any more
_DROPPED = _dropped_future()


@attrs.define(eq=False)
class Task:
    """A task: its call, its future and its current attempt.

    The task holds its future strongly only while it runs; once it has ended
    (:meth:`release`, the future's done callback) only the future holds the task
    (``future.info["task"]``). So an ended task and its future form no reference cycle and
    are freed as soon as the caller drops the future, instead of waiting, some twenty objects
    each, for the garbage collector's full collections (at 1,000 tasks/s those came every
    2 s and paused every thread for 0.15-0.2 s).
    """

    id: str
    backend: CovalentBackend
    func: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    _future: LambdaFuture | None = attrs.field(alias="future")
    timeout: float
    mode: InvocationType
    attempt: Attempt | None = None
    deadline_token: int | None = None
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    _future_ref: weakref.ref[LambdaFuture] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._future_ref = weakref.ref(self._future)  # type: ignore[arg-type]

    @property
    def future(self) -> LambdaFuture:
        """The task's future (a cancelled stand-in once the task ended and its future is gone)."""
        return self._future or self._future_ref() or _DROPPED

    @property
    def status(self) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED or CANCELLED."""
        fut = self.future
        if fut.cancelled():
            return "CANCELLED"
        if fut.done():
            return "FAILED" if fut.exception() is not None else "COMPLETED"
        return "RUNNING" if fut.running() else "PENDING"

    def release(self) -> None:
        """The task ended: drop its deadline, its arguments (which may be large) and its strong
        hold on its future."""
        deadlines.remove(self.deadline_token)
        self.args, self.kwargs = (), {}
        self._future = None

    def handle(self) -> dict[str, Any]:
        """A JSON-serializable handle (what Covalent stores with ``set_job_handle``)."""
        attempt = self.attempt
        return {
            "task_id": self.id,
            "function_name": self.backend.function_name,
            "attempt": attempt.number if attempt else 0,
            "prefix": attempt.prefix if attempt else None,
            "storage_url": self.backend.storage_url if attempt else None,
        }


class MapQueue:
    """The synchronous tasks of one ``map`` waiting for a slot, taken in batches.

    At most ``threads`` runners serve the queue (:meth:`put` says when to start one; a
    runner calls :meth:`take` until it gets nothing, then it has ended): the slots hold a
    flow per runner, not per task (a runner re-queues itself after each batch, so other
    work on the same slots gets its turn). A runner takes its fair share of what is queued
    (the queue divided by the threads, at least one, at most ``limit``): few tasks go one per
    invocation (all threads busy, low latency), a long queue goes ``limit`` per invocation.
    """

    def __init__(self, limit: int, threads: int) -> None:
        self.limit = max(1, limit)
        self.threads = max(1, threads)
        self._tasks: collections.deque[Task] = collections.deque()
        self._runners = 0
        self._lock = threading.Lock()

    def put(self, task: Task) -> bool:
        """Queue ``task``; True when the caller must start a runner (one more is needed)."""
        with self._lock:
            self._tasks.append(task)
            if self._runners < self.threads:
                self._runners += 1
                return True
            return False

    def take(self) -> list[Task]:
        """The next batch of the calling runner; empty: the runner has ended."""
        with self._lock:
            if not self._tasks:
                self._runners -= 1
                return []
            share = min(self.limit, max(1, -(-len(self._tasks) // self.threads)), len(self._tasks))
            return [self._tasks.popleft() for _ in range(share)]

    @property
    def runners(self) -> int:
        with self._lock:
            return self._runners

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)


#: seconds between the first ``concurrency`` invocations a ``map`` starts (a ramp of 1,000/s)
RAMP_GAP = 0.001


def ramp(started: int, concurrency: int, since: float, *, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Spread the first window's invocations over ``concurrency * RAMP_GAP`` seconds: started
    all at once, 1,000 equal tasks answer all at once, and 1,000 threads waking together for
    the GIL (CPython polls each waiter every 5 ms) stall the caller for seconds; spread, the
    answers stay spread. Returns the new count."""
    if started < concurrency:
        delay = since + started * RAMP_GAP - clock()
        if delay > 0:
            sleep(delay)
    return started + 1
