"""The public functions: ``run``, ``submit`` and ``map``."""

from __future__ import annotations

import collections
import concurrent.futures
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any

from lambdarun.futures import LambdaFuture

__all__ = ["run", "submit", "map"]


def _session_for(session: Any, options: Mapping[str, Any] | None) -> Any:
    if session is None:
        from lambdarun.session import get_session

        session = get_session()
    return session.derive(options)


def submit(
    func: Callable[..., Any],
    /,
    *args: Any,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    session: Any = None,
    **kwargs: Any,
) -> LambdaFuture:
    """Start ``func(*args, **kwargs)`` on Lambda and return a :class:`LambdaFuture`.

    :param backend: ``"covalent"``, ``"temporal"``, ``"durable"`` or any installed backend;
        default: the ``backend`` config key.
    :param options: config overrides for this call, e.g. ``{"covalent": {"timeout": 30}}``.
    :param session: a :class:`lambdarun.session.Session` (default: the process-wide one).

    ``backend``, ``options`` and ``session`` are lambdarun's own keywords; every other
    keyword argument goes to ``func``.
    """
    chosen = _session_for(session, options)
    chosen_backend = chosen.backend(backend)
    future = chosen_backend.submit(func, args, kwargs)
    chosen.pm.hook.lambdarun_tasks_submitted(
        session=chosen, backend=chosen_backend, func=func, futures=[future], kind="submit"
    )
    return future


def run(
    func: Callable[..., Any],
    /,
    *args: Any,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    session: Any = None,
    **kwargs: Any,
) -> Any:
    """Run ``func(*args, **kwargs)`` on Lambda and return its result.

    Raises the function's own exception (with the remote traceback attached as
    ``exc.remote_traceback`` and as a note) when it fails remotely.
    """
    return submit(func, *args, backend=backend, options=options, session=session, **kwargs).result()


def map(  # noqa: A001 - mirrors the builtin on purpose
    func: Callable[..., Any],
    iterable: Iterable[Any],
    /,
    *,
    backend: str | None = None,
    max_workers: int | None = None,
    return_exceptions: bool = False,
    progress: bool | None = None,
    chunksize: int | None = None,
    window: int | None = None,
    options: Mapping[str, Any] | None = None,
    session: Any = None,
) -> Iterator[Any]:
    """Apply ``func`` to every item on Lambda; a lazy iterator of the results in input order.

    It streams, like ``concurrent.futures.Executor.map(..., buffersize=)`` of Python 3.14:
    at most ``window`` tasks are in flight or finished-but-not-yet-consumed at any time
    (default: :meth:`~lambdarun.backends.Backend.map_window`, twice what the target runs at
    once, times ``chunksize``), inputs are read from ``iterable`` only as the window has
    room (a generator of a million items is never materialised), and each result is
    released as soon as it is yielded: memory stays flat in the number of tasks. The first
    window is submitted when ``map`` is called, the rest as the results are consumed.

    With ``return_exceptions=False`` the first failure (in input order) is raised at its
    position; with ``True`` exceptions are yielded in place. When the consumer stops early
    (``break``, an exception, closing the iterator) or a failure is raised, the tasks in
    flight are cancelled and no further input is read.

    ``chunksize`` (backends that batch, e.g. covalent): how many tasks share one Lambda
    invocation (default: the backend decides; ``1``: one invocation per task). Results,
    errors, output, retries and at-most-once claims stay per task.

    A progress bar is shown on a terminal unless ``progress=False`` (or the ``progress``
    config key is false).
    """
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"chunksize must be a positive integer, not {chunksize!r}")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be a positive integer, not {window!r}")
    chosen = _session_for(session, options)
    workers = max_workers or chosen.settings.max_workers
    chosen_backend = chosen.backend(backend)
    if window is None:
        window = chosen_backend.map_window(max_workers=workers, chunksize=chunksize)
    kwargs: dict[str, Any] = {"max_workers": workers}
    if chunksize is not None:  # a backend written before chunksize existed still maps
        kwargs["chunksize"] = chunksize
    items = iter(iterable)
    futures = chosen_backend.map(func, items, **kwargs)
    show = chosen.settings.progress if progress is None else progress
    total = len(iterable) if isinstance(iterable, Sized) else None
    stream = _Stream(chosen, chosen_backend, func, futures, window, show and sys.stderr.isatty(), total, items)
    stream.fill()  # the first window starts now, as Executor.map starts its tasks
    return stream.results(return_exceptions)


class _Stream:
    """The window of a streaming ``map``: futures in input order, refilled as consumed.

    Submitted futures are reported to ``lambdarun_tasks_submitted`` in groups (a group is
    reported before any of its results is awaited), so observers such as the run journal
    follow every task while nothing holds a consumed result.
    """

    def __init__(
        self, session: Any, backend: Any, func: Callable[..., Any], futures: Iterator[LambdaFuture],
        window: int, show_progress: bool, total: int | None = None, items: Iterator[Any] | None = None,
    ) -> None:
        self.items = items
        self.session, self.backend, self.func = session, backend, func
        self.source: Iterator[LambdaFuture] | None = futures
        self.window = window
        self.in_flight: collections.deque[LambdaFuture] = collections.deque()
        self.unreported: list[LambdaFuture] = []
        self.bar = None
        if show_progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="task", file=sys.stderr)

    def fill(self) -> None:
        source = self.source
        while source is not None and len(self.in_flight) < self.window:
            try:
                future = next(source)
            except StopIteration:
                self.source = None
                break
            self.in_flight.append(future)
            self.unreported.append(future)
            if self.bar is not None:
                future.add_done_callback(self._tick)
        if self.source is None or not self.unreported or self.unreported[0] is self.in_flight[0]:
            self.report()

    def _tick(self, _future: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self) -> None:
        if self.unreported:
            group, self.unreported = self.unreported, []
            self.session.pm.hook.lambdarun_tasks_submitted(
                session=self.session, backend=self.backend, func=self.func, futures=group, kind="map"
            )

    def results(self, return_exceptions: bool) -> Iterator[Any]:
        try:
            while self.in_flight:
                if self.unreported and self.unreported[0] is self.in_flight[0]:
                    self.report()
                future = self.in_flight.popleft()
                try:
                    value = future.result()
                except concurrent.futures.CancelledError:
                    raise
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    value = exc
                del future  # released once consumed: the window keeps no finished task
                self.fill()
                yield value
                del value
        finally:
            self.close()

    def close(self) -> None:
        source, self.source = self.source, None
        for future in self.in_flight:
            future.cancel()
        self.in_flight.clear()
        self.unreported = []
        for it in (source, self.items):  # generators: stop reading the input
            close = getattr(it, "close", None)
            if close is not None:
                close()
        self.items = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
