"""The engine of the ``covalent`` backend: the threads shared by every backend on one target
(the slots that bound the tasks in flight, the few work threads that run their attempts, and
the watcher of asynchronous outcomes).

A task's attempts are a *flow*: a generator that yields each future it waits for (an
Invoke in flight, a re-delivery's backoff) and is resumed with its result, or has its
exception thrown in, when that future completes. No thread waits meanwhile: the engine's work
threads run a flow's CPU work (encode, sign, parse, verify, decode) between two waits, and
block only on rare paths (storage for spilled calls and outcomes, the version probe once per
function). :class:`Slots` keep at most ``size`` flows begun at once, as a thread pool of that
size did.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.types import InvocationType, InvokeHandle, StorageHandle

if TYPE_CHECKING:
    from lambdarun.types import Target

    from lambdarun_covalent.tasks import Attempt

__all__ = [
    "Engine", "Flow", "POLL_RETRY_FIRST", "POLL_RETRY_MAX", "Slots", "WORK_THREADS", "Watch", "engines",
    "engines_lock", "live_engines", "run_blocking", "target_concurrency",
]

log = structlog.get_logger(__name__)

#: after a failed polling round the watcher waits this long, doubling at each further
#: failure up to POLL_RETRY_MAX; a round that works starts again from the first wait
POLL_RETRY_FIRST = 0.5
POLL_RETRY_MAX = 30.0

#: the engine's work threads: the CPU work of every flow in flight (two per core: more only
#: contend for the GIL), and the rare blocking storage calls of spilled calls and outcomes
WORK_THREADS = max(4, min(16, (os.cpu_count() or 2) * 2))

#: a task's attempts: yields the futures it waits for, is sent their results (or has their
#: exceptions thrown in), returns when the task's attempts are over
Flow = Generator["concurrent.futures.Future[Any]", Any, Any]


def _settled(future: concurrent.futures.Future[Any]) -> tuple[Any, BaseException | None]:
    """The result of a done ``future`` as ``(value, error)`` (waits for it when not done)."""
    try:
        return future.result(), None
    except BaseException as exc:  # noqa: BLE001 - handed to the flow that waits for it
        return None, exc


def run_blocking(flow: Flow) -> Any:
    """Run ``flow`` in the calling thread, waiting for each future it yields; its return value
    (for the rare paths that already hold a thread of their own)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            waited = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = _settled(waited)


class Slots:
    """At most ``size`` flows begun at once; the others wait in order and have not started
    (a task that waits for a slot is PENDING: its deadline has not started), as with a thread
    pool of ``size`` threads, but no thread is held while a flow waits for its Invoke.

    :meth:`start` takes a factory, called on a work thread once a slot is free; the slot is
    held until the flow it returns has ended (or at once when it returns None).
    """

    def __init__(self, engine: Engine, size: int) -> None:
        self.engine = engine
        self.size = max(1, size)
        self._held = 0
        self._waiting: collections.deque[Callable[[], Flow | None]] = collections.deque()
        self._lock = threading.Lock()

    def start(self, factory: Callable[[], Flow | None]) -> None:
        with self._lock:
            if self._held >= self.size:
                self._waiting.append(factory)
                return
            self._held += 1
        self.engine._begin_flow(self, factory)

    def pass_on(self) -> Callable[[], Flow | None] | None:
        """A flow has ended on a work thread: the first waiting factory, which now holds its
        slot (the caller begins it), else None and the slot is free."""
        with self._lock:
            if not self._waiting:
                self._held -= 1
                return None
            return self._waiting.popleft()

    @property
    def held(self) -> int:
        """Flows begun and not ended."""
        with self._lock:
            return self._held

    @property
    def waiting(self) -> int:
        """Flows waiting for a slot."""
        with self._lock:
            return len(self._waiting)


@attrs.define
class Watch:
    """An asynchronous attempt the engine watches for."""

    attempt: Attempt
    #: monotonic time when it stops being watched (None: until its outcome appears)
    until: float | None
    #: cancelled or timed out: only its late objects are deleted
    janitor: bool = False


