"""At most one run per call attempt: claims.

Every call carries a task id and an attempt number (:func:`lambdarun.calls.encode_call`).
Before the function runs, the Lambda side *claims* that attempt with one atomic conditional
write (:meth:`lambdarun.types.Storage.create`: S3 ``PutObject`` with ``If-None-Match: *``, a
directory's ``O_EXCL``/``link``). Only the delivery whose create succeeded runs the function;
when it finishes it stores its outcome with the claim. Any other delivery of the same
attempt (botocore or a proxy re-sending the Invoke, a replayed envelope) never runs the
function again: it returns the first delivery's outcome, waits for it (bounded by its own
remaining time), or answers with a typed error (:class:`~lambdarun.errors.AttemptInProgressError`,
:class:`~lambdarun.errors.AttemptCompletedError`, both
:class:`~lambdarun.errors.DuplicateDeliveryError`).

Retries are new attempts, recorded as such: the caller's (attempt number + 1), a runner's
own numbering (a Temporal activity's attempt, ``execute_call(attempt=...)``), and Lambda's
own retry of an ``Event`` after a function error. Lambda retries an Event with the *same*
request id and only after the delivery ended in error; a delivery whose request id is the
claim holder's while the claim shows no outcome is therefore Lambda's retry N: it claims
``<attempt>.r<N>`` and runs, and its outcome carries ``lambda_retry: N``. (Covalent's
asynchronous tasks turn Lambda's retries off: its ``retries`` are its own.)

Semantics follow aws-lambda-powertools' idempotency records (in progress / completed, with
an expiry), with one deliberate difference: an in-progress claim is never taken over after
a time-out (powertools re-runs once its ``in_progress_expiration`` passes); only a new
attempt, as above, runs again.

A claim is the object ``lambdarun-claims/<hour>/<task id>-<attempt>`` (``<hour>``: the UTC
hour the call was issued, ``YYYYMMDDHH`` from the call's ``issued_at``; created once, never
rewritten), one JSON line::

    {"state": "claimed", "task_id": ..., "attempt": n, "request_id": ...,
     "claimed_at": epoch s, "expires": epoch s, "digest": null}

Completion writes ``<claim>.outcome`` (the same header with ``"state": "completed"`` and the
outcome's sha256 ``digest``, then the outcome envelope). The caller *releases* the attempt
once it has the outcome: ``<claim>.released`` (a tombstone) is written and the outcome
deleted, so a late duplicate still cannot run it (in batches, off the caller's hot path:
:mod:`lambdarun.claim_release`). :meth:`ClaimStore.sweep` deletes the
hour buckets past the TTL, a listing per bucket, no reads.

Where the records live: ``claims_url`` (config key / ``LAMBDARUN_CLAIMS_URL``), else the
target's own claim store (``target.claims_url()``, optional: the local target keeps them in
a 0700 directory of its state folder that caller and functions share, so a claim costs a few
file operations instead of S3 round trips), else the scratch storage (``storage_url``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.envelope import ISSUED
from lambdarun.errors import (
    AttemptCompletedError,
    AttemptInProgressError,
    StorageError,
    StorageKeyError,
    TargetError,
)

if TYPE_CHECKING:
    from lambdarun.session import Session
    from lambdarun.types import Storage

__all__ = [
    "CLAIMS_PREFIX",
    "CLAIM_TTL",
    "CLAIMS_URL_VAR",
    "ClaimRecord",
    "ClaimStore",
    "AttemptGuard",
    "claims_url",
    "claim_store",
    "claims_environment",
    "sweep_local",
]

log = structlog.get_logger(__name__)

#: every claim record lives under this key prefix of its store
CLAIMS_PREFIX = "lambdarun-claims"
#: seconds a claim record is kept (longer than any function runs, and than a call envelope
#: is accepted), so a late duplicate of an attempt still finds it
CLAIM_TTL = 24 * 3600
#: the function's environment variable naming the claim store
CLAIMS_URL_VAR = "LAMBDARUN_CLAIMS_URL"

CLAIMED, COMPLETED, RELEASED = "claimed", "completed", "released"
#: the objects next to a claim: its outcome once completed, its tombstone once released
OUTCOME_SUFFIX, RELEASED_SUFFIX = ".outcome", ".released"
#: claim buckets: the UTC hour a call was issued; calls without an issue time share one
_HOUR, UNDATED = "%Y%m%d%H", "undated"
_TASK_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
#: polling of a running first delivery by a duplicate: first and largest interval (s)
_POLL_FIRST, _POLL_MAX = 0.01, 0.25
#: Lambda retries an Event at most twice; more retry claims than this are not Lambda's
_MAX_LAMBDA_RETRIES = 5


@attrs.frozen
class ClaimRecord:
    """One attempt's claim as stored."""

    state: str
    task_id: str
    attempt: int
    request_id: str | None = None
    claimed_at: float = 0.0
    expires: float = 0.0
    digest: str | None = None

    def header(self) -> bytes:
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode() + b"\n"


