"""The ``covalent`` backend: ship one call to Lambda, get its outcome back.

One task, end to end::

    encode_call(f, args, kwargs, meta={task_id, attempt})
      -> fits inline_limit?  inline in the Invoke request  : stored at <attempt>/call, sent by URL
      -> short task:  synchronous invoke; the outcome comes back in the response, or at
                      <attempt>/outcome when it is larger than inline_limit
         long task:   asynchronous (Event) invoke; the runtime always stores
                      <attempt>/outcome, found by one LIST per prefix per round (adaptive backoff)
      -> outcome verified to belong to this task and attempt, decoded: value, or the
         function's own exception type with the remote traceback, plus stdout/stderr
      -> every object of the attempt deleted (unless keep_objects)

Every attempt has a fresh prefix ``lambdarun-covalent/<run>/<task>-<attempt>-<random>/``,
so a re-run can never read an earlier run's result.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from lambdarun.backends import Backend
from lambdarun.calls import decode_outcome, encode_call
from lambdarun.claims import claims_environment
from lambdarun.claims import release as release_claim
from lambdarun.claims import sweep_local as sweep_claims
from lambdarun.errors import (
    DuplicateDeliveryError,
    EnvelopeError,
    FunctionNotFoundError,
    InvocationError,
    InvocationOutcomeUnknownError,
    LambdarunError,
    PayloadTooLargeError,
    RemoteEnvironmentError,
    StorageError,
    TargetError,
    TaskTimeoutError,
)
from lambdarun.futures import LambdaFuture
from lambdarun.limits import ASYNC_PAYLOAD_LIMIT
from lambdarun.protocol import build_call_event, inline_fits, inline_limit_for, parse_reply
from lambdarun.types import FunctionSpec, InvocationType, InvokeHandle, StorageHandle

from lambdarun_covalent.config import DEFAULT_BUCKET, MAX_TIMEOUT, CovalentConfig
from lambdarun_covalent.runtime import TASK_FIELD
from lambdarun_covalent.versions import check_versions

if TYPE_CHECKING:
    from lambdarun.calls import Outcome
    from lambdarun.session import Session
    from lambdarun.types import Storage, Target

__all__ = ["CovalentBackend", "KEY_ROOT", "lookup_task"]

log = structlog.get_logger(__name__)

#: every object this backend writes lives under this key prefix of its storage
KEY_ROOT = "lambdarun-covalent"
#: how long after a cancelled/timed-out asynchronous attempt we still watch for its late
#: outcome object, to delete it (the function's own timeout bounds it)
_JANITOR_GRACE = 5.0
#: how many times a synchronous attempt whose answer was lost (connection dropped after the
#: Invoke was sent) is re-delivered; the claim keeps it to one run
_REDELIVERIES = 3


# --------------------------------------------------------------------------------------
# deadlines: one thread for the whole process
# --------------------------------------------------------------------------------------


class _Deadlines:
    """Calls a callback when its deadline passes; one daemon thread, a heap of deadlines.

    Removed deadlines drop their callback at once (it may hold a task and its arguments);
    their heap entries are compacted away when they outnumber the live ones.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, when: float, callback: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._counter)
            self._callbacks[token] = callback
            heapq.heappush(self._heap, (when, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lambdarun-covalent-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def remove(self, token: int | None) -> None:
        if token is None:
            return
        with self._cond:
            if self._callbacks.pop(token, None) is not None and len(self._heap) > 2 * len(self._callbacks) + 1024:
                self._heap = [entry for entry in self._heap if entry[1] in self._callbacks]
                heapq.heapify(self._heap)

    def __len__(self) -> int:
        with self._cond:
            return len(self._callbacks)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    when, token = self._heap[0]
                    now = time.monotonic()
                    if when <= now:
                        heapq.heappop(self._heap)
                        callback = self._callbacks.pop(token)
                        break
                    self._cond.wait(when - now)
            try:
                callback()
            except Exception:  # a deadline callback must never kill the thread
                log.warning("deadline callback failed", exc_info=True)


_deadlines = _Deadlines()

#: in-flight tasks of this process by task id (for Covalent's cancel(job_handle) and get_status)
_tasks: weakref.WeakValueDictionary[str, _Task] = weakref.WeakValueDictionary()


def lookup_task(task_id: str) -> _Task | None:
    """The in-flight task with this id in this process, if any."""
    return _tasks.get(task_id)


# --------------------------------------------------------------------------------------
# tasks and attempts
# --------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Attempt:
    task: _Task
    number: int
    prefix: str  # "<run prefix><task>-<n>-<random>/"
    mode: InvocationType
    spilled: bool = False
    outcome_stored: bool | None = None  # None: unknown (delete to be sure)
    started: float = attrs.field(factory=time.monotonic)
    #: epoch seconds carried in the call (files its claim, see lambdarun.claims)
    issued_at: int = attrs.field(factory=lambda: int(time.time()))
    invoked: bool = False  # the invoke request was accepted (Event) or sent (sync)
    finished: bool = False

    @property
    def id(self) -> str:
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]

    @property
    def call_key(self) -> str:
        return self.prefix + "call"

    @property
    def outcome_key(self) -> str:
        return self.prefix + "outcome"


@attrs.define(eq=False)
class _Task:
    id: str
    backend: CovalentBackend
    func: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    future: LambdaFuture
    timeout: float
    mode: InvocationType
    attempt: _Attempt | None = None
    deadline_token: int | None = None
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def status(self) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED or CANCELLED."""
        fut = self.future
        if fut.cancelled():
            return "CANCELLED"
        if fut.done():
            return "FAILED" if fut.exception() is not None else "COMPLETED"
        return "RUNNING" if fut.running() else "PENDING"

    def release(self) -> None:
        """The task ended: drop its deadline and its arguments (which may be large)."""
        _deadlines.remove(self.deadline_token)
        self.args, self.kwargs = (), {}

    def handle(self) -> dict[str, Any]:
        """A JSON-serializable handle (what Covalent stores with ``set_job_handle``)."""
        attempt = self.attempt
        return {
            "task_id": self.id,
            "function_name": self.backend.function_name,
            "attempt": attempt.number if attempt else 0,
            "prefix": attempt.prefix if attempt else None,
            "storage_url": self.backend.storage_url if attempt else None,
        }


# --------------------------------------------------------------------------------------
# the engine: threads shared by every backend instance on one target
# --------------------------------------------------------------------------------------


class _Engine:
    """Thread pool and asynchronous-completion watcher shared by the backends of a target.

    Sessions derived with call options (``lambdarun.run(..., options=...)``) get their own
    backend instance but share the target, hence the engine: no thread pool per call.
    """

    def __init__(self, workers: int, poller: Any) -> None:
        self.workers = workers
        self.poller = poller
        self._pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        # asynchronous attempts being watched: handle -> (attempt, janitor_deadline or None)
        self._watched: dict[StorageHandle, tuple[_Attempt, float | None]] = {}
        self._wake: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._watcher: threading.Thread | None = None
        self._closing = False
        self._closed = False

    @property
    def closing(self) -> bool:
        """Closed or closing: a backend needing an engine makes a new one."""
        return self._closing

    def pool(self, size: int | None = None) -> concurrent.futures.ThreadPoolExecutor:
        size = size or self.workers
        with self._lock:
            pool = self._pools.get(size)
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=size, thread_name_prefix="lambdarun-covalent"
                )
                self._pools[size] = pool
            return pool

    # -- asynchronous attempts ------------------------------------------------------------

    def watch(self, handle: StorageHandle, attempt: _Attempt, janitor_until: float | None = None) -> None:
        with self._lock:
            self._watched[handle] = (attempt, janitor_until)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch_loop, name="lambdarun-covalent-watch", daemon=True)
                self._watcher.start()
            self._wake_up_locked()

    def watching(self) -> int:
        """How many asynchronous attempts (running, or cancelled and awaiting clean-up) are watched."""
        with self._lock:
            return len(self._watched)

    def unwatch(self, handle: StorageHandle) -> None:
        with self._lock:
            if self._watched.pop(handle, None) is not None:
                self._wake_up_locked()

    def _wake_up_locked(self) -> None:
        if not self._wake.done():
            self._wake.set_result(None)

    def _watch_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                shutdown = self._closing and not self._watched
            if shutdown:
                self._shutdown()
                return
            with self._lock:
                if self._wake.done():
                    self._wake = concurrent.futures.Future()
                wake = self._wake
                now = time.monotonic()
                expired = [h for h, (_, until) in self._watched.items() if until is not None and until <= now]
                for h in expired:
                    del self._watched[h]
                handles = list(self._watched)
                next_expiry = min((u for _, u in self._watched.values() if u is not None), default=None)
            if not handles:
                concurrent.futures.wait([wake], timeout=60)
                with self._lock:
                    if not self._watched and self._watcher is threading.current_thread():
                        self._watcher = None
                        return
                continue
            timeout = None if next_expiry is None else max(0.0, next_expiry - time.monotonic())
            wake_handle = InvokeHandle(function_name="", invocation_type=InvocationType.EVENT, future=wake)
            try:
                done, _ = self.poller.wait([*handles, wake_handle], timeout=timeout, return_when="FIRST_COMPLETED")
            except Exception:
                log.warning("polling for asynchronous outcomes failed; retrying", exc_info=True)
                time.sleep(0.5)
                continue
            for handle in done:
                if not isinstance(handle, StorageHandle):
                    continue
                with self._lock:
                    entry = self._watched.pop(handle, None)
                if entry is None:
                    continue
                attempt, janitor_until = entry
                backend = attempt.task.backend
                if janitor_until is not None:
                    self.pool().submit(backend.cleanup, attempt)
                else:
                    self.pool().submit(backend.complete_async, attempt)

    def close(self) -> None:
        """Stop the threads once the attempts still watched (clean-up of cancelled ones) end."""
        with self._lock:
            self._closing = True
            idle = not self._watched
            self._wake_up_locked()
        if idle:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._wake_up_locked()
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.shutdown(wait=False)  # work already queued (clean-ups) still runs


_engines: weakref.WeakKeyDictionary[Any, _Engine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def target_concurrency(target: Target) -> int | None:
    """How many invocations the target runs at once, when it says."""
    limit = getattr(target, "concurrency_limit", None)
    return limit if isinstance(limit, int) and limit > 0 else None


# --------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------


class CovalentBackend(Backend):
    """``backend="covalent"``: one Lambda invocation per task, done right.

    Configuration: the ``[covalent]`` section (:class:`~lambdarun_covalent.config.CovalentConfig`).
    """

    id = "covalent"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.config: CovalentConfig = session.settings.section("covalent")
        self.runtime_session = _runtime_session(session, self.config)
        self._storage: Storage | None = None
        self._storage_url: str | None = None
        self._lock = threading.Lock()
        self._engine: _Engine | None = None
        self._destination_checked = False
        self.run_id = uuid.uuid4().hex[:12]
        self._closed = False

    # -- lazily prepared collaborators ----------------------------------------------------

    @property
    def function_session(self) -> Session:
        return self.runtime_session

    def function_spec(self) -> FunctionSpec:
        """The runtime function (``[covalent] function_name``, else the core's)."""
        settings = self.runtime_session.settings
        # inside Lambda the runtime reaches storage as plain AWS (the endpoints, if any, come
        # from the target's AWS_ENDPOINT_URL_* variables); the storage URL is the only prefix
        # the function's events may name
        environment = {**self.function_environment(storage_url=self.storage_url),
                       **claims_environment(self.runtime_session)}
        if self.config.python_path:  # e.g. a DepsPip layer (lambdarun_covalent.layers)
            environment["PYTHONPATH"] = os.pathsep.join(self.config.python_path)
        return FunctionSpec(
            name=self.config.function_name or settings.function_name,
            timeout=int(MAX_TIMEOUT),  # per-task timeouts are enforced by the caller
            memory_size=self.config.memory,
            environment=environment,
        )

    @property
    def storage_url(self) -> str:
        self._prepare_storage()
        assert self._storage_url is not None
        return self._storage_url

    @property
    def storage(self) -> Storage:
        self._prepare_storage()
        assert self._storage is not None
        return self._storage

    def _prepare_storage(self) -> None:
        with self._lock:
            if self._storage is not None:
                return
            settings = self.runtime_session.settings
            # the original's default bucket name means "no bucket chosen": use lambdarun's
            # storage (the local target's moto bucket) and fall back to it only on AWS
            if self.config.s3_bucket_name != DEFAULT_BUCKET:
                url = f"s3://{self.config.s3_bucket_name}"
                ensure = getattr(self.runtime_session.target, "ensure_storage", None)
                if ensure is not None:  # the local target creates it; AWS leaves it to deploy
                    ensure(url)
            elif settings.storage_url:
                url = settings.storage_url
            else:
                try:
                    url = self.runtime_session.target.default_storage_url()
                except TargetError:
                    url = f"s3://{self.config.s3_bucket_name}"
            self._storage = self.runtime_session.storage(url)
            self._storage_url = self._storage.url

    @property
    def engine(self) -> _Engine:
        if self._engine is None or self._engine.closing:
            target = self.runtime_session.target
            with _engines_lock:
                engine = _engines.get(target)
                if engine is None or engine.closing:
                    workers = (
                        self.config.max_workers
                        or self.runtime_session.settings.max_workers
                        or target_concurrency(target)
                        or min(64, (os.cpu_count() or 2) * 8)
                    )
                    engine = _Engine(workers, self.runtime_session.poller)
                    _engines[target] = engine
            self._engine = engine
        return self._engine

    @property
    def run_prefix(self) -> str:
        return f"{KEY_ROOT}/{self.run_id}/"

    # -- Backend API ------------------------------------------------------------------------

    def submit(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> LambdaFuture:
        return self._submit(func, tuple(args), dict(kwargs or {}), None)

    def map(
        self, func: Callable[..., Any], iterable: Iterable[Any], *, max_workers: int | None = None
    ) -> Iterator[LambdaFuture]:
        """Futures in input order; invocations go through a pool sized to the target's
        concurrency (or ``max_workers``), so 1000 tasks never mean 1000 threads."""
        pool = self.engine.pool(max_workers or self.config.max_workers or None)
        for item in iterable:
            yield self._submit(func, (item,), {}, pool)

    def close(self) -> None:
        """Cancel what has not finished and delete what this backend left in storage."""
        if self._closed:
            return
        self._closed = True
        for task in list(_tasks.values()):
            if task.backend is self and not task.future.done():
                task.future.cancel()
        if self._storage is not None and not self.config.keep_objects:
            try:
                leftovers = self._storage.list(self.run_prefix)
                if leftovers:
                    self._storage.delete(leftovers)
            except Exception:
                log.warning("could not delete leftover objects", prefix=self.run_prefix, exc_info=True)
        if self._storage is not None and not self.config.keep_objects:
            sweep_claims(self.runtime_session)
        if self._engine is not None and getattr(self.runtime_session, "owns_target", True):
            self._engine.close()  # the target goes away with this session
        if self.runtime_session is not self.session:
            self.runtime_session.close()

    # -- one task -----------------------------------------------------------------------------

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple,
        kwargs: dict[str, Any],
        pool: concurrent.futures.ThreadPoolExecutor | None,
    ) -> LambdaFuture:
        if self._closed:
            raise LambdarunError("this covalent backend is closed; use a new lambdarun Session")
        task_id = uuid.uuid4().hex
        future = LambdaFuture(task_id)
        cfg = self.config
        mode = InvocationType.REQUEST_RESPONSE
        if cfg.mode == "async" or (
            cfg.mode == "auto"
            and cfg.expected_duration is not None
            and cfg.expected_duration > cfg.async_threshold
        ):
            mode = InvocationType.EVENT
        task = _Task(task_id, self, func, args, kwargs, future, float(cfg.timeout), mode)
        future.set_canceller(lambda: self._stop(task, "cancelled"))
        _tasks[task_id] = task
        future.add_done_callback(lambda _f, t=task: t.release())
        future.info["task"] = task  # keeps the task alive as long as its future
        (pool or self.engine.pool(self.config.max_workers or None)).submit(self._run, task)
        return future

    def _run(self, task: _Task) -> None:
        """Pool thread: run the task's attempts (synchronous) or start it (asynchronous)."""
        future = task.future
        if future.done():
            return  # cancelled while pending
        future.mark_running()
        if not self._prepare(task):
            return
        with task.lock:
            if future.done():
                return
            # the deadline runs from the invoke: the target's own start-up and the function's
            # creation (done by _prepare, reported apart) are not the task's time; the
            # function's cold start is, as on AWS
            started = time.monotonic()
            future.info["deadline_started"] = started
            task.deadline_token = _deadlines.add(started + task.timeout, lambda: self._time_out(task))
        if future.done():  # cancelled in between: its done callback may have missed the token
            task.release()
            return
        number = 0
        while True:
            number += 1
            if future.done():
                return
            attempt = self._new_attempt(task, number)
            try:
                if task.mode is InvocationType.EVENT:
                    self._start_async(attempt)
                    return
                outcome = self._attempt_sync(attempt)
            except BaseException as exc:  # noqa: BLE001 - every failure reaches the future
                if self._retryable(exc) and number <= self.config.retries and not future.done():
                    log.info("retrying task after an environment failure", task_id=task.id, attempt=number, error=str(exc))
                    self._cleanup_quietly(attempt)
                    continue
                self._cleanup_quietly(attempt)
                future.finish(exception=exc if isinstance(exc, Exception) else LambdarunError(repr(exc)))
                return
            self._finish(attempt, outcome)
            return

    def _prepare(self, task: _Task) -> bool:
        """Before the task's deadline starts: the function (created on the local target),
        the storage, and for asynchronous tasks the failure destination. Their time goes to
        ``future.info["prepare_seconds"]`` (and a debug log), not to the task's timeout.
        False when the task ended (a preparation error finishes it)."""
        started = time.monotonic()
        try:
            self.function_name  # noqa: B018
            self.storage  # noqa: B018
            if task.mode is InvocationType.EVENT:
                self._ensure_failure_destination()
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the future
            task.future.finish(exception=exc if isinstance(exc, Exception) else LambdarunError(repr(exc)))
            return False
        took = time.monotonic() - started
        task.future.info["prepare_seconds"] = took
        if took > 0.05:
            log.debug("prepared the target before the task's deadline", task_id=task.id, seconds=round(took, 3))
        return not task.future.done()

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        if isinstance(exc, (FunctionNotFoundError, PayloadTooLargeError, TaskTimeoutError,
                            InvocationOutcomeUnknownError, DuplicateDeliveryError)):
            return False
        return isinstance(exc, (RemoteEnvironmentError, InvocationError))

    def _new_attempt(self, task: _Task, number: int) -> _Attempt:
        prefix = f"{self.run_prefix}{task.id}-{number}-{uuid.uuid4().hex[:8]}/"
        attempt = _Attempt(task, number, prefix, task.mode)
        task.attempt = attempt
        return attempt

    # -- request and response ------------------------------------------------------------------

    def _event(self, attempt: _Attempt) -> bytes:
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

    def _client_context(self, attempt: _Attempt) -> dict[str, Any]:
        # lets a target that can stop one invocation find ours (see _stop_remote)
        return {"custom": {"lambdarun_attempt": attempt.id}}

    def _attempt_sync(self, attempt: _Attempt) -> Outcome:
        check_versions(self.runtime_session, self.function_name)  # once per function and process
        payload = self._event(attempt)
        attempt.invoked = True
        for delivery in range(1, _REDELIVERIES + 2):
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
                if delivery > _REDELIVERIES or attempt.task.future.done():
                    raise
                log.info("re-delivering a call attempt whose answer was lost", task_id=attempt.task.id,
                         attempt=attempt.number, delivery=delivery + 1, error=str(exc))
                time.sleep(min(0.05 * 2**delivery, 1.0))
        if response.request_id:  # the dashboard links the task to its invocation
            attempt.task.future.info["request_id"] = response.request_id
        if response.function_error:
            attempt.outcome_stored = None
            raise _environment_error(response.payload, attempt)
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

    def _decode(self, attempt: _Attempt, data: bytes) -> Outcome:
        # signature, age, task id and attempt are checked before anything is unpickled
        return decode_outcome(self.runtime_session, data, task_id=attempt.task.id, attempt=attempt.number)

    def _finish(self, attempt: _Attempt, outcome: Outcome) -> None:
        attempt.finished = True
        self._cleanup_quietly(attempt, release=False)
        attempt.task.future.finish(
            outcome.value,
            exception=None if outcome.ok else outcome.exception,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            remote_traceback=outcome.remote_traceback,
        )
        self._release_quietly(attempt)  # after the caller has its result: off its latency

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

    def _start_async(self, attempt: _Attempt) -> None:
        check_versions(self.runtime_session, self.function_name)  # once per function and process
        self._ensure_failure_destination()
        payload = self._event(attempt)
        handle = StorageHandle(self.storage, self.run_prefix, attempt.outcome_key)
        attempt.outcome_stored = None
        response = self.runtime_session.invoker.invoke(
            self.function_name,
            payload,
            invocation_type=InvocationType.EVENT,
            client_context=self._client_context(attempt),
        )
        if response.status_code not in (200, 202):
            raise InvocationError(f"asynchronous invoke returned status {response.status_code}")
        attempt.invoked = True
        with attempt.task.lock:
            if attempt.task.future.done():  # cancelled or timed out meanwhile: only clean up
                self.engine.watch(handle, attempt, janitor_until=self._janitor_deadline(attempt))
                return
            self.engine.watch(handle, attempt)

    def complete_async(self, attempt: _Attempt) -> None:
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
                self._start_async(retry)
            except Exception as exc:
                self._cleanup_quietly(retry)
                task.future.finish(exception=exc)
            return
        self._finish(attempt, outcome)

    def _janitor_deadline(self, attempt: _Attempt) -> float:
        return attempt.started + MAX_TIMEOUT + _JANITOR_GRACE

    # -- timeouts, cancellation, clean-up ----------------------------------------------------------

    def _time_out(self, task: _Task) -> None:
        seconds = f"{task.timeout:g}"
        took = task.future.finish(
            exception=TaskTimeoutError(
                f"task {task.id} ({getattr(task.func, '__qualname__', task.func)!s}) did not finish "
                f"within its timeout of {seconds} s; raise the covalent timeout "
                f"(options={{'covalent': {{'timeout': ...}}}} or [covalent] timeout) up to 900 s"
            )
        )
        if took:
            self._stop(task, "timed out")

    def _stop(self, task: _Task, why: str) -> None:
        """After cancel or timeout: stop waiting, stop the remote work where possible, and make
        sure the attempt's objects are deleted even if it finishes later."""
        _deadlines.remove(task.deadline_token)
        attempt = task.attempt
        if attempt is None or attempt.finished:
            return
        log.info("task stopped", task_id=task.id, reason=why)
        stopped = self._stop_remote(attempt)
        if attempt.mode is InvocationType.EVENT:
            with task.lock:
                handle = StorageHandle(self.storage, self.run_prefix, attempt.outcome_key)
                self.engine.unwatch(handle)
                # stopped by the target: its environment is gone, so only an outcome already
                # on its way can still land; else it may run until the function's timeout
                until = time.monotonic() + _JANITOR_GRACE if stopped else self._janitor_deadline(attempt)
                self.engine.watch(handle, attempt, janitor_until=until)
            if stopped:
                self._cleanup_quietly(attempt)  # the call object, now (no outcome will come)
        # synchronous attempts clean up in their pool thread once the invoke returns

    def _stop_remote(self, attempt: _Attempt) -> bool:
        """Ask the target to stop the attempt's invocation (the local target kills the
        environment running it or drops the queued event; AWS cannot). True when the
        target says it stopped something."""
        try:
            return bool(self.runtime_session.target.stop_invocation(self.function_name, attempt.id))
        except Exception:
            log.warning("the target could not stop the invocation", attempt=attempt.id, exc_info=True)
            return False

    def cleanup(self, attempt: _Attempt) -> None:
        """Delete the attempt's objects (call and outcome), unless keep_objects is on."""
        if self.config.keep_objects:
            return
        keys = []
        if attempt.spilled:
            keys.append(attempt.call_key)
        if attempt.outcome_stored is not False:
            keys.append(attempt.outcome_key)
        if keys:
            self.storage.delete(keys)

    def _cleanup_quietly(self, attempt: _Attempt, *, release: bool = True) -> None:
        try:
            self.cleanup(attempt)
        except Exception as exc:
            if self._closed:  # the session (and maybe the target) went away under a late task
                log.debug("could not delete the objects of an attempt", prefix=attempt.prefix, error=str(exc))
            else:
                log.warning("could not delete the objects of an attempt", prefix=attempt.prefix, exc_info=True)
        if release:
            self._release_quietly(attempt)

    def _release_quietly(self, attempt: _Attempt) -> None:
        """The attempt is over for the caller: drop the outcome kept with its claim (a
        tombstone stays until the claim expires, so a late duplicate still cannot run it)."""
        if not attempt.invoked or self.config.keep_objects:
            return
        try:
            release_claim(self.runtime_session, attempt.task.id, attempt.number, issued_at=attempt.issued_at)
        except Exception as exc:
            log.debug("could not release the claim of an attempt", prefix=attempt.prefix, error=str(exc))


def _environment_error(payload: bytes, attempt: _Attempt) -> LambdarunError:
    """Map a Lambda function error (the environment failed around our handler)."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = {"errorType": "Unknown", "errorMessage": payload[:500].decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {"errorType": "Unknown", "errorMessage": str(body)[:500]}
    error_type = str(body.get("errorType", "Unknown"))
    message = str(body.get("errorMessage", ""))
    trace = body.get("stackTrace") or []
    remote_tb = "".join(trace) if isinstance(trace, list) else str(trace)
    storage_failure = _storage_failure(error_type, message, remote_tb, attempt)
    if storage_failure is not None:
        return storage_failure
    if error_type == "Sandbox.Timedout":
        return TaskTimeoutError(
            f"the Lambda function timed out running task {attempt.task.id}: {message}; raise the "
            "function's timeout (lambdarun deploy) and the covalent timeout"
        )
    if error_type.startswith("Runtime.") or error_type in ("Unknown",):
        what = "its execution environment died" if error_type == "Runtime.ExitError" else "its runtime failed"
        text = (
            f"task {attempt.task.id} failed because {what} ({error_type}: {message}). The function "
            "did not raise: the process running it exited (killed, out of memory, or crashed)."
        )
    else:
        text = (
            f"the Lambda runtime failed before or around task {attempt.task.id} ({error_type}: "
            f"{message}); check that the function runs lambdarun.runtime.handler with the "
            "lambdarun plugins installed"
        )
    return RemoteEnvironmentError(text, original_type=error_type, remote_traceback=remote_tb)


def _storage_failure(error_type: str, message: str, remote_tb: str, attempt: _Attempt) -> StorageError | None:
    """The function could not read the call or store the outcome of a large task: a storage
    problem (bucket missing, not writable), not a broken runtime."""
    if "storage.put(" in remote_tb or "PutObject" in message:
        what = f"ran task {attempt.task.id} but could not store its large result at {attempt.outcome_key!r}"
    elif "storage.get(" in remote_tb or "GetObject" in message:
        what = f"could not read the large call of task {attempt.task.id} at {attempt.call_key!r}"
    else:
        return None
    backend = attempt.task.backend
    return StorageError(
        f"the Lambda function {what} in {backend.storage_url} ({error_type}: {message}). The "
        "bucket must exist and the function must be allowed to read and write it: on AWS, "
        "`lambdarun deploy` creates the bucket and grants it (set [covalent] s3_bucket_name / "
        "AWSLambdaExecutor(s3_bucket_name=...) to that bucket); the local target creates it."
    )


def _runtime_session(session: Session, cfg: CovalentConfig) -> Session:
    """The session to run on: ``session`` with the section's target/AWS keys applied."""
    overrides: dict[str, Any] = {}
    if cfg.target and cfg.target != session.settings.target:
        overrides["target"] = cfg.target
    if cfg.region and cfg.region != session.settings.region:
        overrides["region"] = cfg.region
    aws: dict[str, Any] = {}
    if cfg.profile:
        aws["profile"] = cfg.profile
    if cfg.credentials_file:
        aws["credentials_file"] = cfg.credentials_file
    if cfg.endpoint_url:
        aws["endpoint_url"] = cfg.endpoint_url
    if aws:
        overrides["aws"] = aws
    return session.derive(overrides) if overrides else session
