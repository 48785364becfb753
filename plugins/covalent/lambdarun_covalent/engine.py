"""The engine of the ``covalent`` backend: the threads shared by every backend on one target
(the invocation pool and the watcher of asynchronous outcomes)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.types import InvocationType, InvokeHandle, StorageHandle

if TYPE_CHECKING:
    from lambdarun.types import Target

    from lambdarun_covalent.tasks import Attempt

__all__ = ["Engine", "engines", "engines_lock", "target_concurrency"]

log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------------------
# the engine: threads shared by every backend instance on one target
# --------------------------------------------------------------------------------------


class Engine:
    """Thread pool and asynchronous-completion watcher shared by the backends of a target.

    Sessions derived with call options (``lambdarun.run(..., options=...)``) get their own
    backend instance but share the target, hence the engine: no thread pool per call.
    """

    def __init__(self, workers: int, poller: Any) -> None:
        self.workers = workers
        self.poller = poller
        self._pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        # asynchronous attempts being watched: handle -> (attempt, janitor_deadline or None)
        self._watched: dict[StorageHandle, tuple[Attempt, float | None]] = {}
        self._wake: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._watcher: threading.Thread | None = None
        self._closing = False
        self._closed = False

    @property
    def closing(self) -> bool:
        """Closed or closing: a backend needing an engine makes a new one."""
        return self._closing

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

    def watch(self, handle: StorageHandle, attempt: Attempt, janitor_until: float | None = None) -> None:
        with self._lock:
            self._watched[handle] = (attempt, janitor_until)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch_loop, name="lambdarun-covalent-watch", daemon=True)
                self._watcher.start()
            self._wake_up_locked()

    def watching(self) -> int:
        """How many asynchronous attempts (running, or cancelled and awaiting clean-up) are watched."""
        with self._lock:
            return len(self._watched)

    def unwatch(self, handle: StorageHandle) -> None:
        with self._lock:
            if self._watched.pop(handle, None) is not None:
                self._wake_up_locked()

    def _wake_up_locked(self) -> None:
        if not self._wake.done():
            self._wake.set_result(None)

    def _watch_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                shutdown = self._closing and not self._watched
            if shutdown:
                self._shutdown()
                return
            with self._lock:
                if self._wake.done():
                    self._wake = concurrent.futures.Future()
                wake = self._wake
                now = time.monotonic()
                expired = [h for h, (_, until) in self._watched.items() if until is not None and until <= now]
                for h in expired:
                    del self._watched[h]
                handles = list(self._watched)
                next_expiry = min((u for _, u in self._watched.values() if u is not None), default=None)
            if not handles:
                concurrent.futures.wait([wake], timeout=60)
                with self._lock:
                    if not self._watched and self._watcher is threading.current_thread():
                        self._watcher = None
                        return
                continue
            timeout = None if next_expiry is None else max(0.0, next_expiry - time.monotonic())
            wake_handle = InvokeHandle(function_name="", invocation_type=InvocationType.EVENT, future=wake)
            try:
                done, _ = self.poller.wait([*handles, wake_handle], timeout=timeout, return_when="FIRST_COMPLETED")
            except Exception:
                log.warning("polling for asynchronous outcomes failed; retrying", exc_info=True)
                time.sleep(0.5)
                continue
            for handle in done:
                if not isinstance(handle, StorageHandle):
                    continue
                with self._lock:
                    entry = self._watched.pop(handle, None)
                if entry is None:
                    continue
                attempt, janitor_until = entry
                backend = attempt.task.backend
                if janitor_until is not None:
                    self.pool().submit(backend.cleanup, attempt)
                else:
                    self.pool().submit(backend.complete_async, attempt)

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
            self._closed = True
            self._wake_up_locked()
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.shutdown(wait=False)  # work already queued (clean-ups) still runs


engines: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()
engines_lock = threading.Lock()


def target_concurrency(target: Target) -> int | None:
    """How many invocations the target runs at once, when it says."""
    limit = getattr(target, "concurrency_limit", None)
    return limit if isinstance(limit, int) and limit > 0 else None