def _bucket(issued_at: float | None) -> str:
    if issued_at is None:
        return UNDATED
    if isinstance(issued_at, bool) or not isinstance(issued_at, (int, float)) or not 0 < issued_at < 32503680000:
        raise StorageError(f"invalid issue time {issued_at!r} for a claim")
    return time.strftime(_HOUR, time.gmtime(issued_at))


def _parse(data: bytes) -> tuple[ClaimRecord, bytes]:
    head, _, body = data.partition(b"\n")
    try:
        doc = json.loads(head)
        record = ClaimRecord(**{f.name: doc.get(f.name) for f in attrs.fields(ClaimRecord) if f.name in doc})
    except (ValueError, TypeError) as exc:
        raise StorageError(f"unreadable claim record ({exc}); delete it to re-enable the attempt") from exc
    return record, body


class ClaimStore:
    """Claim records of call attempts in one :class:`~lambdarun.types.Storage`."""

    def __init__(self, storage: Storage, *, ttl: float = CLAIM_TTL) -> None:
        if not callable(getattr(storage, "create", None)):
            raise StorageError(
                f"storage {storage.url!r} has no create(key, data) (conditional create): it "
                "cannot hold claims; use a file:// or s3:// claims_url"
            )
        self.storage = storage
        self.ttl = ttl

    @property
    def url(self) -> str:
        return self.storage.url

    @staticmethod
    def key(task_id: str, attempt: int, issued_at: float | None = None, retry: int = 0) -> str:
        """``lambdarun-claims/<hour the call was issued, UTC>/<task id>-<attempt>[.r<retry>]``:
        both sides derive it from the call (``retry``: Lambda's own retry N of an Event), and
        expired claims go by whole hours (:meth:`sweep`)."""
        if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
            raise StorageError(f"invalid task id {task_id!r} for a claim: use [A-Za-z0-9._-], 1-200 characters")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise StorageError(f"invalid attempt number {attempt!r} for a claim: use an integer >= 1")
        suffix = f".r{retry}" if retry else ""
        return f"{CLAIMS_PREFIX}/{_bucket(issued_at)}/{task_id}-{attempt}{suffix}"

    def claim(self, task_id: str, attempt: int, *, request_id: str | None = None,
              issued_at: float | None = None, retry: int = 0) -> ClaimRecord | None:
        """Claim the attempt: None when this delivery got it (run the function), else the
        record already there (do not run)."""
        now = time.time()
        record = ClaimRecord(CLAIMED, task_id, attempt, request_id, now, now + self.ttl)
        key = self.key(task_id, attempt, issued_at, retry)
        if self.storage.create(key, record.header()):
            return None
        found = self.read(task_id, attempt, issued_at=issued_at, retry=retry)
        if found is None:  # deleted in between (swept): still not ours to run
            return ClaimRecord(RELEASED, task_id, attempt, None, 0.0, 0.0)
        return found[0]

    def complete(self, task_id: str, attempt: int, outcome: bytes, *, request_id: str | None = None,
                 claimed_at: float = 0.0, issued_at: float | None = None, retry: int = 0) -> None:
        """Store the outcome of the delivery that holds the claim (a new object next to the
        claim: never a rewrite of an existing one, which costs a flush on some filesystems)."""
        now = time.time()
        record = ClaimRecord(
            COMPLETED, task_id, attempt, request_id, claimed_at or now, now + self.ttl,
            hashlib.sha256(outcome).hexdigest(),
        )
        self.storage.put(self.key(task_id, attempt, issued_at, retry) + OUTCOME_SUFFIX, record.header() + outcome)

    def read(self, task_id: str, attempt: int, *, issued_at: float | None = None, retry: int = 0
             ) -> tuple[ClaimRecord, bytes | None] | None:
        """The record and, when completed, the outcome (digest checked); None when absent."""
        key = self.key(task_id, attempt, issued_at, retry)
        try:
            record, _ = _parse(self.storage.get(key))
        except StorageKeyError:
            return None
        for suffix in (RELEASED_SUFFIX, OUTCOME_SUFFIX):
            try:
                data = self.storage.get(key + suffix)
            except StorageKeyError:
                continue
            found, body = _parse(data)
            if found.state != COMPLETED:
                return found, None
            if hashlib.sha256(body).hexdigest() != found.digest:
                raise StorageError(
                    f"the stored outcome of task {task_id} attempt {attempt} does not match its "
                    "digest (truncated or tampered); refusing it"
                )
            return found, body
        return record, None

    def release(self, task_id: str, attempt: int, *, issued_at: float | None = None) -> None:
        """The caller has the outcome: drop it, keep a tombstone until the record expires."""
        self.release_many([(task_id, attempt, issued_at)])

    def release_many(self, attempts: Iterable[tuple[str, int, float | None]]) -> None:
        """:meth:`release` of several ``(task id, attempt, issued_at)``: a tombstone each, then
        their outcomes deleted in one ``delete`` (S3: one ``DeleteObjects`` per 1,000 keys)."""
        now = time.time()
        outcomes: list[str] = []
        for task_id, attempt, issued_at in attempts:
            key = self.key(task_id, attempt, issued_at)
            tombstone = ClaimRecord(RELEASED, task_id, attempt, None, now, now + self.ttl)
            self.storage.put(key + RELEASED_SUFFIX, tombstone.header())
            outcomes.append(key + OUTCOME_SUFFIX)
        if outcomes:
            self.storage.delete(outcomes)

    def sweep(self, now: float | None = None, *, hours: int = 24 * 7) -> int:
        """Delete expired claims with their outcome and tombstone; returns how many objects.

        Dated claims go by whole hour buckets past the TTL (one listing per bucket of the
        ``hours`` before the cut-off, no reads); undated ones (calls without an issue time)
        by the ``expires`` of each record."""
        now = time.time() if now is None else now
        cutoff = now - self.ttl - 3600  # a bucket is over once its last hour is past the TTL
        doomed: list[str] = []
        for back in range(hours):
            doomed.extend(self.storage.list(f"{CLAIMS_PREFIX}/{_bucket(cutoff - back * 3600)}/"))
        undated = self.storage.list(f"{CLAIMS_PREFIX}/{UNDATED}/")
        present = set(undated)
        for key in undated:
            if key.endswith((OUTCOME_SUFFIX, RELEASED_SUFFIX)):
                continue
            try:
                record, _ = _parse(self.storage.get(key))
            except (StorageKeyError, StorageError):
                continue
            if record.expires and record.expires <= now:
                doomed.extend(k for k in (key, key + OUTCOME_SUFFIX, key + RELEASED_SUFFIX) if k in present)
        if doomed:
            self.storage.delete(doomed)
        return len(doomed)


