"""Synchronous attempts of the ``covalent`` backend: the Invoke request of one attempt (the
call inline or by reference, :mod:`lambdarun.protocol`) and its reply (the outcome inline or
stored), re-delivered when the answer was lost.

A part of :class:`~lambdarun_covalent.backend.CovalentBackend` (a mixin it inherits).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.calls import decode_outcome, encode_call
from lambdarun.errors import EnvelopeError, InvocationOutcomeUnknownError, StorageError
from lambdarun.limits import ASYNC_PAYLOAD_LIMIT
from lambdarun.protocol import build_call_event, inline_fits, inline_limit_for, parse_reply
from lambdarun.types import InvocationType

from lambdarun_covalent.remote_errors import environment_error
from lambdarun_covalent.runtime import TASK_FIELD
from lambdarun_covalent.versions import check_versions

if TYPE_CHECKING:
    from lambdarun.calls import Outcome
    from lambdarun.session import Session
    from lambdarun.types import Storage

    from lambdarun_covalent.config import CovalentConfig
    from lambdarun_covalent.engine import Engine
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
        task = attempt.task
        envelope = encode_call(
            self.runtime_session, task.func, task.args, task.kwargs, task_id=task.id, attempt=attempt.number,
            issued_at=attempt.issued_at,
        )
        limit = self.config.inline_limit
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
            return json.dumps(build_call_event(call=envelope, **fields)).encode()
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
        return json.dumps(build_call_event(call_url=storage.url_for(attempt.call_key), **fields)).encode()

    def _client_context(self, attempt: Attempt) -> dict[str, Any]:
        # lets a target that can stop one invocation find ours (see _stop_remote)
        return {"custom": {"lambdarun_attempt": attempt.id}}

    def _attempt_sync(self, attempt: Attempt) -> Outcome:
        check_versions(self.runtime_session, self.function_name)  # once per function and process
        payload = self._event(attempt)
        attempt.invoked = True
        for delivery in range(1, REDELIVERIES + 2):
            try:
                response = self.runtime_session.invoker.invoke(
                    self.function_name,
                    payload,
                    invocation_type=InvocationType.REQUEST_RESPONSE,
                    client_context=self._client_context(attempt),
                )
                break
            except InvocationOutcomeUnknownError as exc:
                # the request reached Lambda and the answer was lost: re-deliver the *same*
                # attempt; its claim runs it at most once and hands back the first outcome
                if delivery > REDELIVERIES or attempt.task.future.done():
                    raise
                log.info("re-delivering a call attempt whose answer was lost", task_id=attempt.task.id,
                         attempt=attempt.number, delivery=delivery + 1, error=str(exc))
                time.sleep(min(0.05 * 2**delivery, 1.0))
        if response.request_id:  # the dashboard links the task to its invocation
            attempt.task.future.info["request_id"] = response.request_id
        if response.function_error:
            attempt.outcome_stored = None
            raise environment_error(response.payload, attempt)
        reply = parse_reply(response.payload, function_name=self.function_name)
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
