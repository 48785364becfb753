"""``LambdaFuture``: a :class:`concurrent.futures.Future` that also carries remote output."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

__all__ = ["LambdaFuture"]


class LambdaFuture(concurrent.futures.Future):
    """The handle :func:`lambdarun.submit` returns.

    Works everywhere a ``concurrent.futures.Future`` does (``result``, ``exception``,
    ``add_done_callback``, ``concurrent.futures.wait``/``as_completed``) and adds:

    * ``stdout`` / ``stderr``: what the remote function printed (set when it finishes),
    * ``remote_traceback``: the formatted remote traceback when it raised,
    * ``task_id``: the backend's id for the task,
    * ``cancel()`` also works on a *running* task: the backend's canceller stops waiting
      (and, where it can, stops the remote work) and the future ends cancelled.
    """

    def __init__(self, task_id: str = "") -> None:
        super().__init__()
        self.task_id = task_id
        self.stdout: str = ""
        self.stderr: str = ""
        self.remote_traceback: str | None = None
        self.info: dict[str, Any] = {}
        self._canceller: Callable[[], None] | None = None
        self._started = False  # a flag, not a threading.Event: one Condition per future is enough

    # The future stays PENDING while the task runs, so cancel() can always take it; running()
    # reports the task's real state.
    def mark_running(self) -> None:
        self._started = True

    def running(self) -> bool:
        return self._started and not self.done()

    def set_canceller(self, canceller: Callable[[], None]) -> None:
        """Register what ``cancel()`` must do to stop the remote work."""
        self._canceller = canceller

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if not super().cancel():
            return self.cancelled()
        canceller, self._canceller = self._canceller, None
        if canceller is not None:
            try:
                canceller()
            except Exception:  # cancelling is best effort; the future is cancelled regardless
                import structlog

                structlog.get_logger(__name__).warning(
                    "canceller failed", task_id=self.task_id, exc_info=True
                )
        return True

    def finish(
        self,
        result: Any = None,
        *,
        exception: BaseException | None = None,
        stdout: str = "",
        stderr: str = "",
        remote_traceback: str | None = None,
    ) -> bool:
        """Complete the future unless it was cancelled meanwhile; True if it took effect."""
        self.stdout, self.stderr, self.remote_traceback = stdout, stderr, remote_traceback
        try:
            if exception is not None:
                self.set_exception(exception)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            return False
        self._canceller = None  # a done future cancels nothing: drop what it held (often its task)
        return True