class _PollFailures:
    """Backoff and logs of the watcher's failed polling rounds: the traceback once per
    distinct error (its type and causes), one line per retry after that."""

    def __init__(self) -> None:
        self.count = 0
        self.delay = 0.0
        self.retry_at = 0.0
        self.last = ""
        self._seen: set[tuple[str, ...]] = set()

    @property
    def active(self) -> bool:
        """The last polling round failed."""
        return self.count > 0

    def failed(self, exc: BaseException, *, quiet: bool = False) -> None:
        """Called in the ``except`` block of a failed round (``quiet``: not logged)."""
        self.count += 1
        self.delay = POLL_RETRY_FIRST if self.count == 1 else min(self.delay * 2, POLL_RETRY_MAX)
        self.retry_at = time.monotonic() + self.delay
        text = str(exc).strip().splitlines()
        self.last = f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
        if quiet:
            return
        kind = _error_kind(exc)
        if kind not in self._seen:
            self._seen.add(kind)
            log.warning("polling for asynchronous outcomes failed; retrying", retry_in=self.delay,
                        failures=self.count, error=self.last, kind=" <- ".join(kind), exc_info=True)
        else:
            log.warning("polling for asynchronous outcomes still fails; retrying", retry_in=self.delay,
                        failures=self.count, error=self.last)

    def succeeded(self) -> None:
        if self.count:
            log.info("polling for asynchronous outcomes works again", failures=self.count)
        self.count, self.delay = 0, 0.0
        self._seen.clear()


def _error_kind(exc: BaseException) -> tuple[str, ...]:
    """The types along an exception's chain of causes (its details, such as URLs, differ
    from round to round)."""
    kinds: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(kinds) < 8:
        seen.add(id(current))
        kinds.append(f"{type(current).__module__}.{type(current).__qualname__}")
        current = current.__cause__ or current.__context__
    return tuple(kinds)


# --------------------------------------------------------------------------------------
# the engine: threads shared by every backend instance on one target
# --------------------------------------------------------------------------------------


