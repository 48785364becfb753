"""Waiting on a condition in tests, instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str = "condition", timeout: float = 60.0, interval: float = 0.02) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy, and
    return that. After ``timeout`` seconds (generous by default: test machines are shared)
    raise ``AssertionError`` naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
