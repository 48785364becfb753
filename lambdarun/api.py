"""The public functions: ``run``, ``submit`` and ``map``."""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    options: Mapping[str, Any] | None = None,
    session: Any = None,
) -> Iterator[Any]:
    """Apply ``func`` to every item on Lambda; yield the results in input order.

    All tasks are submitted before the first result is yielded. With
    ``return_exceptions=False`` the first failure (in input order) is raised and the tasks
    not yet finished are cancelled; with ``True`` exceptions are yielded in place.
    A progress bar is shown on a terminal unless ``progress=False`` (or the ``progress``
    config key is false).
    """
    chosen = _session_for(session, options)
    workers = max_workers or chosen.settings.max_workers
    chosen_backend = chosen.backend(backend)
    futures = list(chosen_backend.map(func, iterable, max_workers=workers))
    chosen.pm.hook.lambdarun_tasks_submitted(
        session=chosen, backend=chosen_backend, func=func, futures=futures, kind="map"
    )
    show = chosen.settings.progress if progress is None else progress
    return _results(futures, return_exceptions, show and sys.stderr.isatty())


def _results(futures: list[LambdaFuture], return_exceptions: bool, show_progress: bool) -> Iterator[Any]:
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(futures), unit="task", file=sys.stderr)
        for future in futures:
            future.add_done_callback(lambda _f: bar.update(1))
    try:
        for future in futures:
            try:
                yield future.result()
            except concurrent.futures.CancelledError:
                raise
            except Exception as exc:
                if not return_exceptions:
                    raise
                yield exc
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
        if bar is not None:
            bar.close()


