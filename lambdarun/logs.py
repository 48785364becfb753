"""structlog set-up: JSON lines inside Lambda, readable console output elsewhere."""

from __future__ import annotations

import logging
import os
import sys

import structlog

__all__ = ["configure_logging", "in_lambda"]

_configured_by_us = False


def in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    # sys.stderr read at each use: it may be replaced (pytest capture, a redirecting app)
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "INFO", *, force: bool = False) -> None:
    """Configure structlog once, unless the application configured it already."""
    global _configured_by_us
    if structlog.is_configured() and not (force or _configured_by_us):
        return
    renderer = (
        structlog.processors.JSONRenderer()
        if in_lambda()
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    _configured_by_us = True
