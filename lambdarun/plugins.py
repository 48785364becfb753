"""The plugin manager: built-in defaults, entry-point discovery, listing and tracing.

Built-in behaviour lives in plugins named in :data:`DEFAULT_PLUGINS`, registered exactly like
third-party plugins (their fallback implementations are ``trylast``). Third-party plugins are
found through the ``lambdarun`` entry-point group; each entry point is loaded on its own, and
one that fails to import is logged with its name and version and skipped.

Environment variables:

``LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry-point plugins (built-ins only).
``LAMBDARUN_PLUGINS=a,b``
    load only the entry points named ``a`` and ``b``.
``LAMBDARUN_BLOCK_PLUGINS=a,b``
    never register plugins with these names.
``LAMBDARUN_TRACE_PLUGINS=1``
    log every hook call with its arguments and result.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy
import structlog

from lambdarun import hookspecs
from lambdarun.logs import configure_logging

__all__ = [
    "ENTRY_POINT_GROUP",
    "DEFAULT_PLUGINS",
    "PluginLoadWarning",
    "LambdarunPluginManager",
    "make_plugin_manager",
    "describe_plugins",
    "PluginInfo",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "lambdarun"

#: Built-in plugins, registered in this order before any entry-point plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "lambdarun.serializers",
    "lambdarun.storage",
    "lambdarun.targets",
    "lambdarun.invoke",
    "lambdarun.polling",
    "lambdarun.runtime",
    "lambdarun.local.plugin",
    "lambdarun.deploy.plugin",
    "lambdarun.dashboard.plugin",
)


class PluginLoadWarning(UserWarning):
    """An entry-point plugin could not be loaded and was skipped."""


@attrs.frozen
class DistInfo:
    name: str
    version: str


@attrs.frozen
class FailedPlugin:
    name: str
    distribution: DistInfo | None
    error: str


class LambdarunPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.distinfo: dict[str, DistInfo] = {}
        self.builtin: set[str] = set()
        self.failed: list[FailedPlugin] = []

    def enable_trace_logging(self) -> Callable[[], None]:
        """Log every hook call; returns the function that turns it off again."""
        trace_log = structlog.get_logger("lambdarun.trace")

        def before(hook_name: str, hook_impls: list, kwargs: Mapping[str, Any]) -> None:
            trace_log.info(
                "hook call",
                hook=hook_name,
                impls=[impl.plugin_name for impl in hook_impls],
                kwargs={k: _short(v) for k, v in kwargs.items()},
            )

        def after(outcome: Any, hook_name: str, hook_impls: list, kwargs: Mapping[str, Any]) -> None:
            exc = outcome.exception
            trace_log.info(
                "hook result",
                hook=hook_name,
                result=None if exc else _short(outcome.get_result()),
                error=repr(exc) if exc else None,
            )

        return self.add_hookcall_monitoring(before, after)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def make_plugin_manager(
    plugins: Iterable[Any] = (),
    *,
    load_entrypoints: bool | None = None,
    block: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LambdarunPluginManager:
    """Build a plugin manager with the built-ins, entry-point plugins and ``plugins``.

    :param plugins: extra plugin objects (modules, classes, instances) registered last, so
        their implementations run first.
    :param load_entrypoints: load the ``lambdarun`` entry-point group; default: yes unless
        ``LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD`` is set.
    :param block: plugin names never to register (also ``LAMBDARUN_BLOCK_PLUGINS``).
    :param environ: environment to read the control variables from (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    configure_logging()  # log lines go to stderr (never into a command's stdout)
    pm = LambdarunPluginManager()
    for name in (*block, *_csv(environ.get("LAMBDARUN_BLOCK_PLUGINS"))):
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if pm.is_blocked(module_name):
            continue
        pm.register(importlib.import_module(module_name), name=module_name)
        pm.builtin.add(module_name)
    if load_entrypoints is None:
        load_entrypoints = not _truthy(environ.get("LAMBDARUN_DISABLE_PLUGIN_AUTOLOAD"))
    if load_entrypoints:
        allow = _csv(environ.get("LAMBDARUN_PLUGINS")) or None
        load_entrypoint_plugins(pm, allow=allow)
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    if _truthy(environ.get("LAMBDARUN_TRACE_PLUGINS")):
        pm.enable_trace_logging()
    return pm


def load_entrypoint_plugins(pm: LambdarunPluginManager, *, allow: list[str] | None = None) -> int:
    """Load each entry point of the ``lambdarun`` group on its own; return how many loaded.

    A plugin that fails to import or register is logged (name, distribution, version, error),
    reported with a :class:`PluginLoadWarning` and skipped.
    """
    loaded = 0
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and ep.name not in allow:
            continue
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        dist = DistInfo(ep.dist.name, ep.dist.version) if ep.dist is not None else None
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must never take lambdarun down
            where = f"{dist.name} {dist.version}" if dist else "unknown distribution"
            log.warning(
                "plugin failed to load and was skipped",
                plugin=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
                error=f"{type(exc).__name__}: {exc}",
            )
            warnings.warn(
                f"lambdarun plugin {ep.name!r} ({where}) failed to load and was skipped: "
                f"{type(exc).__name__}: {exc}. Reinstall or upgrade it, or block it with "
                f"LAMBDARUN_BLOCK_PLUGINS={ep.name}.",
                PluginLoadWarning,
                stacklevel=2,
            )
            pm.failed.append(FailedPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            continue
        if dist is not None:
            pm.distinfo[ep.name] = dist
        loaded += 1
    return loaded


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool


def describe_plugins(pm: LambdarunPluginManager, *, include_builtin: bool = False) -> list[PluginInfo]:
    """Every registered plugin with its distribution, version and implemented hooks."""
    from lambdarun.version import __version__

    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        builtin = name in pm.builtin
        if builtin and not include_builtin:
            continue
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        dist = pm.distinfo.get(name)
        out.append(
            PluginInfo(
                name=name,
                distribution=dist.name if dist else ("lambdarun" if builtin else None),
                version=dist.version if dist else (__version__ if builtin else None),
                hooks=hooks,
                builtin=builtin,
            )
        )
    return sorted(out, key=lambda info: (not info.builtin, info.name))
