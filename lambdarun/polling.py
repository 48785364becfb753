"""The default poller plugin: adaptive backoff, one storage LIST per prefix per round."""

from __future__ import annotations

import concurrent.futures
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lambdarun.hookspecs import hookimpl
from lambdarun.types import ConditionHandle, InvokeHandle, StorageHandle

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["AdaptivePoller"]

FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED


class AdaptivePoller:
    """Waits on invocation handles (their futures), storage handles (key appears) and
    condition handles (``done()`` returns true).

    Storage handles are grouped by ``(storage, prefix)`` and each group costs one
    ``list(prefix)`` per round. The sleep between rounds starts at ``initial_interval`` and
    grows by ``multiplier`` up to ``max_interval`` while nothing completes; it drops back
    to the start whenever something does.
    """

    def __init__(self, initial_interval: float = 0.01, max_interval: float = 1.0, multiplier: float = 1.6):
        self.initial_interval = initial_interval
        self.max_interval = max_interval
        self.multiplier = multiplier
        self.list_calls = 0  # observable cost, for tests and benchmarks

    def wait(
        self,
        handles: Sequence[InvokeHandle | StorageHandle | ConditionHandle],
        *,
        timeout: float | None = None,
        return_when: str = FIRST_COMPLETED,
    ) -> tuple[set[Any], set[Any]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = set(handles)
        done: set[Any] = set()
        interval = self.initial_interval
        while True:
            newly = self._check(pending)
            done |= newly
            pending -= newly
            if not pending or (done and return_when == FIRST_COMPLETED):
                return done, pending
            interval = self.initial_interval if newly else min(interval * self.multiplier, self.max_interval)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return done, pending
            sleep = interval if deadline is None else min(interval, deadline - now)
            futures = [h.future for h in pending if isinstance(h, InvokeHandle) and h.future is not None]
            if futures and len(futures) == len(pending):
                # only futures left: block on them instead of sleeping
                concurrent.futures.wait(futures, timeout=None if deadline is None else deadline - now, return_when=return_when)
            elif futures:
                concurrent.futures.wait(futures, timeout=sleep, return_when=FIRST_COMPLETED)
            else:
                time.sleep(sleep)

    def _check(self, pending: set[Any]) -> set[Any]:
        newly: set[Any] = set()
        groups: dict[tuple[int, str], list[StorageHandle]] = defaultdict(list)
        for handle in pending:
            if isinstance(handle, InvokeHandle):
                if handle.future is not None and handle.future.done():
                    newly.add(handle)
            elif isinstance(handle, StorageHandle):
                groups[(id(handle.storage), handle.prefix)].append(handle)
            elif isinstance(handle, ConditionHandle):
                if handle.done():
                    newly.add(handle)
            else:
                raise TypeError(f"cannot poll {handle!r}: expected InvokeHandle, StorageHandle or ConditionHandle")
        for (_, prefix), group in groups.items():
            self.list_calls += 1
            present = set(group[0].storage.list(prefix))
            newly.update(h for h in group if h.key in present)
        return newly


@hookimpl(trylast=True)
def lambdarun_make_poller(session: Session) -> AdaptivePoller:
    cfg = session.settings.section("polling")
    return AdaptivePoller(cfg.initial_interval, cfg.max_interval, cfg.multiplier)
