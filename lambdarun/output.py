"""What a call prints: stdout and stderr captured per call while it runs on the Lambda side.

``sys.stdout``/``sys.stderr`` are replaced by routing streams while at least one call runs;
a write goes to the capture of the call running in the writer's context (calls side by side
in one worker keep their output apart), bounded to :data:`OUTPUT_LIMIT` (the tail is kept),
and to the real stream (the Lambda log) unless the call asked for no tee.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["OUTPUT_LIMIT", "Capture", "RoutingStream", "capture_output"]

#: stdout/stderr kept per task (the tail is kept when a task prints more)
OUTPUT_LIMIT = 1_048_576


class Capture:
    """What one call printed: bounded, keeping the tail when a task prints more."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            if self._size > 2 * OUTPUT_LIMIT:
                joined = "".join(self._chunks)[-OUTPUT_LIMIT:]
                self._chunks, self._size = [joined], len(joined)

    def getvalue(self) -> str:
        with self._lock:
            return "".join(self._chunks)[-OUTPUT_LIMIT:]


_current_capture: contextvars.ContextVar[tuple[Capture, Capture, bool] | None] = contextvars.ContextVar(
    "lambdarun_capture", default=None
)


class RoutingStream(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` while calls run.

    A write goes to the capture of the call running in the writer's context (so calls that
    run side by side in one worker, as Temporal activities do, keep their output apart);
    a write from a context with no call (a thread the function started) goes to the only
    call in flight when there is exactly one. Everything is also written to the real
    stream (the Lambda log) unless the call asked for no tee.
    """

    def __init__(self, real: Any, index: int) -> None:
        self.real = real
        self._index = index  # 0: stdout, 1: stderr

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        current = _current_capture.get() or _Routing.only_active()
        tee = True
        if current is not None:
            current[self._index].write(text)
            tee = current[2]
        if tee:
            try:
                self.real.write(text)
            except Exception:
                pass
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.real.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")


class _Routing:
    """Installs the routing streams while at least one call runs, and removes them after."""

    lock = threading.Lock()
    active: list[tuple[Capture, Capture, bool]] = []
    saved: tuple[Any, Any] | None = None

    @classmethod
    def only_active(cls) -> tuple[Capture, Capture, bool] | None:
        active = cls.active
        return active[0] if len(active) == 1 else None

    @classmethod
    @contextlib.contextmanager
    def capture(cls, tee: bool) -> Iterator[tuple[Capture, Capture]]:
        entry = (Capture(), Capture(), tee)
        with cls.lock:
            if not cls.active:
                cls.saved = (sys.stdout, sys.stderr)
                sys.stdout = RoutingStream(sys.stdout, 0)
                sys.stderr = RoutingStream(sys.stderr, 1)
            cls.active.append(entry)
        token = _current_capture.set(entry)
        try:
            yield entry[0], entry[1]
        finally:
            _current_capture.reset(token)
            with cls.lock:
                cls.active.remove(entry)
                if not cls.active and cls.saved is not None:
                    sys.stdout, sys.stderr = cls.saved
                    cls.saved = None


def capture_output(tee: bool) -> contextlib.AbstractContextManager[tuple[Capture, Capture]]:
    """Capture what the code run inside prints: ``with capture_output(tee) as (out, err)``."""
    return _Routing.capture(tee)