# --------------------------------------------------------------------------------------
# where the claims live
# --------------------------------------------------------------------------------------


def claims_url(session: Session, *, configured_only: bool = False) -> str | None:
    """The claim store's URL for ``session``, or None when there is none.

    ``claims_url``, else the target's claim store, else the scratch storage. The Lambda side
    passes ``configured_only``: it uses what its environment configures (``claims_url`` /
    ``storage_url``, set by the caller when it created the function), never starts a target.
    """
    settings = session.settings
    url = getattr(settings, "claims_url", None)
    if url:
        return url
    if configured_only:
        return settings.storage_url or None
    target_store = getattr(session.target, "claims_url", None)
    if callable(target_store):
        url = target_store()
        if url:
            return url
    if settings.storage_url:
        return settings.storage_url
    try:
        return session.target.default_storage_url()
    except TargetError:
        return None


_stores: weakref.WeakKeyDictionary[Any, dict[bool, ClaimStore | None]] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()
_warned = False


def claim_store(session: Session, *, configured_only: bool = False) -> ClaimStore | None:
    """The session's claim store (opened once per session), or None when it has none."""
    global _warned
    with _stores_lock:
        cached = _stores.get(session, {})
        if configured_only in cached:
            return cached[configured_only]
    url = claims_url(session, configured_only=configured_only)
    store = ClaimStore(session.storage(url)) if url else None
    if store is None and not _warned:
        _warned = True
        log.warning(
            "no claim store: calls run without an at-most-once claim; set claims_url (or "
            "storage_url) so a re-delivered call cannot run twice"
        )
    with _stores_lock:
        _stores.setdefault(session, {})[configured_only] = store
    return store


