"""The Lambda side of the temporal backend: a worker invocation inside ``lambdarun.runtime``.

The controller (client side) invokes the worker function with a *worker event*::

    {"lambdarun_temporal": 1, "task_queue": "lambdarun", "deployment_name": "lambdarun",
     "build_id": "...", "idle_timeout": 1.0, "max_concurrent_calls": 32}

``lambdarun_handle_event`` (in :mod:`lambdarun_temporal.plugin`) passes it here; we run
:func:`lambdarun_temporal.lambda_worker.run_worker` with the built-in workflow and an
activity that executes lambdarun call envelopes with :func:`lambdarun.calls.execute_call`.

Which server the worker connects to, and how, comes from this side's ``[temporal]`` config
only (``LAMBDARUN_TEMPORAL__ADDRESS`` / ``__NAMESPACE`` / ``__TLS`` / ``__API_KEY`` in the
function's environment, set by the backend on the local target and by ``lambdarun
deploy``): whoever may invoke the function must not be able to send the worker, and its
API key, to a server of their choice. An event that carries ``api_key``, or an
``address`` / ``namespace`` / ``tls`` different from the configured ones, is refused with
:class:`~lambdarun_temporal.errors.WorkerEventError` before anything connects (the same
values, as older controllers sent them, are accepted and unused).
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
from lambdarun_temporal.config import MAX_CONCURRENT_CALLS, MAX_IDLE_TIMEOUT
from lambdarun_temporal.errors import LambdaWorkerConfigError, WorkerEventError
from lambdarun_temporal.lambda_worker import LambdaWorkerConfig, run_worker

if TYPE_CHECKING:
    from lambdarun.session import Session

__all__ = [
    "WORKER_EVENT_KEY",
    "WORKER_EVENT_VERSION",
    "check_worker_event",
    "is_worker_event",
    "handle_worker_event",
    "handle_server_invocation",
]

log = structlog.get_logger(__name__)

WORKER_EVENT_KEY = "lambdarun_temporal"
WORKER_EVENT_VERSION = 1

#: longest task queue / deployment / build id name an event may carry (Temporal's own
#: limit for identifiers is 1000 bytes)
MAX_NAME_LENGTH = 1000

#: seconds between heartbeats of a running call (how fast a cancel reaches it)
HEARTBEAT_INTERVAL = 1.0

_HANDLER_FIELDS = ("task_queue", "deployment_name", "build_id", "idle_timeout", "max_concurrent_calls")
_handlers: dict[tuple[Any, ...], Callable[[Any, Any], dict[str, Any]]] = {}
_handlers_lock = threading.Lock()


def is_worker_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get(WORKER_EVENT_KEY) == WORKER_EVENT_VERSION


def _server_settings(section: Any) -> dict[str, Any]:
    """What the worker connects with, from its ``[temporal]`` section only."""
    return {
        "address": section.address,
        "namespace": section.namespace,
        "tls": bool(section.tls or section.api_key),
    }


def check_worker_event(event: dict[str, Any], section: Any) -> None:
    """Refuse an event that tries to choose the server, namespace, TLS or credentials.

    Raises :class:`WorkerEventError` for an ``api_key`` in the event, or an ``address`` /
    ``namespace`` / ``tls`` that differs from the worker's configuration (the values are
    not echoed: the caller may be the attacker), and :class:`LambdaWorkerConfigError`
    when the worker function has no server configured.
    """
    if "api_key" in event:
        raise WorkerEventError(
            "the worker event carries an api_key: credentials never travel in events; the "
            "worker uses [temporal] api_key of its own function (LAMBDARUN_TEMPORAL__API_KEY)"
        )
    configured = _server_settings(section)
    conflicts = sorted(
        key for key in ("address", "namespace", "tls")
        if key in event and (bool(event[key]) if key == "tls" else event[key]) != configured[key]
    )
    if conflicts:
        raise WorkerEventError(
            f"the worker event sets {', '.join(conflicts)} differently from the worker function's "
            "[temporal] configuration; the worker connects only where its own configuration "
            "says (LAMBDARUN_TEMPORAL__ADDRESS / __NAMESPACE / __TLS in the function's "
            "environment). Refused: nothing was connected."
        )
    for key in ("task_queue", "deployment_name", "build_id"):
        value = event.get(key)
        if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
            raise WorkerEventError(
                f"the worker event's {key} must be a non-empty string of at most "
                f"{MAX_NAME_LENGTH} characters; send events built by the temporal backend"
            )
    for key, low, high in (("idle_timeout", 0.0, MAX_IDLE_TIMEOUT),
                           ("max_concurrent_calls", 0, MAX_CONCURRENT_CALLS)):
        value = event.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high \
                or (key == "max_concurrent_calls" and not isinstance(value, int)):
            raise WorkerEventError(
                f"the worker event's {key} must be a number in ({low:g}, {high:g}]"
                f"{' (an integer)' if key == 'max_concurrent_calls' else ''}; got {type(value).__name__}"
            )
    if not configured["address"]:
        raise LambdaWorkerConfigError(
            "the worker function has no Temporal server configured: set "
            "LAMBDARUN_TEMPORAL__ADDRESS (and __NAMESPACE, __API_KEY) in its environment; the "
            "temporal backend sets it on the local target and `lambdarun deploy` forwards "
            "[temporal] address from lambdarun.toml"
        )


def make_call_activity(session: Session) -> Callable[[bytes], bytes]:
    """The activity running one call envelope; user errors come back inside the outcome."""
    from lambdarun.calls import bound_meta, execute_call, pack_failure
    from lambdarun.envelope import unpack
    from lambdarun.errors import PayloadTooLargeError

    @activity.defn(name=ACTIVITY_NAME)
    def execute_lambdarun_call(envelope: bytes, call_url: str = "", outcome_url: str = "") -> bytes:
        # locations come from the workflow input: only under this function's storage prefix
        # (never file://), checked before anything is read, run or written
        location = session.open_event_url(outcome_url, field="outcome_url") if outcome_url else None
        if call_url:
            storage, key = session.open_event_url(call_url, field="call_url")
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
        if activity.is_cancelled() and unpack(outcome).meta.get("ok") is not True:
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
                    meta=bound_meta(unpack(outcome).meta) or {"refused": True},
                )
            assert location is not None
            storage, key = location
            storage.put(key, outcome)
            return b""
        return outcome

    return execute_lambdarun_call


def _handler_for(event: dict[str, Any], session: Session) -> Callable[[Any, Any], dict[str, Any]]:
    # only the fields the handler uses: an invoker adding other keys cannot make it build
    # (and keep) a new handler per event
    key = tuple(str(event.get(k)) for k in _HANDLER_FIELDS) + (id(session),)
    with _handlers_lock:
        handler = _handlers.get(key)
        if handler is not None:
            return handler
        section = session.settings.section("temporal")
        calls = int(event.get("max_concurrent_calls") or section.max_concurrent_calls)
        call_activity = make_call_activity(session)

        server = _server_settings(section)

        def configure(config: LambdaWorkerConfig) -> None:
            connect = config.client_connect_config
            connect["target_host"] = server["address"]
            connect["namespace"] = server["namespace"]
            if section.api_key:
                connect["api_key"] = section.api_key
            if server["tls"]:
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
    check_worker_event(event, session.settings.section("temporal"))
    summary = _handler_for(event, session)(event, context)
    log.info("temporal worker invocation done", **summary)
    return {WORKER_EVENT_KEY: WORKER_EVENT_VERSION, "task_queue": event["task_queue"], **summary}


def handle_server_invocation(context: Any, session: Session) -> dict[str, Any]:
    """A Serverless Workers invocation (the Temporal server's controller sends an empty
    event): run one worker for the task queue, deployment and build id of this function's
    own ``[temporal]`` configuration (set by the backend / ``lambdarun deploy``)."""
    section = session.settings.section("temporal")
    event = {
        WORKER_EVENT_KEY: WORKER_EVENT_VERSION,
        "task_queue": section.task_queue,
        "deployment_name": section.deployment_name,
        "build_id": section.build_id,
        "idle_timeout": section.idle_timeout,
        "max_concurrent_calls": section.max_concurrent_calls,
    }
    return handle_worker_event(event, context, session)
