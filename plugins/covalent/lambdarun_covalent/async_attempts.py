"""Asynchronous (Event) attempts of the ``covalent`` backend: the function as its own
on-failure destination, the Event invoke, and the completion found in storage.

A part of :class:`~lambdarun_covalent.backend.CovalentBackend` (a mixin it inherits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from lambdarun.errors import EnvelopeError, InvocationError, RemoteEnvironmentError
from lambdarun.types import InvocationType, StorageHandle

from lambdarun_covalent.config import MAX_TIMEOUT
from lambdarun_covalent.engine import run_blocking
from lambdarun_covalent.versions import check_versions

if TYPE_CHECKING:
    from lambdarun.session import Session
    from lambdarun.types import Storage

    from lambdarun_covalent.config import CovalentConfig
    from lambdarun_covalent.engine import Engine, Flow
    from lambdarun_covalent.tasks import Attempt

log = structlog.get_logger(__name__)

#: how long after a cancelled/timed-out asynchronous attempt we still watch for its late
#: outcome object, to delete it (the function's own timeout bounds it)
JANITOR_GRACE = 5.0

__all__ = ["AsyncAttempts", "JANITOR_GRACE"]


class AsyncAttempts:
    """The asynchronous half of the backend."""

    # provided by CovalentBackend
    runtime_session: Session
    config: CovalentConfig
    function_name: str
    storage: Storage
    storage_url: str
    engine: Engine

    # -- asynchronous attempts -----------------------------------------------------------------

    def _ensure_failure_destination(self) -> None:
        """Once per backend: make the function its own on-failure destination, without
        Lambda's own retries (``retries`` is ours), so a dead environment reaches the caller
        as a failure outcome instead of a timeout (see :mod:`lambdarun_covalent.runtime`)."""
        with self._lock:
            if self._destination_checked:
                return
            self._destination_checked = True
        name = self.function_name
        try:
            lam = self.runtime_session.target.client("lambda")
            arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
            try:
                current = lam.get_function_event_invoke_config(FunctionName=name)
            except lam.exceptions.ResourceNotFoundException:
                current = {}
            wanted = {"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": arn}}}
            have = {
                "MaximumRetryAttempts": current.get("MaximumRetryAttempts"),
                "DestinationConfig": {"OnFailure": (current.get("DestinationConfig") or {}).get("OnFailure")},
            }
            if have != wanted:
                lam.put_function_event_invoke_config(FunctionName=name, **wanted)
        except Exception as exc:  # e.g. no lambda:PutFunctionEventInvokeConfig permission
            log.warning(
                "could not make the function its own on-failure destination; an asynchronous "
                "task whose environment dies will end with TaskTimeoutError at its timeout",
                function=name,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _start_async(self, attempt: Attempt) -> Flow:
        """Flow: the Event invoke of an asynchronous attempt, then its outcome is watched for."""
        check_versions(self.runtime_session, self.function_name)  # once per function and process
        self._ensure_failure_destination()
        payload = self._event(attempt)
        handle = StorageHandle(self.storage, self.run_prefix, attempt.outcome_key)
        attempt.outcome_stored = None
        response = yield from self._invoke(payload, InvocationType.EVENT, attempt)
        if response.status_code not in (200, 202):
            raise InvocationError(f"asynchronous invoke returned status {response.status_code}")
        attempt.invoked = True
        with attempt.task.lock:
            if attempt.task.future.done():  # cancelled or timed out meanwhile: only clean up
                self.engine.watch(handle, attempt, janitor_until=self._janitor_deadline(attempt))
                return
            # the task's own deadline ends it first; this bounds the watch if it cannot
            self.engine.watch(handle, attempt, deadline=self._janitor_deadline(attempt))

    def complete_async(self, attempt: Attempt) -> None:
        """Pool thread: the outcome object of an asynchronous attempt appeared."""
        attempt.outcome_stored = True
        task = attempt.task
        try:
            outcome = self._decode(attempt, self.storage.get(attempt.outcome_key))
        except Exception as exc:
            self._cleanup_quietly(attempt)
            task.future.finish(exception=exc)
            if isinstance(exc, EnvelopeError):
                # a refused (forged, foreign, stale) object: the real attempt may still run and
                # store its outcome later; stop it and have that late object deleted
                self._stop(task, "its outcome was refused")
            return
        if (
            not outcome.ok
            and isinstance(outcome.exception, RemoteEnvironmentError)
            and attempt.number <= self.config.retries
            and not task.future.done()
        ):
            log.info("retrying task after an environment failure", task_id=task.id, attempt=attempt.number)
            attempt.finished = True
            self._cleanup_quietly(attempt)
            retry = self._new_attempt(task, attempt.number + 1)
            try:
                run_blocking(self._start_async(retry))  # on a thread of the completions' pool
            except Exception as exc:
                self._cleanup_quietly(retry)
                task.future.finish(exception=exc)
            return
        self._finish(attempt, outcome)

    def outcome_overdue(self, attempt: Attempt) -> None:
        """Pool thread: no outcome by the function's own timeout plus :data:`JANITOR_GRACE`
        (its storage unreachable all that time, say). The task ends as a timed-out one
        (:class:`~lambdarun.errors.TaskTimeoutError`), if its deadline has not ended it yet."""
        if attempt.task.future.done():
            return
        log.warning("no outcome of an asynchronous attempt by the function's timeout",
                    task_id=attempt.task.id, attempt=attempt.number)
        self._time_out(attempt.task)

    def _janitor_deadline(self, attempt: Attempt) -> float:
        return attempt.started + MAX_TIMEOUT + JANITOR_GRACE
