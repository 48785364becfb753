"""``DurableBackend``: ``lambdarun.run(handler, event, backend="durable")``.

The caller's process is the orchestrator (the part AWS runs for you): it creates the
execution in the checkpoint store, invokes the lambdarun runtime function on the
current target with the AWS event shape, fires timers, starts chained invokes and
re-invokes until the execution ends. The handler itself runs inside Lambda, where
:func:`lambdarun_durable.lambda_handler.handle_durable_event` (the
``lambdarun_handle_event`` hook) replays and runs it.

The handler travels with each event as a signed lambdarun call envelope under
``"LambdarunDurableHandler"`` (the AWS SDK ignores unknown keys); a function deployed
for plain AWS events names its handler with the ``durable.handler`` setting instead.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from lambdarun.backends import Backend
from lambdarun.calls import encode_call
from lambdarun.errors import (
    CheckpointConflictError,
    ConfigError,
    InvocationError,
    RemoteExecutionError,
)
from lambdarun.futures import LambdaFuture
from lambdarun.types import ConditionHandle, FunctionSpec

from lambdarun_durable.lambda_service import TERMINAL_STATUSES
from lambdarun_durable.events import HANDLER_KEY
from lambdarun_durable.lambda_handler import as_durable_handler, handle_durable_event  # noqa: F401 - moved
from lambdarun_durable.orchestrator import Orchestrator, result_value
from lambdarun_durable.service import DurableService
from lambdarun_durable.config import DurableConfig

if TYPE_CHECKING:
    from lambdarun.session import Session

log = structlog.get_logger(__name__)

def _error_type(payload: bytes) -> str | None:
    """``errorType`` of a Lambda function-error payload (None when it is not one)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body.get("errorType") if isinstance(body, dict) else None


class DurableExecutionFailed(RemoteExecutionError):
    """The durable execution ended FAILED, STOPPED or TIMED_OUT; ``error`` is its ErrorObject."""

    def __init__(self, message: str, *, error: dict[str, Any], arn: str) -> None:
        super().__init__(
            message,
            original_type=str(error.get("ErrorType") or ""),
            remote_traceback="".join(error.get("StackTrace") or []),
        )
        self.error = error
        self.arn = arn


