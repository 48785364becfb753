"""Claims released off the caller's hot path: :class:`Releaser`.

When the caller has an attempt's outcome it *releases* the attempt's claim
(:meth:`lambdarun.claims.ClaimStore.release`: a tombstone, the outcome copy deleted). Done by
the thread that got the outcome, that costs it a file write and a delete locally and two S3
round trips on AWS before it can invoke again, while it holds one of the map's concurrency
slots. A backend hands the release to the session's :class:`Releaser` instead
(:func:`release_later`), and waits for what it queued when it closes (:func:`flush_releases`).
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.claims import ClaimStore, claim_store

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["Releaser", "releaser", "release_later", "flush_releases"]

log = structlog.get_logger(__name__)


class Releaser:
    """Releases claims off the caller's hot path: :meth:`put` queues an attempt and returns;
    one daemon thread releases what is queued in batches (:meth:`ClaimStore.release_many`:
    the outcomes' deletes in one request), so the thread that got the outcome goes straight
    back to invoking, and a map of N tasks costs N tombstones and N/1,000 deletes instead of
    N of each. :meth:`flush` waits until everything queued so far is released (a backend
    calls it when it closes); a failed batch is logged and dropped: its outcomes expire with
    their claims (:meth:`ClaimStore.sweep`), and their tombstones are what matters."""

    #: attempts released per batch at most (S3's DeleteObjects takes 1,000 keys)
    BATCH = 1000

    def __init__(self, store: ClaimStore) -> None:
        self.store = store
        self._queue: collections.deque[tuple[str, int, float | None]] = collections.deque()
        self._cond = threading.Condition()
        self._queued = 0  # attempts ever queued
        self._done = 0  # attempts ever handled (released or dropped)
        self._thread: threading.Thread | None = None

    def put(self, task_id: str, attempt: int, *, issued_at: float | None = None) -> None:
        with self._cond:
            self._queue.append((task_id, attempt, issued_at))
            self._queued += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lambdarun-claims-release", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return self._queued - self._done

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until what was queued before this call is released; False on time-out."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue, timeout=60):
                    if self._thread is threading.current_thread():
                        self._thread = None  # idle: a later put starts a new one
                    return
                batch = [self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))]
            try:
                self.store.release_many(batch)
            except Exception as exc:  # noqa: BLE001 - the thread must go on; see the class docstring
                log.debug("could not release claims", count=len(batch), store=self.store.url, error=str(exc))
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()


_lock = threading.Lock()
_releasers: weakref.WeakKeyDictionary[Any, Releaser | None] = weakref.WeakKeyDictionary()


def releaser(session: Session) -> Releaser | None:
    """The session's :class:`Releaser` (one per session), or None when it has no claim store."""
    with _lock:
        if session in _releasers:
            return _releasers[session]
    store = claim_store(session)
    with _lock:
        if session not in _releasers:
            _releasers[session] = Releaser(store) if store is not None else None
        return _releasers[session]


def release_later(session: Session, task_id: str, attempt: int, *, issued_at: float | None = None) -> None:
    """Queue the release of an attempt's claim on the session's :class:`Releaser` (nothing
    when the session has no claim store). Never raises: a claim not released expires with
    its TTL (:meth:`~lambdarun.claims.ClaimStore.sweep`)."""
    try:
        queue = releaser(session)
        if queue is not None:
            queue.put(task_id, attempt, issued_at=issued_at)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.debug("could not queue the release of a claim", task_id=task_id, attempt=attempt, error=str(exc))


def flush_releases(session: Session, timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` seconds) until the releases queued for ``session`` are done,
    before its target may go away. Never raises."""
    try:
        queue = releaser(session)
        if queue is not None and not queue.flush(timeout=timeout):
            log.warning("claims still queued for release; they expire with their TTL",
                        pending=queue.pending(), waited_s=timeout)
    except Exception:  # noqa: BLE001 - see the docstring
        log.debug("could not flush the claim releases", exc_info=True)
