"""``backend="temporal"``: each call is a workflow whose one activity runs the call.

One call, end to end::

    encode_call(f, args, kwargs)                       (client, signed envelope)
      -> start workflow "lambdarun.call" on [temporal] task_queue
      -> controller: pending work and no live worker?  invoke the worker function
         (lambdarun.runtime.handler, event {"lambdarun_temporal": 1, ...}) through
         session.invoker.invoke_async, i.e. without waiting for it
      -> inside Lambda: run_worker polls, the activity runs execute_call(envelope),
         the worker returns ~1 s after the queue went idle
      -> workflow result = outcome envelope -> decode_outcome -> value, or the function's
         own exception type with the remote traceback

With the Serverless Worker controller (``[temporal] worker_controller``; see
:mod:`lambdarun_temporal.serverless`), the Temporal server, not this process, invokes the
worker function. The Temporal client lives on one event loop in a background thread per
backend (:mod:`lambdarun_temporal.loop_thread`); it is dropped and garbage-collected in :meth:`TemporalBackend.close`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import gc
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.backends import Backend
from lambdarun.calls import decode_outcome, encode_call
from lambdarun.errors import (
    ConfigError,
    RemoteEnvironmentError,
    TaskCancelledError,
    TaskTimeoutError,
)
from lambdarun.futures import LambdaFuture
from lambdarun.types import FunctionSpec

from lambdarun_temporal._workflow import INLINE_LIMIT, WORKER_SHUTDOWN, WORKFLOW_NAME
from lambdarun_temporal.config import TemporalConfig
from lambdarun_temporal.lambda_worker._configure import derived_shutdown_buffer
from lambdarun_temporal.lambda_worker._defaults import (
    DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
    DEFAULT_SHUTDOWN_HOOK_BUDGET,
)
from lambdarun_temporal.loop_thread import LoopThread
from lambdarun_temporal.worker import WORKER_EVENT_KEY, WORKER_EVENT_VERSION

if TYPE_CHECKING:
    from lambdarun.session import Session
    from lambdarun.types import InvokeHandle

__all__ = ["TemporalBackend", "WorkerInvocationError"]

log = structlog.get_logger(__name__)

#: every object this backend writes lives under this key prefix of its storage
KEY_ROOT = "lambdarun-temporal"
#: consecutive failed worker invocations after which pending calls fail
MAX_WORKER_FAILURES = 3


class WorkerInvocationError(RemoteEnvironmentError):
    """The worker function failed repeatedly, so pending calls cannot run."""


class TemporalBackend(Backend):
    """``backend="temporal"``. Configuration: ``[temporal]`` (:class:`TemporalConfig`)."""

    id = "temporal"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.config: TemporalConfig = session.settings.section("temporal")
        self.run_id = uuid.uuid4().hex[:10]
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._client: Any = None
        self._ready: concurrent.futures.Future[Any] | None = None
        self._address: str | None = None
        self._pending: dict[str, LambdaFuture] = {}
        self._workers: list[InvokeHandle] = []
        self._worker_failures = 0
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._can_spill: bool | None = None
        self._own_server_controls = False  # the dev server this backend started has the controller
        self._server_controlled: bool | None = None
        self.invocations = 0  # worker invocations started (for tests and benchmarks)
        #: the summaries returned by the latest worker invocations (stop_reason, counts)
        self.worker_summaries: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)

    # -- where things are ---------------------------------------------------------------

    @property
    def address(self) -> str:
        """The Temporal frontend: ``[temporal] address``, or the local dev server when the
        target's functions run on this machine (``Target.runs_on_this_machine``)."""
        if self._address is None:
            if self.config.address:
                self._address = self.config.address
            elif getattr(self.session.target, "runs_on_this_machine", False):
                from lambdarun_temporal.devserver import shared_dev_server

                env = self._local_stack_environment() if self.config.worker_controller != "client" else None
                server = shared_dev_server(env)
                self._own_server_controls = server.worker_controller
                self._address = server.address
            else:
                raise ConfigError(
                    "the temporal backend needs a Temporal server on target "
                    f"{self.session.settings.target!r}: set [temporal] address (and namespace, "
                    "api_key) in lambdarun.toml or LAMBDARUN_TEMPORAL__ADDRESS"
                )
        return self._address

    def _local_stack_environment(self) -> dict[str, str] | None:
        """Endpoints, region and credentials of the local target for the dev server's Lambda
        compute provider (it assumes the invoke role through the stack's STS and invokes the
        stack's Lambda), or None when the target does not say where they are."""
        from lambdarun_temporal.devserver import serverless_workers_environment

        target = self.session.target
        endpoints = {svc: target.endpoint_url(svc) for svc in ("lambda", "sts")}
        env = target.environment()
        credentials = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if env.get(k)}
        if not all(endpoints.values()) or len(credentials) != 2:
            return None
        return serverless_workers_environment(endpoints, target.region, credentials)  # type: ignore[arg-type]

    @property
    def server_controlled(self) -> bool | None:
        """True when the Temporal server invokes the worker function (Serverless Workers),
        False when this process's controller does; None before the backend connected."""
        return self._server_controlled

    @property
    def call_timeout(self) -> float:
        if self.config.timeout:
            return float(self.config.timeout)
        buffer = derived_shutdown_buffer(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_HOOK_BUDGET)
        return max(1.0, self.config.function_timeout - buffer.total_seconds())

    def function_spec(self) -> FunctionSpec:
        """The worker function (created once, through :attr:`function_name`)."""
        environment = self.function_environment()
        # the worker connects where its own configuration says, never where an event says
        # (see lambdarun_temporal.worker)
        environment["LAMBDARUN_TEMPORAL__ADDRESS"] = self.address
        environment["LAMBDARUN_TEMPORAL__NAMESPACE"] = self.config.namespace
        environment["LAMBDARUN_TEMPORAL__TLS"] = "true" if self.config.tls else "false"
        if self.config.api_key:
            environment["LAMBDARUN_TEMPORAL__API_KEY"] = self.config.api_key
        if self._server_controlled:
            # the server invokes with an empty event: what to serve is the function's own config
            environment.update({
                "LAMBDARUN_TEMPORAL__WORKER_CONTROLLER": "server",
                "LAMBDARUN_TEMPORAL__TASK_QUEUE": self.config.task_queue,
                "LAMBDARUN_TEMPORAL__DEPLOYMENT_NAME": self.config.deployment_name,
                "LAMBDARUN_TEMPORAL__BUILD_ID": self.config.build_id,
                "LAMBDARUN_TEMPORAL__IDLE_TIMEOUT": str(self.config.idle_timeout),
                "LAMBDARUN_TEMPORAL__MAX_CONCURRENT_CALLS": str(self.config.max_concurrent_calls),
            })
        return FunctionSpec(
            name=self.config.function_name,
            timeout=self.config.function_timeout,
            memory_size=self.config.memory,
            environment=environment,
        )

    def worker_event(self) -> dict[str, Any]:
        """The event a worker invocation receives: what to serve, never where the server is
        (the function's environment has that, see :attr:`function_name`)."""
        return {
            WORKER_EVENT_KEY: WORKER_EVENT_VERSION,
            "task_queue": self.config.task_queue,
            "deployment_name": self.config.deployment_name,
            "build_id": self.config.build_id,
            "idle_timeout": self.config.idle_timeout,
            "max_concurrent_calls": self.config.max_concurrent_calls,
        }

    # -- the client loop ------------------------------------------------------------------

    def _start(self) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._closed:
                raise TaskCancelledError("the temporal backend is closed; create a new session")
            if self._loop is None:
                self._loop = LoopThread(f"lambdarun-temporal-{self.run_id}")
            failed = self._ready is not None and self._ready.done() and self._ready.exception()
            if self._ready is None or failed:  # connect (again, after a failed attempt)
                self._ready = self._loop.run(self._connect())
            return self._ready

    async def _connect(self) -> Any:
        from temporalio.client import Client

        from lambdarun_temporal.versioning import set_current_version

        kwargs: dict[str, Any] = {"namespace": self.config.namespace, "identity": f"lambdarun-{self.run_id}"}
        if self.config.api_key:
            kwargs["api_key"] = self.config.api_key
        if self.config.tls or self.config.api_key:
            kwargs["tls"] = True
        try:
            client = await Client.connect(self.address, **kwargs)
        except Exception as exc:
            exc.add_note(
                f"while connecting to the Temporal server at {self.address} (namespace "
                f"{self.config.namespace!r}); check [temporal] address / namespace / api_key / tls"
            )
            raise
        self._server_controlled = await self._use_server_controller(client)
        if self._server_controlled:
            await asyncio.to_thread(self._register_serverless_version)
            await set_current_version(client, self.config.deployment_name, self.config.build_id,
                                      ignore_missing_task_queues=True)
        else:
            await set_current_version(client, self.config.deployment_name, self.config.build_id)
        self._client = client
        self._wake = asyncio.Event()
        if not self._server_controlled:
            asyncio.get_running_loop().create_task(self._controller(), name="temporal-controller")
        log.info("temporal backend connected", address=self.address,
                 worker_controller="server" if self._server_controlled else "client")
        return client

    # -- Serverless Workers: the server's controller ----------------------------------------

    async def _use_server_controller(self, client: Any) -> bool:
        """``[temporal] worker_controller``: server, client, or auto (see TemporalConfig)."""
        from lambdarun_temporal.serverless import server_scales_workers

        mode = self.config.worker_controller
        if mode == "client":
            return False
        if mode == "server":
            return True
        if not (self._own_server_controls or (self.config.invoke_role_arn and self.config.external_id)):
            return False
        try:
            return await server_scales_workers(client)
        except Exception:  # noqa: BLE001 - an older server: lambdarun's own controller
            log.info("the Temporal server does not report Serverless Workers; lambdarun invokes the workers",
                     exc_info=True)
            return False

    def _register_serverless_version(self) -> None:
        """The worker function, its invoke role (on a server lambdarun started: created in the
        target's IAM with a fresh External ID) and the deployment version with that compute
        config."""
        from lambdarun_temporal.serverless import create_version, ensure_invoke_role, invoke_role_name

        function_name = self.function_name
        target = self.session.target
        arn = str(target.client("lambda").get_function(FunctionName=function_name)["Configuration"]["FunctionArn"])
        if self.config.invoke_role_arn:
            if not self.config.external_id:
                raise ConfigError("[temporal] invoke_role_arn needs [temporal] external_id (the External ID "
                                  "its trust policy requires); `lambdarun deploy` prints both")
            role_arn, external_id = self.config.invoke_role_arn, self.config.external_id
        elif self._own_server_controls:
            account = target.client("sts").get_caller_identity()["Account"]
            role_arn, external_id = ensure_invoke_role(
                target.client("iam"), role_name=invoke_role_name(function_name),
                principal=f"arn:aws:iam::{account}:root", function_arn=arn)
        else:
            raise ConfigError(
                "[temporal] worker_controller = \"server\" on a Temporal server lambdarun did not start "
                "needs [temporal] invoke_role_arn and external_id (`lambdarun deploy` creates the role "
                "and prints them), or worker_controller = \"client\"")
        create_version(address=self.address, namespace=self.config.namespace,
                       deployment_name=self.config.deployment_name, build_id=self.config.build_id,
                       function_arn=arn, role_arn=role_arn, external_id=external_id,
                       tls=bool(self.config.tls or self.config.api_key), api_key=self.config.api_key)

    # -- Backend API ------------------------------------------------------------------------

    def submit(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> LambdaFuture:
        task_id = f"lambdarun-{self.run_id}-{next(self._counter)}"
        envelope = encode_call(self.session, func, args, kwargs, task_id=task_id)
        future = LambdaFuture(task_id=task_id)
        ready = self._start()
        assert self._loop is not None
        loop = self._loop
        future.set_canceller(lambda: loop.run(self._cancel_workflow(task_id)))
        with self._lock:
            self._pending[task_id] = future
        loop.run(self._run_call(ready, task_id, envelope, future))
        return future

    async def _run_call(
        self, ready: concurrent.futures.Future[Any], task_id: str, envelope: bytes, future: LambdaFuture
    ) -> None:
        from temporalio.client import WorkflowFailureError

        stored: list[str] = []
        try:
            client = await asyncio.wrap_future(ready)
            call_url = outcome_url = ""
            if len(envelope) > INLINE_LIMIT or self.config.always_spill:
                storage = await asyncio.to_thread(self.session.storage)
                prefix = f"{KEY_ROOT}/{self.run_id}/{task_id}"
                await asyncio.to_thread(storage.put, f"{prefix}/call", envelope)
                stored.append(f"{prefix}/call")
                call_url, envelope = storage.url_for(f"{prefix}/call"), b""
            outcome_key = f"{KEY_ROOT}/{self.run_id}/{task_id}/outcome"
            if await asyncio.to_thread(self._spill_outcomes):
                storage = await asyncio.to_thread(self.session.storage)
                outcome_url = storage.url_for(outcome_key)
            handle = await client.start_workflow(
                WORKFLOW_NAME,
                args=[envelope, self.call_timeout, self.config.attempts, call_url, outcome_url],
                id=task_id,
                task_queue=self.config.task_queue,
                result_type=bytes,
            )
            future.mark_running()
            assert self._wake is not None
            self._wake.set()  # (with the server's controller, the server sees the backlog itself)
            data = await handle.result()
            if not data and outcome_url:  # the worker stored a large outcome
                stored.append(outcome_key)
                data = await asyncio.to_thread(self.session.storage().get, outcome_key)
        except WorkflowFailureError as exc:
            future.finish(exception=_failure_error(task_id, exc))
            return
        except asyncio.CancelledError:
            future.finish(exception=TaskCancelledError(f"call {task_id} was cancelled"))
            return
        except BaseException as exc:  # noqa: BLE001 - the caller gets it
            future.finish(exception=exc)
            return
        finally:
            with self._lock:
                self._pending.pop(task_id, None)
            if stored:
                await asyncio.to_thread(self._delete_stored, stored)
        try:
            # signature, age and task id are checked before anything is unpickled
            outcome = decode_outcome(self.session, data, task_id=task_id, attempt=1)  # the call's attempt (Temporal retries are claimed apart)
        except Exception as exc:  # noqa: BLE001
            future.finish(exception=exc)
            return
        if outcome.ok:
            future.finish(outcome.value, stdout=outcome.stdout, stderr=outcome.stderr)
        else:
            future.finish(
                exception=outcome.exception,
                stdout=outcome.stdout,
                stderr=outcome.stderr,
                remote_traceback=outcome.remote_traceback,
            )

    def _spill_outcomes(self) -> bool:
        """Large outcomes are stored when the target has storage (else they fail clearly)."""
        if self._can_spill is None:
            try:
                self.session.storage()
                self._can_spill = True
            except Exception as exc:  # noqa: BLE001 - no storage configured / reachable
                log.info("no storage for large outcomes; they will fail", reason=str(exc))
                self._can_spill = False
        return self._can_spill

    def _delete_stored(self, keys: list[str]) -> None:
        try:
            self.session.storage().delete(keys)
        except Exception:  # noqa: BLE001 - cleanup is best effort
            log.warning("could not delete stored call objects", keys=keys, exc_info=True)

    async def _cancel_workflow(self, task_id: str) -> None:
        if self._client is not None:
            try:
                await self._client.get_workflow_handle(task_id).cancel()
            except Exception:  # noqa: BLE001 - best effort
                log.debug("cancelling workflow failed", task_id=task_id, exc_info=True)

    # -- the controller -------------------------------------------------------------------

    async def _controller(self) -> None:
        """Keep a worker invocation running while calls are pending."""
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.controller_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await asyncio.to_thread(self._ensure_workers)
            except Exception as exc:  # noqa: BLE001 - fail the calls instead of hanging
                self._fail_pending(exc)

    def _ensure_workers(self) -> None:
        with self._lock:
            pending = len(self._pending)
        live: list[InvokeHandle] = []
        for handle in self._workers:
            if handle.future is None or not handle.future.done():
                live.append(handle)
                continue
            self._record_worker_end(handle)
        self._workers = live
        if not pending:
            return
        if self._worker_failures >= MAX_WORKER_FAILURES:
            return
        while len(self._workers) < self.config.max_workers:
            payload = json.dumps(self.worker_event()).encode()
            handle = self.session.invoker.invoke_async(self.function_name, payload)
            self.invocations += 1
            log.debug("temporal worker invoked", function=self.function_name, pending=pending)
            self._workers.append(handle)

    def _record_worker_end(self, handle: InvokeHandle) -> None:
        try:
            response = handle.future.result()
        except Exception as exc:  # noqa: BLE001 - the invoke itself failed
            self._worker_failed(f"invoking {handle.function_name!r} failed: {exc}", exc)
            return
        if response.function_error:
            self._worker_failed(
                f"the worker function {handle.function_name!r} failed: "
                f"{response.payload[:2000].decode(errors='replace')}",
                None,
            )
            return
        self._worker_failures = 0
        try:
            summary = json.loads(response.payload)
        except ValueError:
            summary = {"raw": response.payload[:300].decode(errors="replace")}
        self.worker_summaries.append(summary)
        log.debug("temporal worker returned", summary=summary)

    def _worker_failed(self, message: str, cause: BaseException | None) -> None:
        self._worker_failures += 1
        log.warning("temporal worker invocation failed", message=message, failures=self._worker_failures)
        if self._worker_failures >= MAX_WORKER_FAILURES:
            error = WorkerInvocationError(
                f"{message}\n{self._worker_failures} worker invocations in a row failed; the pending "
                "calls cannot run. Check the worker function's logs, its [temporal] address / "
                "api_key and that lambdarun-temporal is installed in the function."
            )
            if cause is not None:
                error.__cause__ = cause
            self._fail_pending(error)
            self._worker_failures = 0

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            pending = list(self._pending.items())
            self._pending.clear()
        for task_id, future in pending:
            future.finish(exception=error)
            if self._loop is not None:
                self._loop.run(self._cancel_workflow(task_id))

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            future.cancel()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self._client = None
        self._ready = None
        gc.collect()  # finalize the temporalio client now, not at interpreter exit


def _failure_error(task_id: str, exc: BaseException) -> BaseException:
    """Map a workflow failure (not a function exception, which travels in the outcome)."""
    from temporalio.exceptions import (
        ActivityError,
        ApplicationError,
        CancelledError,
        TimeoutError as TemporalTimeout,
    )

    cause = exc.__cause__
    inner = cause.__cause__ if isinstance(cause, ActivityError) else cause
    cut = isinstance(inner, ApplicationError) and inner.type == WORKER_SHUTDOWN
    if isinstance(inner, TemporalTimeout) or cut:
        return TaskTimeoutError(
            f"call {task_id} did not finish within its time limit ([temporal] timeout, default: "
            "the worker function's timeout minus its shutdown buffer) in any of its "
            "attempts; raise [temporal] function_timeout for longer calls"
        )
    if isinstance(inner, CancelledError) or isinstance(cause, CancelledError):
        return TaskCancelledError(f"call {task_id} was cancelled")
    return RemoteEnvironmentError(f"call {task_id} failed in Temporal: {inner or cause or exc}")

