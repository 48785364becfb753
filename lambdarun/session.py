"""``Session``: one plugin manager, one resolved configuration, and the objects built from them.

Everything lambdarun does goes through a session: the public functions use a process-wide
default one (:func:`get_session`); tests and embedding applications build their own.
Targets, invokers, pollers and storages are created lazily through the hooks and cached.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambdarun.backends import Backend, BackendRegistry
from lambdarun.config import ConfigRegistry, Settings, load_settings
from lambdarun.errors import PluginError, SerializationError, StorageError, TargetError, UnknownBackendError
from lambdarun.logs import configure_logging
from lambdarun.types import Encoded

if TYPE_CHECKING:
    from lambdarun.plugins import LambdarunPluginManager
    from lambdarun.types import CheckpointStore, Invoker, Poller, Storage, Target

__all__ = ["Session", "get_session", "set_session", "at_exit_after_sessions"]


class Session:
    """The context every backend, target and hook implementation receives.

    :param pm: the plugin manager (default: :func:`lambdarun.plugins.make_plugin_manager`).
    :param settings: resolved settings (default: loaded from file and environment).
    :param overrides: call-level config overrides (top-level keys and ``{section: {...}}``).
    """

    def __init__(
        self,
        pm: LambdarunPluginManager | None = None,
        settings: Settings | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if pm is None:
            from lambdarun.plugins import make_plugin_manager

            pm = make_plugin_manager(environ=environ)
        self.pm = pm
        if settings is None:
            registry = ConfigRegistry()
            pm.hook.lambdarun_register_config(register=registry)
            settings = load_settings(registry, overrides=overrides, environ=environ, cwd=cwd)
        elif overrides:
            settings = settings.with_overrides(overrides)
        self.settings = settings
        configure_logging(settings.log_level)
        self._lock = threading.RLock()
        self._target: Target | None = None
        self._target_from: Session | None = None  # a derived session shares its parent's target
        self._owns_target = True
        self._invoker: Invoker | None = None
        self._poller: Poller | None = None
        self._storages: dict[str, Storage] = {}
        self._stores: dict[str, CheckpointStore] = {}
        self._backends: dict[str, Backend] = {}
        self._registry: BackendRegistry | None = None
        self._derived: dict[str, Session] = {}
        self._signing_key: bytes | None = None
        self._signing_key_known = False
        self.closed = False
        if settings.allow_unsigned:
            import structlog

            structlog.get_logger(__name__).warning(
                "allow_unsigned = true: when no signing key is known, envelopes are sent and "
                "accepted unsigned, and anyone who can invoke the function or write to its "
                "storage can run code in it or in this process (see docs/security.md)",
                source=settings.source_of("allow_unsigned"),
            )

    # --- derived sessions ---------------------------------------------------------------

    def derive(self, overrides: Mapping[str, Any] | None) -> Session:
        """A session with call-level overrides that shares this one's plugins and target."""
        if not overrides:
            return self
        key = repr(sorted(overrides.items()))
        with self._lock:  # one child per overrides: two racing calls must not build two
            child = self._derived.get(key)
            if child is not None and not child.closed:
                return child
            child = Session(self.pm, self.settings.with_overrides(overrides))
            if (child.settings.target, child.settings.region) == (self.settings.target, self.settings.region):
                child._target_from, child._owns_target = self, False
            self._derived[key] = child
            return child

    @property
    def owns_target(self) -> bool:
        """Whether closing this session closes its target (False for a derived session
        sharing its parent's target)."""
        return self._owns_target

    # --- lazily built collaborators ----------------------------------------------------

    @property
    def target(self) -> Target:
        with self._lock:
            if self._target is None and self._target_from is not None:
                self._target = self._target_from.target
            if self._target is None:
                target = self.pm.hook.lambdarun_make_target(
                    name=self.settings.target, settings=self.settings
                )
                if target is None:
                    raise TargetError(
                        f"no plugin provides the target {self.settings.target!r} (config key "
                        f"'target' from {self.settings.source_of('target')}); use 'local' or "
                        "'aws', or install the plugin that provides it"
                    )
                self._target = target
            return self._target

    @property
    def invoker(self) -> Invoker:
        with self._lock:
            if self._invoker is None:
                invoker = self.pm.hook.lambdarun_make_invoker(target=self.target, session=self)
                if invoker is None:
                    raise PluginError(f"no plugin provides an invoker for target {self.target.name!r}")
                self._invoker = invoker
            return self._invoker

    @property
    def poller(self) -> Poller:
        with self._lock:
            if self._poller is None:
                poller = self.pm.hook.lambdarun_make_poller(session=self)
                if poller is None:
                    raise PluginError("no plugin provides a poller")
                self._poller = poller
            return self._poller

    def storage(self, url: str | None = None) -> Storage:
        """Storage under ``url`` (default: ``storage_url`` or the target's scratch bucket)."""
        if url is None:
            url = self.settings.storage_url or self.target.default_storage_url()
        url = url.rstrip("/")
        with self._lock:
            storage = self._storages.get(url)
            if storage is None:
                storage = self.pm.hook.lambdarun_make_storage(url=url, session=self)
                if storage is None:
                    raise StorageError(
                        f"no storage plugin handles {url!r}; use file:// or s3:// URLs, or "
                        "install a plugin for this scheme"
                    )
                self._storages[url] = storage
            return storage

    def open_url(self, url: str) -> tuple[Storage, str]:
        """Split an object URL into (storage, key): the storage already open whose URL is
        the longest prefix of ``url`` (e.g. the storage prefix), else that of its parent.

        Storages are cached per base URL, so objects under an open storage (a new prefix
        per attempt, as lambdarun-covalent writes) reuse it instead of opening one each.
        """
        base, sep, key = url.rstrip("/").rpartition("/")
        if not sep or not key or base.endswith(":/"):
            raise StorageError(f"{url!r} is not an object URL (expected scheme://container/.../key)")
        with self._lock:
            for opened in sorted(self._storages, key=len, reverse=True):
                if url.startswith(opened + "/") and len(url) > len(opened) + 1:
                    return self._storages[opened], url[len(opened) + 1 :].rstrip("/")
        return self.storage(base), key

    def checkpoint_store(self, url: str) -> CheckpointStore:
        with self._lock:
            store = self._stores.get(url)
            if store is None:
                store = self.pm.hook.lambdarun_make_checkpoint_store(url=url, session=self)
                if store is None:
                    raise StorageError(
                        f"no checkpoint store plugin handles {url!r}; install lambdarun-durable "
                        "(sqlite://, dynamodb://, s3://) or a plugin for this scheme"
                    )
                self._stores[url] = store
            return store

    # --- backends ------------------------------------------------------------------------

    @property
    def backends(self) -> BackendRegistry:
        with self._lock:
            if self._registry is None:
                registry = BackendRegistry()
                self.pm.hook.lambdarun_register_backends(register=registry)
                self._registry = registry
            return self._registry

    @property
    def default_backend_id(self) -> str | None:
        """The backend a call that names none uses: the configuration's ``backend``, else the
        one an installed plugin registered as the default (None when there is neither)."""
        return self.settings.backend or self.backends.default_id

    def backend(self, name: str | None = None) -> Backend:
        """The backend ``name`` (default: :attr:`default_backend_id`), made once per session.

        :raises UnknownBackendError: when no name is given and there is no default, or the
            name is not registered (:class:`BackendNotInstalledError` for a known one).
        """
        name = name or self.default_backend_id
        if name is None:
            installed = ", ".join(self.backends.ids()) or "none"
            raise UnknownBackendError(
                f"no backend named and no default: no installed plugin registers a default backend "
                f"(installed backends: {installed}). Name one with backend= or the configuration key "
                "backend (lambdarun.toml or LAMBDARUN_BACKEND), or pip install lambdarun-covalent."
            )
        with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = self.backends.get(name)(self)
                self._backends[name] = backend
            return backend

    # --- serialization -----------------------------------------------------------------

    @property
    def signing_key(self) -> bytes | None:
        """The HMAC key of this session's envelopes, from the target (``signing_key``,
        ``signing_key_secret``, or the local stack's own key); None when none is known.

        Resolved once (a secret is read once per session, i.e. once per Lambda environment).
        """
        with self._lock:
            if not self._signing_key_known:
                provider = getattr(self.target, "signing_key", None)
                if provider is not None:
                    self._signing_key = provider()
                else:  # a third-party target written before Target.signing_key existed
                    key = self.settings.signing_key
                    self._signing_key = key.encode("utf-8") if key else None
                self._signing_key_known = True
            return self._signing_key

    @property
    def storage_prefix(self) -> str:
        """The storage URL this session's events may name locations under (``storage_url``,
        else the target's scratch storage); from configuration, never from an event."""
        return (self.settings.storage_url or self.target.default_storage_url()).rstrip("/")

    def open_event_url(self, url: Any, *, field: str) -> tuple[Storage, str]:
        """(storage, key) of a location an event names, refused unless it lies under
        :attr:`storage_prefix`.

        ``file://`` locations are never taken from an event (whatever the prefix), and
        ``.``/``..`` segments, empty segments, backslashes and control characters are
        refused. Raises :class:`~lambdarun.errors.EventError` (wrong type) or
        :class:`~lambdarun.errors.UntrustedLocationError`; nothing is read or written then.
        """
        from lambdarun.errors import EventError, UntrustedLocationError

        if not isinstance(url, str):
            raise EventError(f"event field {field!r} must be a string URL, not {type(url).__name__}")
        shown = url[:200]
        if url.lower().startswith("file:"):
            raise UntrustedLocationError(
                f"refused {field} = {shown!r}: file:// locations are never taken from an event; "
                "the function reads and writes only under its configured storage_url"
            )
        prefix = self.storage_prefix
        scheme, sep, rest = url.partition("://")
        segments = rest.split("/")[1:] if sep else []
        if (
            not sep
            or not url.startswith(prefix + "/")
            or any(seg in ("", ".", "..") for seg in segments)
            or any(ch == "\\" or ord(ch) < 32 or ord(ch) == 127 for ch in url)
        ):
            raise UntrustedLocationError(
                f"refused {field} = {shown!r}: an event may only name locations under the "
                f"function's storage prefix {prefix + '/'!r} (its storage_url); nothing was read "
                "or written"
            )
        self.storage(prefix)  # every location an event names is a key of this one storage
        return self.open_url(url)

    def encode(self, value: Any) -> Encoded:
        encoded = self.pm.hook.lambdarun_encode(value=value, session=self)
        if encoded is None:
            raise SerializationError(f"no serializer plugin accepted a {type(value).__qualname__}")
        return encoded

    def decode(self, encoded: Encoded) -> Any:
        decoded = self.pm.hook.lambdarun_decode(encoded=encoded, session=self)
        if decoded is None:
            raise SerializationError(
                f"no serializer plugin decodes the tag {encoded.tag!r}; install the plugin that "
                "wrote it on this side too"
            )
        return decoded.value

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for child in self._derived.values():
                child.close()
            for backend in self._backends.values():
                backend.close()
            for store in self._stores.values():
                store.close()
            close_invoker = getattr(self._invoker, "close", None)
            if close_invoker:
                close_invoker()
            if self._target is not None and self._owns_target:
                self._target.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Session | None = None
_default_lock = threading.Lock()
_after_sessions: list[Callable[[], None]] = []


def at_exit_after_sessions(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` at interpreter exit *after* the default session has closed; returns
    the undo (forget ``callback``).

    Plugins that start services for the session (the embedded local stack) register their
    shutdown here, so backends can still clean up through those services while closing.
    """
    with _default_lock:
        if callback not in _after_sessions:
            _after_sessions.append(callback)

    def undo() -> None:
        with _default_lock:
            if callback in _after_sessions:
                _after_sessions.remove(callback)

    return undo


@atexit.register
def _shutdown() -> None:
    with _default_lock:
        session = _default
        callbacks = list(reversed(_after_sessions))
        _after_sessions.clear()
    if session is not None:
        session.close()
    for callback in callbacks:
        try:
            callback()
        except Exception:  # exit must go on
            import structlog

            structlog.get_logger(__name__).warning("shutdown callback failed", exc_info=True)


def get_session() -> Session:
    """The process-wide default session, created on first use and closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Session()
        return _default


def set_session(session: Session | None) -> Session | None:
    """Replace the default session (None resets it); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, session
        return previous