class DurableBackend(Backend):
    """Durable executions on the current target; the calling process orchestrates."""

    id = "durable"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.config: DurableConfig = session.settings.section("durable")
        self.store_url = self.config.resolved_store_url()
        self.store = session.checkpoint_store(self.store_url)
        self.service = DurableService(self.store, region=session.settings.region)
        self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="lambdarun-durable")
        self._functions: dict[str, Callable] = {}

    # -- the function everything runs in
    def function_spec(self) -> FunctionSpec:
        """The runtime function every durable execution runs in (created once, through
        :attr:`~lambdarun.backends.Backend.function_name`)."""
        environment = self.function_environment()
        # the only checkpoint store the function's events may name
        environment["LAMBDARUN_DURABLE__STORE_URL"] = self.store_url
        return FunctionSpec(
            name=self.config.function_name or self.session.settings.function_name,
            timeout=self.config.timeout,
            memory_size=self.config.memory,
            environment=environment,
        )

    def register_durable_function(self, function_name: str, handler: Callable) -> None:
        """Let ``context.invoke(function_name, ...)`` run ``handler`` on the runtime function."""
        self._functions[function_name] = as_durable_handler(handler)

    # -- Backend API
    def submit(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> LambdaFuture:
        """Start ``func`` as a durable execution with ``args[0]`` (or ``event=``) as its input."""
        arn = self.start(func, args[0] if args else kwargs.get("event", {}))
        return self.resume(arn)

    def start(self, func: Callable[..., Any], event: Any = None) -> str:
        """Create the execution (nothing runs yet); :meth:`resume` drives it. Returns its ARN.

        The handler envelopes are kept with the execution, so any process with the same
        settings can drive it (``lambdarun durable resume ARN``) if this one dies.
        """
        handler = as_durable_handler(func)
        function_name = self.function_name
        envelopes = {function_name: base64.b64encode(encode_call(self.session, handler)).decode("ascii")}
        for name, h in self._functions.items():
            envelopes[name] = base64.b64encode(encode_call(self.session, h)).decode("ascii")
        return self.service.start_execution(
            function_name,
            json.dumps(event if event is not None else {}),
            execution_timeout=self.config.execution_timeout,
            private={"Handlers": envelopes, "RuntimeFunction": function_name},
        )

    def resume(self, arn: str, *, wait: float | None = None) -> LambdaFuture:
        """Drive an existing execution to its end in the background; return its future.

        One driver per execution: this driver takes the execution's lease first, waiting up
        to ``wait`` seconds (default: the ``durable.lease_wait`` setting) while another
        driver holds it; the future then raises :class:`~lambdarun.errors.LeaseHeldError`.
        A finished execution resolves at once to its result (or raises its error).
        """
        ops = self.service.operations(arn)
        exec_op = next(o for o in ops.values() if o["Type"] == "EXECUTION")
        envelopes: dict[str, str] = exec_op.get("_Handlers") or {}  # gone once it finished
        function_name: str = exec_op.get("_RuntimeFunction") or self.function_name
        finished = exec_op["Status"] in TERMINAL_STATUSES
        if not finished and function_name not in envelopes and not self.config.handler:
            raise ConfigError(
                f"execution {arn} was not started by the durable backend (no handler stored); "
                "set durable.handler to drive it"
            )
        future = LambdaFuture(arn)
        future.info["execution_arn"] = arn

        def invoke(name: str, ev: dict[str, Any]) -> dict[str, Any]:
            body = dict(ev)
            target_fn = name
            if name in envelopes:
                body[HANDLER_KEY] = envelopes[name]
                target_fn = function_name
            response = self.session.invoker.invoke(target_fn, json.dumps(body).encode())
            if response.function_error:
                if _error_type(response.payload) == CheckpointConflictError.__name__:
                    raise CheckpointConflictError(  # another writer first: re-invoked, never fatal
                        f"durable invocation of {target_fn!r} for {ev['DurableExecutionArn']} lost a "
                        f"checkpoint conflict: {response.payload[:500].decode('utf-8', 'replace')}"
                    )
                raise InvocationError(
                    f"durable invocation of {target_fn!r} for {ev['DurableExecutionArn']} failed: "
                    f"{response.payload[:500].decode('utf-8', 'replace')}"
                )
            return json.loads(response.payload)

        orchestrator = Orchestrator(
            self.service,
            invoke,
            wait_external=self._waiter(arn),
            realtime=True,
            max_invocation_retries=self.config.max_invocation_retries,
            lease=self.config.lease_policy(wait),
        )

        def drive() -> None:
            future.mark_running()
            try:
                response = orchestrator.run(function_name, arn)
            except BaseException as exc:  # noqa: BLE001
                future.finish(exception=exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                return
            future.info["invocations"] = orchestrator.invocations
            if response.get("Status") == "SUCCEEDED":
                raw = response.get("Result")
                if raw == "":
                    raw = self.service.describe(arn).get("Result")
                future.finish(result_value({"Result": raw}))
            else:
                error = response.get("Error") or {}
                future.finish(
                    exception=DurableExecutionFailed(
                        f"durable execution {arn} failed: {error.get('ErrorType')}: {error.get('ErrorMessage')}",
                        error=error,
                        arn=arn,
                    )
                )

        self._pool.submit(drive)
        future.set_canceller(lambda: self.service.stop_execution(arn))
        return future

    def _waiter(self, arn: str) -> Callable[[float | None], bool]:
        """``wait(timeout)``: until the execution's checkpoint moves on (a callback, a
        heartbeat, a stop) or ``timeout``; waits on the session's poller (``[polling]``)."""

        def wait(timeout: float | None) -> bool:
            load = getattr(self.store, "load_state", self.store.load)
            start = load(arn).version
            moved = ConditionHandle(lambda: load(arn).version != start)
            done, _ = self.session.poller.wait([moved], timeout=timeout)
            return bool(done)

        return wait

    # -- service API passthrough
    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> None:
        self.service.send_callback_success(callback_id, result)

    def send_callback_failure(self, callback_id: str, error: dict[str, Any] | None = None) -> None:
        self.service.send_callback_failure(callback_id, error)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self.service.send_callback_heartbeat(callback_id)

    def get_history(self, arn: str) -> dict[str, Any]:
        return self.service.get_history(arn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=False)
