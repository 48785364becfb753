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

import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.backends import Backend
from lambdarun.claim_release import flush_releases, release_later
from lambdarun.claims import claims_environment
from lambdarun.claims import sweep_local as sweep_claims
from lambdarun.errors import (
    DuplicateDeliveryError,
    FunctionNotFoundError,
    InvocationError,
    InvocationOutcomeUnknownError,
    LambdarunError,
    PayloadTooLargeError,
    RemoteEnvironmentError,
    TargetError,
    TaskTimeoutError,
)
from lambdarun.futures import LambdaFuture
from lambdarun.types import FunctionSpec, InvocationType, StorageHandle

from lambdarun_covalent.config import DEFAULT_BUCKET, MAX_TIMEOUT, CovalentConfig, runtime_session_for
from lambdarun_covalent.engine import Engine, Flow, Slots, engines, engines_lock, target_concurrency
from lambdarun_covalent.tasks import Attempt, MapQueue, Task, deadlines, in_flight, lookup_task, ramp
from lambdarun_covalent.async_attempts import JANITOR_GRACE, AsyncAttempts
from lambdarun_covalent.sync_attempts import SyncAttempts

if TYPE_CHECKING:
    from lambdarun.calls import Outcome
    from lambdarun.session import Session
    from lambdarun.types import Storage

__all__ = ["CovalentBackend", "KEY_ROOT", "lookup_task"]

log = structlog.get_logger(__name__)

#: every object this backend writes lives under this key prefix of its storage
KEY_ROOT = "lambdarun-covalent"


# --------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------