def claims_environment(session: Session) -> dict[str, str]:
    """What a function needs in its environment to find the caller's claim store."""
    url = claims_url(session)
    return {CLAIMS_URL_VAR: url} if url else {}


def sweep_local(session: Session) -> int:
    """Delete the expired claims of a claim store on this machine (``file://``: cheap to
    list); stores elsewhere (S3) expire them with a lifecycle rule on ``lambdarun-claims/``.
    Never raises; returns how many were deleted."""
    try:
        url = claims_url(session)
        if not url or not url.startswith("file:"):
            return 0
        store = claim_store(session)
        return store.sweep() if store is not None else 0
    except Exception as exc:
        log.debug("could not sweep expired claims", error=str(exc))
        return 0


# --------------------------------------------------------------------------------------
# the Lambda side: one delivery of one call
# --------------------------------------------------------------------------------------


class AttemptGuard:
    """One delivery of a call on the Lambda side (used by :func:`lambdarun.calls.execute_call`).

    :meth:`claim` returns None when this delivery may run the function, or the outcome
    envelope to answer with instead; :meth:`finish` stores the outcome with the claim.

    :param deadline: ``time.monotonic()`` by which this delivery must answer (from the
        Lambda context's remaining time); a duplicate waits for the first delivery's outcome
        until then. None: do not wait.
    :param request_id: the Lambda request id of this delivery (Lambda's own retries of an
        Event keep the request id: such a retry is recognised and never runs the function).
    :param attempt: the attempt number to claim instead of the envelope's (a runner that
        numbers its own retries, e.g. Temporal's activity attempt).
    :param pack_failure: builds the outcome envelope of a refused duplicate
        (``pack_failure(session, exc, meta=...)``, :func:`lambdarun.calls.pack_failure`); given
        by the caller, so claims know nothing of the outcome's format.
    """

    def __init__(self, session: Session, *, pack_failure: Callable[..., bytes], deadline: float | None = None,
                 request_id: str | None = None, attempt: int | None = None) -> None:
        self.session = session
        self.pack_failure = pack_failure
        self.attempt_override = attempt
        self.deadline = deadline
        self.request_id = request_id
        self.store: ClaimStore | None = None
        self.task_id: str | None = None
        self.attempt: int | None = None
        self.issued_at: float | None = None
        self.retry = 0
        self.claimed_at = 0.0

    def claim(self, meta: dict[str, Any]) -> bytes | None:
        task_id = meta.get("task_id")
        attempt = self.attempt_override if self.attempt_override is not None else meta.get("attempt", 1)
        if task_id is None:
            return None  # a call without identity (an older client): nothing to claim
        store = claim_store(self.session, configured_only=True)
        if store is None:
            return None
        self.claimed_at = time.time()
        issued_at = meta.get(ISSUED)  # the signed issue time of the call envelope
        retry = 0
        while True:
            existing = store.claim(task_id, attempt, request_id=self.request_id, issued_at=issued_at, retry=retry)
            if existing is None:
                self.store, self.task_id, self.attempt, self.issued_at = store, task_id, attempt, issued_at
                self.retry = retry
                if retry:
                    log.info("Lambda retried the call's request: running it as a new attempt", task_id=task_id,
                             attempt=attempt, lambda_retry=retry, request_id=self.request_id)
                return None
            if (existing.state == CLAIMED and self.request_id and existing.request_id == self.request_id
                    and retry < _MAX_LAMBDA_RETRIES):
                # Lambda retries an Event only after the delivery ended in error (its environment
                # died, or it timed out) with no outcome recorded: Lambda's own retry N is a new
                # attempt, claimed as "<attempt>.r<N>" and recorded in the outcome
                retry += 1
                continue
            break
        log.warning("duplicate delivery of a call attempt: not run again", task_id=task_id, attempt=attempt,
                    lambda_retry=retry, state=existing.state, request_id=self.request_id,
                    first_request_id=existing.request_id)
        return self._answer_duplicate(store, existing, task_id, attempt, issued_at, retry)

    def _answer_duplicate(self, store: ClaimStore, record: ClaimRecord, task_id: str, attempt: int,
                          issued_at: float | None, retry: int = 0) -> bytes:
        pack_failure = self.pack_failure
        meta = {"task_id": task_id, "attempt": attempt, "duplicate": True}
        interval = _POLL_FIRST
        while record.state == CLAIMED:
            remaining = None if self.deadline is None else self.deadline - time.monotonic()
            if remaining is None or remaining <= 0:
                return pack_failure(self.session, AttemptInProgressError(
                    f"task {task_id} attempt {attempt} is already running in another delivery "
                    f"(request {record.request_id}) and did not finish while this duplicate could wait; "
                    "it runs at most once. Wait for the first delivery's outcome, or submit the call "
                    "again (a new attempt) if running it twice is safe."), meta=meta)
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, _POLL_MAX)
            found = store.read(task_id, attempt, issued_at=issued_at, retry=retry)
            if found is None:
                break
            record, body = found
            if body is not None:
                return body
        if record.state == COMPLETED:
            found = store.read(task_id, attempt, issued_at=issued_at, retry=retry)
            if found is not None and found[1] is not None:
                return found[1]
        return pack_failure(self.session, AttemptCompletedError(
            f"task {task_id} attempt {attempt} already ran and its outcome was delivered; a late "
            "duplicate delivery does not run it again"), meta=meta)

    def finish(self, outcome: bytes) -> bytes:
        """Store the outcome with the claim (when this delivery holds one); returns it."""
        if self.store is not None and self.task_id is not None and self.attempt is not None:
            try:
                self.store.complete(self.task_id, self.attempt, outcome, request_id=self.request_id,
                                    claimed_at=self.claimed_at, issued_at=self.issued_at, retry=self.retry)
            except Exception:
                # the caller still gets this outcome in the response; only a duplicate would miss it
                log.warning("could not store the outcome with the claim", task_id=self.task_id,
                            attempt=self.attempt, exc_info=True)
        return outcome