class Engine:
    """Slots, work threads and asynchronous-completion watcher shared by the backends of a target.

    Sessions derived with call options (``lambdarun.run(..., options=...)``) get their own
    backend instance but share the target, hence the engine: no threads per call.

    Nothing is watched forever: a running attempt until its ``deadline``, a stopped one until
    its ``janitor_until``; failed polling rounds back off (``POLL_RETRY_FIRST`` doubling to
    ``POLL_RETRY_MAX``); once closed, a failed round ends the clean-up watches, and the
    watcher thread ends when nothing is left.
    """

    def __init__(self, workers: int, poller: Any) -> None:
        self.workers = workers
        self.poller = poller
        self._pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self._slots: dict[int, Slots] = {}
        self._work: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # asynchronous attempts being watched, by the handle of their outcome object
        self._watched: dict[StorageHandle, Watch] = {}
        self._wake: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._watcher: threading.Thread | None = None
        self._closing = False
        _every_engine.add(self)

    @property
    def closing(self) -> bool:
        """Closed or closing: an open backend needing an engine makes a new one (a closed
        backend keeps this one for what it still stops or cleans up)."""
        return self._closing

    def slots(self, size: int | None = None) -> Slots:
        """The slots of ``size`` (default: the engine's ``workers``), shared by every backend
        on this target that asks for that size, as its thread pool was."""
        size = size or self.workers
        with self._lock:
            slots = self._slots.get(size)
            if slots is None:
                slots = self._slots[size] = Slots(self, size)
            return slots

    # -- flows: a task's attempts on the work threads -------------------------------------

    @property
    def flows(self) -> int:
        """Flows begun and not ended (tasks holding a slot)."""
        with self._lock:
            return sum(slots.held for slots in self._slots.values())

    @property
    def work_running(self) -> bool:
        """Whether the work threads are up (a closed engine ends them once its flows end)."""
        return self._work is not None

    def _run_work(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` on a work thread. A closed engine keeps them until its flows in flight
        have ended (cleaned up, freed their slots)."""
        with self._lock:
            if self._work is None:
                self._work = concurrent.futures.ThreadPoolExecutor(
                    max_workers=WORK_THREADS, thread_name_prefix="lambdarun-covalent-work"
                )
            work = self._work
        try:
            work.submit(fn, *args)
        except RuntimeError:  # the interpreter is exiting: no new threads
            log.debug("could not run a task's attempts at exit")

    def _begin_flow(self, slots: Slots, factory: Callable[[], Flow | None]) -> None:
        self._run_work(self._drive, slots, factory, None, None, None)

    def _drive(self, slots: Slots, factory: Callable[[], Flow | None] | None, flow: Flow | None, value: Any,
               error: BaseException | None) -> None:
        """On a work thread: run ``flow`` (or the one ``factory`` makes) until it waits for a
        future that is not done yet; when it ends, its slot passes to the next waiting flow,
        begun here (a loop, not a recursion: a long queue of cancelled tasks ends at once)."""
        while True:
            if flow is None and factory is not None:
                try:
                    flow = factory()
                except BaseException:  # noqa: BLE001 - a factory must not take its slot with it
                    log.error("a task's attempts could not begin", exc_info=True)
            if flow is not None and self._advance(slots, flow, value, error):
                return  # parked: resumed by the future it waits for
            factory, flow, value, error = slots.pass_on(), None, None, None
            if factory is None:
                if self._closing:
                    self._retire_work()
                return

    def _retire_work(self) -> None:
        """Closed: the work threads end once no flow holds a slot (queued work still runs)."""
        with self._lock:
            work = self._work
            if work is None or not self._closing or any(slots.held for slots in self._slots.values()):
                return
            self._work = None
        work.shutdown(wait=False)

    def _advance(self, slots: Slots, flow: Flow, value: Any, error: BaseException | None) -> bool:
        """Run ``flow`` until it waits for a future that is not done (True: parked) or ends."""
        try:
            while True:
                waited = flow.throw(error) if error is not None else flow.send(value)
                if not waited.done():
                    waited.add_done_callback(functools.partial(self._resume, slots, flow))
                    return True
                value, error = _settled(waited)
        except StopIteration:
            return False
        except BaseException:  # noqa: BLE001 - a flow handles its own failures; never lose the slot
            log.error("a task's attempts ended with an unexpected error", exc_info=True)
            return False

    def _resume(self, slots: Slots, flow: Flow, waited: concurrent.futures.Future[Any]) -> None:
        # the done callback of what the flow waited for: runs on whichever thread completed it
        # (the invoker's, the deadline thread), so the flow goes on on a work thread
        value, error = _settled(waited)
        self._run_work(self._drive, slots, None, flow, value, error)

    # -- the pool of asynchronous completions ----------------------------------------------

    def pool(self, size: int | None = None) -> concurrent.futures.ThreadPoolExecutor:
        size = size or self.workers
        with self._lock:
            pool = self._pools.get(size)
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=size, thread_name_prefix="lambdarun-covalent"
                )
                self._pools[size] = pool
            return pool

    # -- asynchronous attempts ------------------------------------------------------------

    def watch(
        self,
        handle: StorageHandle,
        attempt: Attempt,
        janitor_until: float | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        """Watch for ``handle``'s outcome object: the attempt completes when it appears.

        ``janitor_until``: the attempt was cancelled or timed out; its late objects are
        deleted if its outcome appears before then, and it is forgotten at that time.
        ``deadline``: a running attempt whose outcome has not appeared by then is handed to
        its backend's ``outcome_overdue`` (the task fails with its timeout error).
        """
        until = janitor_until if janitor_until is not None else deadline
        with self._lock:
            self._watched[handle] = Watch(attempt, until, janitor=janitor_until is not None)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch_loop, name="lambdarun-covalent-watch", daemon=True)
                self._watcher.start()
            self._wake_up_locked()

    def watching(self) -> int:
        """How many asynchronous attempts (running, or cancelled and awaiting clean-up) are watched."""
        with self._lock:
            return len(self._watched)

    @property
    def watcher_running(self) -> bool:
        """Whether the watcher thread is alive (it ends once nothing is watched)."""
        watcher = self._watcher
        return watcher is not None and watcher.is_alive()

    def unwatch(self, handle: StorageHandle) -> None:
        with self._lock:
            if self._watched.pop(handle, None) is not None:
                self._wake_up_locked()

    def _wake_up_locked(self) -> None:
        if not self._wake.done():
            self._wake.set_result(None)

    def _watch_loop(self) -> None:
        failing = _PollFailures()
        while True:
            with self._lock:
                if self._wake.done():
                    self._wake = concurrent.futures.Future()
                wake = self._wake
                now = time.monotonic()
                expired = [(h, w) for h, w in self._watched.items() if w.until is not None and w.until <= now]
                for h, _ in expired:
                    del self._watched[h]
                if self._closing and failing.active:
                    # the sessions are closed and the target does not answer: the late objects
                    # of stopped attempts are left to the bucket's lifecycle rule
                    abandoned = [h for h, w in self._watched.items() if w.janitor]
                    for h in abandoned:
                        del self._watched[h]
                else:
                    abandoned = []
                handles = list(self._watched)
                next_expiry = min((w.until for w in self._watched.values() if w.until is not None), default=None)
                stop = not handles and self._closing
                if stop and self._watcher is threading.current_thread():
                    self._watcher = None
            for _, entry in expired:
                if not entry.janitor:
                    self._hand_over(entry.attempt.task.backend.outcome_overdue, entry.attempt)
            if abandoned:
                log.warning(
                    "stopped watching for the late outcomes of stopped asynchronous attempts: the "
                    "session is closed and its target does not answer; an S3 lifecycle rule on the "
                    "storage removes what they leave",
                    attempts=len(abandoned),
                    error=failing.last,
                )
            if stop:
                self._shutdown()
                return
            if not handles:
                concurrent.futures.wait([wake], timeout=60)
                with self._lock:
                    if not self._watched and not self._closing and self._watcher is threading.current_thread():
                        self._watcher = None
                        return
                continue
            timeout = None if next_expiry is None else max(0.0, next_expiry - time.monotonic())
            if failing.active:  # back off after a failed poll; close() and expiries wake us
                pause = failing.retry_at - time.monotonic()
                if pause > 0:
                    concurrent.futures.wait([wake], timeout=pause if timeout is None else min(pause, timeout))
                    continue
                # then a short round: one that returns says the storage answers again
                timeout = POLL_RETRY_FIRST if timeout is None else min(timeout, POLL_RETRY_FIRST)
            wake_handle = InvokeHandle(function_name="", invocation_type=InvocationType.EVENT, future=wake)
            try:
                done, _ = self.poller.wait([*handles, wake_handle], timeout=timeout, return_when="FIRST_COMPLETED")
            except Exception as exc:
                with self._lock:  # only clean-ups left of closed sessions: given up just below
                    quiet = self._closing and all(w.janitor for w in self._watched.values())
                failing.failed(exc, quiet=quiet)
                continue
            failing.succeeded()
            for handle in done:
                if not isinstance(handle, StorageHandle):
                    continue
                with self._lock:
                    entry = self._watched.pop(handle, None)
                if entry is None:
                    continue
                backend = entry.attempt.task.backend
                self._hand_over(backend.cleanup if entry.janitor else backend.complete_async, entry.attempt)

    def _hand_over(self, work: Callable[[Attempt], None], attempt: Attempt) -> None:
        """Run ``work(attempt)`` on the pool (clean-ups queued before a shutdown still run)."""
        for _ in range(2):  # a pool shut down just after we got it: the next one is new
            try:
                self.pool().submit(work, attempt)
                return
            except RuntimeError:  # shut down, or the interpreter is exiting (no new threads)
                continue
        log.debug("could not hand over an asynchronous attempt", prefix=attempt.prefix)

    def close(self) -> None:
        """Stop the threads once the attempts still watched (clean-up of cancelled ones) end."""
        with self._lock:
            self._closing = True
            idle = not self._watched
            self._wake_up_locked()
        if idle:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.shutdown(wait=False)  # work already queued (clean-ups) still runs
        self._retire_work()  # now, or when the last flow in flight ends


engines: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()
engines_lock = threading.Lock()
#: every engine still referenced (a running watcher thread keeps its engine alive), also
#: those no longer in ``engines`` (closed, or their target gone)
_every_engine: weakref.WeakSet[Engine] = weakref.WeakSet()


def live_engines() -> list[Engine]:
    """Every engine of this process still alive (for tests: what is still watched)."""
    return list(_every_engine)


def target_concurrency(target: Target) -> int | None:
    """How many invocations the target runs at once, when it says."""
    limit = getattr(target, "concurrency_limit", None)
    return limit if isinstance(limit, int) and limit > 0 else None