class CovalentBackend(SyncAttempts, AsyncAttempts, Backend):
    """``backend="covalent"``: one Lambda invocation per task, done right.

    Configuration: the ``[covalent]`` section (:class:`~lambdarun_covalent.config.CovalentConfig`).
    """

    id = "covalent"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.config: CovalentConfig = session.settings.section("covalent")
        self.runtime_session = runtime_session_for(session, self.config)
        self._storage: Storage | None = None
        self._storage_url: str | None = None
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._destination_checked = False
        self.run_id = os.urandom(6).hex()
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
    def engine(self) -> Engine:
        # a closed backend keeps its engine: what it still stops or cleans up stays on the
        # engine that watches it, and no threads are started for a closed session
        if self._engine is None or (self._engine.closing and not self._closed):
            target = self.runtime_session.target
            with engines_lock:
                engine = engines.get(target)
                if engine is None or engine.closing:
                    workers = (
                        self.config.max_workers
                        or self.runtime_session.settings.max_workers
                        or target_concurrency(target)
                        or min(64, (os.cpu_count() or 2) * 8)
                    )
                    engine = Engine(workers, self.runtime_session.poller)
                    engines[target] = engine
            self._engine = engine
        return self._engine

    @property
    def run_prefix(self) -> str:
        return f"{KEY_ROOT}/{self.run_id}/"

    # -- Backend API ------------------------------------------------------------------------

    def submit(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> LambdaFuture:
        return self._submit(func, tuple(args), dict(kwargs or {}), None)

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        max_workers: int | None = None,
        chunksize: int | None = None,
    ) -> Iterator[LambdaFuture]:
        """Futures in input order; at most the target's concurrency (or ``max_workers``)
        tasks run at once (:class:`~lambdarun_covalent.engine.Slots`): 1000 tasks never mean
        1000 threads, and no thread waits for an Invoke in flight.

        Synchronous tasks are batched: a runner that gets a slot takes its fair share of the
        tasks queued (at most ``chunksize``, default ``[covalent] chunksize``) and sends them
        in one invocation (:func:`lambdarun.protocol.build_batch_event`). A lone task (or
        ``chunksize=1``) goes alone, as ``submit`` sends it.
        """
        concurrency = self.map_concurrency(max_workers)
        slots = self.engine.slots(max_workers or self.config.max_workers or None)
        limit = self.map_chunksize(chunksize)
        queue = MapQueue(limit, concurrency) if limit > 1 else None
        started, ramp_from = 0, time.monotonic()
        for item in iterable:
            task = self._new_task(func, (item,), {})
            if queue is None or task.mode is not InvocationType.REQUEST_RESPONSE:
                started = ramp(started, concurrency, ramp_from)
                slots.start(functools.partial(self._run, task))
            elif queue.put(task):
                started = ramp(started, concurrency, ramp_from)
                slots.start(functools.partial(self._run_queued, queue, slots))
            yield task.future

    def map_concurrency(self, max_workers: int | None = None) -> int:
        return (
            max_workers
            or self.config.max_workers
            or self.runtime_session.settings.max_workers
            or target_concurrency(self.runtime_session.target)
            or min(64, (os.cpu_count() or 2) * 8)
        )

    def map_chunksize(self, chunksize: int | None = None) -> int:
        """At most this many tasks per invocation of a ``map`` (``chunksize``, else
        ``[covalent] chunksize``)."""
        return chunksize or self.config.chunksize

    def close(self) -> None:
        """Cancel what has not finished and delete what this backend left in storage."""
        if self._closed:
            return
        self._closed = True
        for task in list(in_flight.values()):
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
            flush_releases(self.runtime_session)  # queued claim releases, before the target goes
            sweep_claims(self.runtime_session)
        if self._engine is not None and getattr(self.runtime_session, "owns_target", True):
            self._engine.close()  # the target goes away with this session
        if self.runtime_session is not self.session:
            self.runtime_session.close()

    # -- one task -----------------------------------------------------------------------------

    def _submit(
        self, func: Callable[..., Any], args: tuple, kwargs: dict[str, Any], slots: Slots | None
    ) -> LambdaFuture:
        task = self._new_task(func, args, kwargs)
        (slots or self.engine.slots(self.config.max_workers or None)).start(functools.partial(self._run, task))
        return task.future

    def _new_task(self, func: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Task:
        if self._closed:
            raise LambdarunError("this covalent backend is closed; use a new lambdarun Session")
        # 128 random bits: a task id names storage keys and claims, so it stays unguessable
        task_id = os.urandom(16).hex()
        future = LambdaFuture(task_id)
        cfg = self.config
        mode = InvocationType.REQUEST_RESPONSE
        if cfg.mode == "async" or (
            cfg.mode == "auto"
            and cfg.expected_duration is not None
            and cfg.expected_duration > cfg.async_threshold
        ):
            mode = InvocationType.EVENT
        task = Task(task_id, self, func, args, kwargs, future, float(cfg.timeout), mode)
        future.set_canceller(lambda: self._stop(task, "cancelled"))
        in_flight[task_id] = task
        future.add_done_callback(lambda _f, t=task: t.release())
        future.info["task"] = task  # keeps the task alive as long as its future
        return task

    # The methods below that return a Flow are generators run by the engine on a slot
    # (:mod:`lambdarun_covalent.engine`): they yield each future they wait for.

    def _run_queued(self, queue: MapQueue, slots: Slots) -> Flow:
        """A runner of a batching ``map``: its fair share of the queued tasks, then back to
        the end of the slots' queue (other maps and submits get their turn); it ends when
        the map's queue is empty."""
        tasks = queue.take()
        if not tasks:
            return
        try:
            if len(tasks) == 1:
                yield from self._run(tasks[0])
            else:
                yield from self._run_batch(tasks)
        except GeneratorExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the runner goes on; these tasks fail
            for task in tasks:
                task.future.finish(exception=exc if isinstance(exc, Exception) else LambdarunError(repr(exc)))
        slots.start(functools.partial(self._run_queued, queue, slots))

    def _run_batch(self, tasks: list[Task]) -> Flow:
        """Several synchronous tasks in one invocation; each keeps its own attempt, claim,
        deadline, outcome and retries (a task whose part failed goes on alone)."""
        live = [task for task in tasks if self._begin(task)]
        if len(live) <= 1:
            for task in live:
                yield from self._attempts(task, 1)
            return
        attempts = [self._new_attempt(task, 1) for task in live]
        for attempt in attempts:
            attempt.batched = True
        try:
            results = yield from self._attempt_batch(attempts)
        except GeneratorExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the whole invocation failed: each task decides
            results = [exc] * len(attempts)
        for attempt, result in zip(attempts, results):
            if isinstance(result, BaseException):
                if self._retry_or_fail(attempt, result):
                    yield from self._attempts(attempt.task, attempt.number + 1)
            else:
                self._finish(attempt, result)

    def _run(self, task: Task) -> Flow:
        """On a slot: run the task's attempts (synchronous) or start it (asynchronous)."""
        if self._begin(task):
            yield from self._attempts(task, 1)

    def _begin(self, task: Task) -> bool:
        """Prepare the task and start its deadline; False when it ended meanwhile."""
        future = task.future
        if future.done():
            return False  # cancelled while pending
        future.mark_running()
        if not self._prepare(task):
            return False
        with task.lock:
            if future.done():
                return False
            # the deadline runs from the invoke: the target's own start-up and the function's
            # creation (done by _prepare, reported apart) are not the task's time; the
            # function's cold start is, as on AWS
            started = time.monotonic()
            future.info["deadline_started"] = started
            task.deadline_token = deadlines.add(started + task.timeout, lambda: self._time_out(task))
        if future.done():  # cancelled in between: its done callback may have missed the token
            task.release()
            return False
        return True

    def _attempts(self, task: Task, number: int) -> Flow:
        """Attempts ``number``, ``number + 1``, ... of a started task until one decides it."""
        future = task.future
        while True:
            if future.done():
                return
            attempt = self._new_attempt(task, number)
            try:
                if task.mode is InvocationType.EVENT:
                    yield from self._start_async(attempt)
                    return
                outcome = yield from self._attempt_sync(attempt)
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - every failure reaches the future
                if self._retry_or_fail(attempt, exc):
                    number += 1
                    continue
                return
            self._finish(attempt, outcome)
            return

    def _retry_or_fail(self, attempt: Attempt, exc: BaseException) -> bool:
        """After a failed attempt: True to make another one, else the task fails with ``exc``."""
        task, future = attempt.task, attempt.task.future
        self._cleanup_quietly(attempt)
        if self._retryable(exc) and attempt.number <= self.config.retries and not future.done():
            log.info("retrying task after an environment failure", task_id=task.id, attempt=attempt.number, error=str(exc))
            return True
        future.finish(exception=exc if isinstance(exc, Exception) else LambdarunError(repr(exc)))
        return False

    def _prepare(self, task: Task) -> bool:
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

    def _new_attempt(self, task: Task, number: int) -> Attempt:
        prefix = f"{self.run_prefix}{task.id}-{number}-{os.urandom(4).hex()}/"
        attempt = Attempt(task, number, prefix, task.mode)
        task.attempt = attempt
        return attempt

    def _finish(self, attempt: Attempt, outcome: Outcome) -> None:
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

    # -- timeouts, cancellation, clean-up ----------------------------------------------------------

    def _time_out(self, task: Task) -> None:
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

    def _stop(self, task: Task, why: str) -> None:
        """After cancel or timeout: stop waiting, stop the remote work where possible, and make
        sure the attempt's objects are deleted even if it finishes later."""
        deadlines.remove(task.deadline_token)
        attempt = task.attempt
        if attempt is None or attempt.finished:
            return
        log.info("task stopped", task_id=task.id, reason=why)
        if attempt.batched:  # its invocation runs other tasks too: let it finish, drop this answer
            return
        stopped = self._stop_remote(attempt)
        if attempt.mode is InvocationType.EVENT:
            with task.lock:
                handle = StorageHandle(self.storage, self.run_prefix, attempt.outcome_key)
                self.engine.unwatch(handle)
                # stopped by the target: its environment is gone, so only an outcome already
                # on its way can still land; else it may run until the function's timeout
                until = time.monotonic() + JANITOR_GRACE if stopped else self._janitor_deadline(attempt)
                self.engine.watch(handle, attempt, janitor_until=until)
            if stopped:
                self._cleanup_quietly(attempt)  # the call object, now (no outcome will come)
        # synchronous attempts clean up in their flow once the invoke returns

    def _stop_remote(self, attempt: Attempt) -> bool:
        """Ask the target to stop the attempt's invocation (the local target kills the
        environment running it or drops the queued event; AWS cannot). True when the
        target says it stopped something."""
        try:
            return bool(self.runtime_session.target.stop_invocation(self.function_name, attempt.id))
        except Exception:
            log.warning("the target could not stop the invocation", attempt=attempt.id, exc_info=True)
            return False

    def cleanup(self, attempt: Attempt) -> None:
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

    def _cleanup_quietly(self, attempt: Attempt, *, release: bool = True) -> None:
        try:
            self.cleanup(attempt)
        except Exception as exc:
            if self._closed:  # the session (and maybe the target) went away under a late task
                log.debug("could not delete the objects of an attempt", prefix=attempt.prefix, error=str(exc))
            else:
                log.warning("could not delete the objects of an attempt", prefix=attempt.prefix, exc_info=True)
        if release:
            self._release_quietly(attempt)

    def _release_quietly(self, attempt: Attempt) -> None:
        """The attempt is over for the caller: drop the outcome kept with its claim (a
        tombstone stays until the claim expires, so a late duplicate still cannot run it).
        Queued on the session's :class:`~lambdarun.claim_release.Releaser`: released in
        batches by its thread, not by the work thread that got the outcome."""
        if attempt.invoked and not self.config.keep_objects:
            release_later(self.runtime_session, attempt.task.id, attempt.number, issued_at=attempt.issued_at)

