"""Synchronous attempts of the ``covalent`` backend: the Invoke request of one attempt (the
call inline or by reference, :mod:`lambdarun.protocol`) and its reply (the outcome inline or
stored), re-delivered when the answer was lost.

The attempts are flows (:mod:`lambdarun_covalent.engine`): ``_attempt_sync``,
``_attempt_batch`` and ``_deliver`` are generators that ``yield`` the Invoke's future
(``invoker.invoke_async``) and the backoff of a re-delivery (:func:`~lambdarun_covalent.tasks.after`)
and are resumed with the response, or have the invoke's typed error thrown in: no thread
waits for an Invoke in flight.

A part of :class:`~lambdarun_covalent.backend.CovalentBackend` (a mixin it inherits).
"""

from __future__ import annotations

import concurrent.futures
import json
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.calls import decode_outcome, encode_call
from lambdarun.errors import (
    EnvelopeError,
    InvocationOutcomeUnknownError,
    LambdarunError,
    RemoteEnvironmentError,
    StorageError,
)
from lambdarun.limits import ASYNC_PAYLOAD_LIMIT
from lambdarun.protocol import (
    EVENT_OVERHEAD,
    Reply,
    build_batch_event,
    build_call_event,
    inline_fits,
    inline_limit_for,
    parse_batch_reply,
    parse_reply,
)
from lambdarun.types import InvocationType

from lambdarun_covalent.remote_errors import environment_error
from lambdarun_covalent.runtime import TASK_FIELD
from lambdarun_covalent.tasks import after
from lambdarun_covalent.versions import check_versions

if TYPE_CHECKING:
    from lambdarun.calls import Outcome
    from lambdarun.session import Session
    from lambdarun.types import Storage

    from lambdarun_covalent.config import CovalentConfig
    from lambdarun_covalent.engine import Engine, Flow
    from lambdarun_covalent.tasks import Attempt

log = structlog.get_logger(__name__)

#: how many times a synchronous attempt whose answer was lost (connection dropped after the
#: Invoke was sent) is re-delivered; the claim keeps it to one run
REDELIVERIES = 3

__all__ = ["SyncAttempts", "REDELIVERIES"]


