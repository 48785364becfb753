"""The Lambda side of the temporal backend: a worker invocation inside ``lambdarun.runtime``.

The controller (client side) invokes the worker function with a *worker event*::

    {"lambdarun_temporal": 1, "address": "host:port", "namespace": "default",
     "task_queue": "lambdarun", "deployment_name": "lambdarun", "build_id": "...",
     "tls": false, "idle_timeout": 1.0, "max_concurrent_calls": 32}

``lambdarun_handle_event`` (in :mod:`lambdarun_temporal.plugin`) passes it here; we run
:func:`lambdarun_temporal.lambda_worker.run_worker` with the built-in workflow and an
activity that executes lambdarun call envelopes with :func:`lambdarun.calls.execute_call`.
The API key, which must not travel in the event, comes from this side's ``[temporal]``
config (``LAMBDARUN_TEMPORAL__API_KEY`` in the function's environment).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from temporalio import activity
from temporalio.common import WorkerDeploymentVersion
from temporalio.exceptions import ApplicationError

from lambdarun_temporal._workflow import ACTIVITY_NAME, INLINE_LIMIT, WORKER_SHUTDOWN, CallWorkflow
from lambdarun_temporal.lambda_worker import LambdaWorkerConfig, run_worker

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = ["WORKER_EVENT_KEY", "WORKER_EVENT_VERSION", "is_worker_event", "handle_worker_event"]

log = structlog.get_logger(__name__)

WORKER_EVENT_KEY = "lambdarun_temporal"
WORKER_EVENT_VERSION = 1

#: seconds between heartbeats of a running call (how fast a cancel reaches it)
HEARTBEAT_INTERVAL = 1.0

_handlers: dict[tuple[Any, ...], Callable[[Any, Any], dict[str, Any]]] = {}
_handlers_lock = threading.Lock()


def is_worker_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get(WORKER_EVENT_KEY) == WORKER_EVENT_VERSION


def make_call_activity(session: Session) -> Callable[[bytes], bytes]:
    """The activity running one call envelope; user errors come back inside the outcome."""
    from lambdarun.calls import decode_outcome, execute_call, pack_failure
    from lambdarun.errors import PayloadTooLargeError

    @activity.defn(name=ACTIVITY_NAME)
    def execute_lambdarun_call(envelope: bytes, call_url: str = "", outcome_url: str = "") -> bytes:
        if call_url:
            storage, key = session.open_url(call_url)
            envelope = storage.get(key)
        # Heartbeats carry cancellation: when the caller cancels (or the worker shuts down),
        # the SDK interrupts this thread and the call stops instead of running to its end.
        stop = threading.Event()
        context = contextvars.copy_context()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_INTERVAL):
                try:
                    context.run(activity.heartbeat)
                except Exception:  # noqa: BLE001 - the activity is finishing
                    return

        threading.Thread(target=beat, name="lambdarun-call-heartbeat", daemon=True).start()
        try:
            # each Temporal retry of the activity is a new attempt of the call (claimed as such)
            outcome = execute_call(session, envelope, attempt=activity.info().attempt)
        finally:
            stop.set()
        if activity.is_cancelled() and not decode_outcome(session, outcome).ok:
            # The worker invocation ended under the call (its deadline came): the exception
            # is the SDK's cancellation, not the function's. Fail the attempt so Temporal
            # retries it on the next worker instead of reporting a bogus error.
            raise ApplicationError(
                "the worker invocation ended before the call finished", type=WORKER_SHUTDOWN
            )
        if len(outcome) > INLINE_LIMIT:
            if not outcome_url:
                return pack_failure(
                    session,
                    PayloadTooLargeError(
                        f"the result ({len(outcome)} bytes) is over the Temporal payload limit "
                        "and the call gave no outcome_url to store it; configure storage"
                    ),
                )
            storage, key = session.open_url(outcome_url)
            storage.put(key, outcome)
            return b""
        return outcome

    return execute_lambdarun_call


def _handler_for(event: dict[str, Any], session: Session) -> Callable[[Any, Any], dict[str, Any]]:
    key = tuple(sorted((k, str(v)) for k, v in event.items())) + (id(session),)
    with _handlers_lock:
        handler = _handlers.get(key)
        if handler is not None:
            return handler
        section = session.settings.section("temporal")
        calls = int(event.get("max_concurrent_calls") or section.max_concurrent_calls)
        call_activity = make_call_activity(session)

        def configure(config: LambdaWorkerConfig) -> None:
            connect = config.client_connect_config
            connect["target_host"] = event["address"]
            connect["namespace"] = event.get("namespace", "default")
            if section.api_key:
                connect["api_key"] = section.api_key
            if event.get("tls") or section.tls or section.api_key:
                connect["tls"] = True
            config.worker_config["task_queue"] = event["task_queue"]
            config.worker_config["workflows"] = [CallWorkflow]
            config.worker_config["activities"] = [call_activity]
            executor = ThreadPoolExecutor(calls, thread_name_prefix="lambdarun-call")
            config.worker_config["activity_executor"] = executor
            config.worker_config["max_concurrent_activities"] = calls
            # send heartbeats (and so receive cancellations) within about a second
            config.worker_config["max_heartbeat_throttle_interval"] = timedelta(seconds=1)
            config.worker_config["default_heartbeat_throttle_interval"] = timedelta(seconds=1)
            config.idle_timeout = timedelta(seconds=float(event.get("idle_timeout", 1.0)))
            # threads of a call that outlived the worker are not joined (cancel_futures)
            config.shutdown_hooks.append(lambda: executor.shutdown(wait=False, cancel_futures=True))

        version = WorkerDeploymentVersion(
            deployment_name=event["deployment_name"], build_id=event["build_id"]
        )
        handler = run_worker(version, configure)
        _handlers[key] = handler
        return handler


def handle_worker_event(event: dict[str, Any], context: Any, session: Session) -> dict[str, Any]:
    """Run one worker invocation and return its summary (``stop_reason``, counts, seconds)."""
    summary = _handler_for(event, session)(event, context)
    log.info("temporal worker invocation done", **summary)
    return {WORKER_EVENT_KEY: WORKER_EVENT_VERSION, "task_queue": event["task_queue"], **summary}
