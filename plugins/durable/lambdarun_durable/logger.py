"""Replay-aware logger: drops records while the context is replaying."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any


class Logger:
    """Wraps a stdlib/structlog-like logger; silent while ``is_replaying()`` is true."""

    def __init__(
        self,
        logger: Any,
        default_extra: Mapping[str, object],
        is_replaying: Callable[[], bool],
    ) -> None:
        self._logger = logger
        self._default_extra = dict(default_extra)
        self._is_replaying = is_replaying

    def with_extra(self, **extra: object) -> Logger:
        return Logger(self._logger, {**self._default_extra, **extra}, self._is_replaying)

    def with_is_replaying(self, is_replaying: Callable[[], bool]) -> Logger:
        return Logger(self._logger, self._default_extra, is_replaying)

    def get_logger(self) -> Any:
        return self._logger

    def _log(self, level: str, msg: object, *args: Any, extra: Mapping[str, object] | None = None, **kw: Any) -> None:
        if self._is_replaying():
            return
        merged = {**self._default_extra, **(extra or {})}
        getattr(self._logger, level)(msg, *args, extra=merged, **kw)

    def debug(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None:
        self._log("debug", msg, *args, extra=extra)

    def info(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None:
        self._log("info", msg, *args, extra=extra)

    def warning(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None:
        self._log("warning", msg, *args, extra=extra)

    def error(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None:
        self._log("error", msg, *args, extra=extra)

    def exception(self, msg: object, *args: Any, extra: Mapping[str, object] | None = None) -> None:
        self._log("exception", msg, *args, extra=extra)


def default_logger() -> logging.Logger:
    return logging.getLogger("lambdarun_durable.user")