class SyncAttempts:
    """The request/response half of the backend."""

    # provided by CovalentBackend
    runtime_session: Session
    config: CovalentConfig
    function_name: str
    storage: Storage
    storage_url: str
    engine: Engine

    # -- request and response ------------------------------------------------------------------

    def _event(self, attempt: Attempt) -> bytes:
        """The invoke payload; the call goes by reference when it is over the inline limit."""
        return json.dumps(self._call_event(attempt, self.config.inline_limit)).encode()

    def _call_event(self, attempt: Attempt, limit: int) -> dict[str, Any]:
        """The call event of an attempt whose request and reply get ``limit`` bytes."""
        task = attempt.task
        envelope = encode_call(
            self.runtime_session, task.func, task.args, task.kwargs, task_id=task.id, attempt=attempt.number,
            issued_at=attempt.issued_at,
        )
        if attempt.mode is InvocationType.EVENT:
            limit = min(limit, ASYNC_PAYLOAD_LIMIT)
        storage = self.storage
        fields: dict[str, Any] = {
            "result_url": storage.url_for(attempt.outcome_key),
            # the outcome comes back inline when its base64 still fits the limit
            "inline_limit": inline_limit_for(limit),
            "always_store": attempt.mode is InvocationType.EVENT,
            "extra": {TASK_FIELD: {"task_id": task.id, "attempt": attempt.number}},
        }
        if inline_fits(envelope, limit):
            return build_call_event(call=envelope, **fields)
        attempt.spilled = True
        try:
            storage.put(attempt.call_key, envelope)
        except Exception as exc:
            raise StorageError(
                f"could not store the {len(envelope)}-byte call of task {task.id} at "
                f"{storage.url_for(attempt.call_key)} ({type(exc).__name__}: {exc}); create the "
                "bucket, or point [covalent] s3_bucket_name / the core storage_url at one "
                "this process and the function can read and write"
            ) from exc
        return build_call_event(call_url=storage.url_for(attempt.call_key), **fields)

    def _client_context(self, attempt: Attempt) -> dict[str, Any]:
        # lets a target that can stop one invocation find ours (see _stop_remote)
        return {"custom": {"lambdarun_attempt": attempt.id}}

    def _attempt_sync(self, attempt: Attempt) -> Flow:
        """Flow: the outcome of one synchronous attempt."""
        check_versions(self.runtime_session, self.function_name)  # once per function and process
        payload = self._event(attempt)
        response = yield from self._deliver(payload, [attempt])
        if response.function_error:
            attempt.outcome_stored = None
            raise environment_error(response.payload, attempt)
        reply = parse_reply(response.payload, function_name=self.function_name)
        return self._outcome_of(attempt, reply)

    def _attempt_batch(self, attempts: list[Attempt]) -> Flow:
        """Flow: one invocation for several synchronous attempts; the outcome (or the failure)
        of each, in order (``list[Outcome | BaseException]``). Each call gets an equal share of
        the inline limit, so the request and the reply stay within it (a larger call or
        outcome goes through storage)."""
        check_versions(self.runtime_session, self.function_name)
        share = max(EVENT_OVERHEAD * 2, self.config.inline_limit // len(attempts))
        events: list[dict[str, Any]] = []
        results: list[Outcome | BaseException | None] = []
        for attempt in attempts:
            try:
                events.append(self._call_event(attempt, share))
                results.append(None)
            except BaseException as exc:  # noqa: BLE001 - e.g. an unpicklable argument: this task only
                results.append(exc)
        sent = [a for a, r in zip(attempts, results) if r is None]
        if not sent:
            return results  # type: ignore[return-value]
        payload = json.dumps(build_batch_event(events)).encode()
        response = yield from self._deliver(payload, sent)
        if response.function_error:
            for attempt in sent:
                attempt.outcome_stored = None
            error = environment_error(response.payload, sent[0])
            return [error if r is None else r for r in results]  # type: ignore[misc]
        replies = iter(parse_batch_reply(response.payload, function_name=self.function_name, count=len(sent)))
        out: list[Outcome | BaseException] = []
        for attempt, result in zip(attempts, results):
            if result is not None:
                out.append(result)
                continue
            try:
                out.append(self._outcome_of(attempt, next(replies)))
            except BaseException as exc:  # noqa: BLE001 - this task's answer is bad; the others stand
                out.append(exc)
        return out

    def _deliver(self, payload: bytes, attempts: list[Attempt]) -> Flow:
        """Flow: invoke with ``payload`` (the response), re-delivering it when the answer was
        lost; the backoff between deliveries is waited for on the deadline thread."""
        first = attempts[0]
        for attempt in attempts:
            attempt.invoked = True
        for delivery in range(1, REDELIVERIES + 2):
            try:
                response = yield from self._invoke(payload, InvocationType.REQUEST_RESPONSE, first)
                break
            except InvocationOutcomeUnknownError as exc:
                # the request reached Lambda and the answer was lost: re-deliver the *same*
                # attempts; their claims run each at most once and hand back the first outcome
                if delivery > REDELIVERIES or all(a.task.future.done() for a in attempts):
                    raise
                log.info("re-delivering call attempts whose answer was lost", task_ids=[a.task.id for a in attempts],
                         delivery=delivery + 1, error=str(exc))
                yield after(min(0.05 * 2**delivery, 1.0))
        if response.request_id:  # the dashboard links the task to its invocation
            for attempt in attempts:
                attempt.task.future.info["request_id"] = response.request_id
        return response

    def _invoke(self, payload: bytes, invocation_type: InvocationType, attempt: Attempt) -> Flow:
        """Flow: one Invoke in flight (``invoker.invoke_async``): its response, or the typed
        error ``invoker.invoke`` raises. An invoke the invoker dropped because it was closed
        fails with a :class:`~lambdarun.errors.LambdarunError`."""
        handle = self.runtime_session.invoker.invoke_async(
            self.function_name,
            payload,
            invocation_type=invocation_type,
            client_context=self._client_context(attempt),
        )
        try:
            return (yield handle.future)
        except concurrent.futures.CancelledError:
            raise LambdarunError(
                f"the invoke of task {attempt.task.id} was dropped: the session's invoker was closed "
                "(if it had been sent, the function may have run); use an open lambdarun Session"
            ) from None

    def _outcome_of(self, attempt: Attempt, reply: Reply) -> Outcome:
        if reply.refused is not None:
            attempt.outcome_stored = None
            kind, message = reply.refused
            raise RemoteEnvironmentError(
                f"the Lambda function refused the call of task {attempt.task.id} in a batch before "
                f"it ran ({kind}: {message})",
                original_type=kind,
            )
        if reply.outcome is not None:
            attempt.outcome_stored = False
            data = reply.outcome
        else:
            attempt.outcome_stored = True
            expected = self.storage.url_for(attempt.outcome_key)
            if reply.outcome_url != expected:
                raise EnvelopeError(
                    f"the function stored its outcome at {reply.outcome_url!r}, not at this "
                    f"attempt's {expected!r}; refusing a result that may belong to another run"
                )
            data = self.storage.get(attempt.outcome_key)
        attempt.task.future.info["result_bytes"] = len(data)  # the outcome envelope, for the run journal
        return self._decode(attempt, data)

    def _decode(self, attempt: Attempt, data: bytes) -> Outcome:
        # signature, age, task id and attempt are checked before anything is unpickled
        return decode_outcome(self.runtime_session, data, task_id=attempt.task.id, attempt=attempt.number)
