"""Backends (execution models) and the registry plugins add them to."""

from __future__ import annotations

import abc
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from lambdarun.config import KNOWN_DISTRIBUTIONS
from lambdarun.environment import function_environment
from lambdarun.errors import BackendNotInstalledError, PluginError, UnknownBackendError

if TYPE_CHECKING:
    from lambdarun.futures import LambdaFuture
    from lambdarun.session import Session
    from lambdarun.types import FunctionSpec

__all__ = ["Backend", "BackendRegistry"]


class Backend(abc.ABC):
    """An execution model: how a call becomes work on Lambda and comes back.

    Subclasses set ``id`` (the name users pass as ``backend=``) and implement
    :meth:`submit`. They use the target, storage and invoker only through ``self.session``,
    so they run unchanged on the local target and on AWS.
    """

    id: ClassVar[str]

    def __init__(self, session: Session) -> None:
        self.session = session
        self._runtime_function: str | None = None
        self._runtime_function_lock = threading.Lock()

    # -- the backend's runtime function --------------------------------------------------

    def function_spec(self) -> FunctionSpec:
        """The Lambda function this backend's work runs in: name, timeout, memory and
        environment (start from :meth:`function_environment`). A backend with a runtime
        function overrides it; :attr:`function_name` creates the function from it."""
        raise NotImplementedError(f"the backend {self.id!r} runs in no Lambda function of its own")

    @property
    def function_session(self) -> Session:
        """The session whose target creates the function (default: :attr:`session`)."""
        return self.session

    def function_environment(self, *, storage_url: str | None = None) -> dict[str, str]:
        """The variables every runtime function gets (:func:`lambdarun.environment.function_environment`)."""
        return function_environment(self.function_session.settings, storage_url=storage_url)

    @property
    def function_name(self) -> str:
        """The runtime function, created from :meth:`function_spec` once per backend on
        targets that can create it (others raise
        :class:`~lambdarun.errors.FunctionNotFoundError` saying to deploy it)."""
        name = self._runtime_function
        if name is None:
            with self._runtime_function_lock:
                if self._runtime_function is None:
                    self._runtime_function = self.function_session.target.ensure_function(self.function_spec())
                name = self._runtime_function
        return name

    @abc.abstractmethod
    def submit(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> LambdaFuture:
        """Start ``func(*args, **kwargs)`` and return its future without waiting."""

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        max_workers: int | None = None,
        chunksize: int | None = None,
    ) -> Iterator[LambdaFuture]:
        """Futures for ``func(item)`` for each item, in input order, made lazily: the
        caller (:func:`lambdarun.map`) takes the next future only when its window has room,
        so an item is read from ``iterable`` only then.

        The default submits one task per item (``chunksize`` is ignored); backends override
        it to batch several tasks into one invocation.
        """
        for item in iterable:
            yield self.submit(func, (item,), {})

    def map_concurrency(self, max_workers: int | None = None) -> int:
        """How many invocations of a ``map`` run at once: ``max_workers``, else the
        ``max_workers`` setting, else the target's ``concurrency_limit`` (a capability
        the target reports), else ``min(64, 8 * cpus)``."""
        if max_workers:
            return max_workers
        if self.session.settings.max_workers:
            return self.session.settings.max_workers
        limit = getattr(self.function_session.target, "concurrency_limit", None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
        return min(64, (os.cpu_count() or 2) * 8)

    def map_chunksize(self, chunksize: int | None = None) -> int:
        """Tasks per invocation of a ``map`` (1 unless the backend batches)."""
        return 1

    def map_window(self, *, max_workers: int | None = None, chunksize: int | None = None) -> int:
        """How many tasks a streaming ``map`` keeps in flight or unconsumed: twice the
        invocations that run at once (so the next ones are queued while results are
        consumed), times the tasks per invocation."""
        return 2 * self.map_concurrency(max_workers) * self.map_chunksize(chunksize)

    def close(self) -> None:
        """Release what the backend holds (threads, clients)."""


class BackendRegistry:
    """Filled through the ``lambdarun_register_backends`` hook."""

    def __init__(self) -> None:
        self._backends: dict[str, type[Backend]] = {}
        self._default_candidates: list[str] = []

    def add_backend(self, cls: type[Backend], *, default: bool = False) -> None:
        """Register ``cls`` under ``cls.id``; ``default=True`` offers it as the backend used
        when neither the call nor the configuration (``backend``) names one."""
        backend_id = getattr(cls, "id", None)
        if not isinstance(backend_id, str) or not backend_id:
            raise PluginError(f"backend class {cls!r} needs a non-empty string class attribute 'id'")
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise PluginError(f"backend {backend_id!r}: {cls!r} must subclass lambdarun.backends.Backend")
        existing = self._backends.get(backend_id)
        if existing is not None and existing is not cls:
            raise PluginError(
                f"backend id {backend_id!r} is registered twice ({existing.__module__}."
                f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}); "
                "uninstall or block one of the plugins"
            )
        self._backends[backend_id] = cls
        if default and backend_id not in self._default_candidates:
            self._default_candidates.append(backend_id)

    @property
    def default_id(self) -> str | None:
        """The backend a plugin registered with ``default=True``; None when none did.

        :raises PluginError: when several installed plugins offer a default (set
            ``backend`` in the configuration to choose, or block one of the plugins).
        """
        if len(self._default_candidates) > 1:
            raise PluginError(
                f"several installed backends offer to be the default ({', '.join(sorted(self._default_candidates))}): "
                "choose one with the configuration key backend (lambdarun.toml or LAMBDARUN_BACKEND), "
                "or block one of the plugins"
            )
        return self._default_candidates[0] if self._default_candidates else None

    def __contains__(self, backend_id: object) -> bool:
        return backend_id in self._backends

    def ids(self) -> list[str]:
        return sorted(self._backends)

    def get(self, backend_id: str) -> type[Backend]:
        try:
            return self._backends[backend_id]
        except KeyError:
            installed = ", ".join(self.ids()) or "none"
            if backend_id in KNOWN_DISTRIBUTIONS:
                dist = KNOWN_DISTRIBUTIONS[backend_id]
                raise BackendNotInstalledError(
                    f"backend {backend_id!r} is provided by the distribution {dist!r}, which is "
                    f"not installed: pip install {dist} (from plugins/{backend_id} in the "
                    f"lambdarun repository). Installed backends: {installed}."
                ) from None
            raise UnknownBackendError(
                f"unknown backend {backend_id!r}; installed backends: {installed}. "
                "Check the name, or install the plugin that provides it."
            ) from None
