"""Functions the conformance suite (:mod:`lambdarun.testing.conformance`) runs remotely.

They live in their own module, importable without pytest, because calls are pickled by
reference: the Lambda function imports this module to run them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["add", "square", "shout", "fail", "sleep_for", "touch", "ConformanceError"]


class ConformanceError(ValueError):
    """A user-defined exception: it must reach the caller as this type."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message, code)
        self.code = code


def add(a: int, b: int = 0) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def shout(text: str) -> str:
    print(f"out: {text}")
    print(f"err: {text}", file=sys.stderr)
    return text.upper()


def fail(message: str, code: int = 7) -> None:
    raise ConformanceError(message, code)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def touch(path: str) -> str:
    """Create ``path``; returns the process id of the environment that ran it."""
    Path(path).write_text("ran")
    return str(os.getpid())
