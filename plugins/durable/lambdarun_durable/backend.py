"""``DurableBackend``: ``lambdarun.run(handler, event, backend="durable")``.

On a target whose Lambda service has the durable-execution API (the local service, AWS;
``durable.api = "auto"`` asks the service), the backend's runtime function is a durable
function (``DurableConfig``): ``submit`` starts an execution with a qualified ``Invoke``
(``InvocationType=Event``, ``DurableExecutionName`` from the task id, so a retried request
starts nothing twice) whose payload is ``{HANDLER_KEY: signed envelope, INPUT_KEY: event}``,
and the future waits for ``GetDurableExecution`` to report an end through the session's
poller. The service re-invokes the handler; the caller may die meanwhile.

Where no durable API exists (``durable.api = "orchestrator"``, or a service without it),
the caller's process is the orchestrator (the part AWS runs for you): it creates the
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
import uuid
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
from lambdarun_durable.events import HANDLER_KEY, INPUT_KEY
from lambdarun_durable.lambda_handler import as_durable_handler, handle_durable_event  # noqa: F401 - moved
from lambdarun_durable.orchestrator import Orchestrator, result_value
from lambdarun_durable.service import DurableService
from lambdarun_durable.config import DurableConfig

if TYPE_CHECKING:
    from lambdarun.session import Session

log = structlog.get_logger(__name__)
#: DurableConfig.ExecutionTimeout's largest value (one year), used when none is configured
MAX_EXECUTION_TIMEOUT = 31_622_400

def _error_type(payload: bytes) -> str | None:
    """``errorType`` of a Lambda function-error payload (None when it is not one)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body.get("errorType") if isinstance(body, dict) else None


def api_function_name(settings: Any) -> str:
    """The durable function the backend starts executions in on the durable-execution API:
    ``durable.function_name``, else ``<function_name>-durable`` (a durable function answers
    only durable Invokes: never the core runtime function)."""
    config: DurableConfig = settings.section("durable")
    return config.function_name or f"{settings.function_name}-durable"


def target_has_durable_api(lam: Any, function_name: str) -> bool:
    """Ask a Lambda service (a boto3 ``lambda`` client): ``ListDurableExecutionsByFunction``
    answers (or says the function does not exist yet) only where the durable API is served."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        lam.list_durable_executions_by_function(FunctionName=function_name, MaxItems=1)
    except ClientError as exc:
        return exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
    except BotoCoreError:
        return False
    return True


def uses_durable_api(session: Session) -> bool:
    """The ``durable.api`` switch resolved for ``session``'s target: True where executions
    live on the target's durable-execution API, False where the in-process orchestrator
    keeps them in the checkpoint store (``durable.store_url``)."""
    mode = session.settings.section("durable").api
    if mode != "auto":
        return mode == "api"
    return target_has_durable_api(session.target.client("lambda"), api_function_name(session.settings))


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
        self._api: bool | None = None

    # -- which path
    @property
    def uses_api(self) -> bool:
        """Whether executions run on the target's durable-execution API (else in-process)."""
        if self._api is None:
            self._api = uses_durable_api(self.session)
        return self._api

    def _api_function_name(self) -> str:
        return api_function_name(self.session.settings)

    # -- the function everything runs in
    def function_spec(self) -> FunctionSpec:
        """The runtime function every durable execution runs in (created once, through
        :attr:`~lambdarun.backends.Backend.function_name`)."""
        environment = self.function_environment()
        # the only checkpoint store the function's events may name
        environment["LAMBDARUN_DURABLE__STORE_URL"] = self.store_url
        if self.uses_api:
            return FunctionSpec(
                name=self._api_function_name(),
                timeout=self.config.timeout,
                memory_size=self.config.memory,
                environment=environment,
                durable_config={"ExecutionTimeout": self.config.execution_timeout or MAX_EXECUTION_TIMEOUT},
            )
        return FunctionSpec(
            name=self.config.function_name or self.session.settings.function_name,
            timeout=self.config.timeout,
            memory_size=self.config.memory,
            environment=environment,
        )

    def register_durable_function(self, function_name: str, handler: Callable) -> None:
        """Let ``context.invoke(function_name, ...)`` run ``handler`` on the runtime function.

        The in-process orchestrator's path only: on a durable-execution API the service runs a
        chained invoke in the function it names, so that function must be deployed (as on AWS,
        whose cloud test runner registers nothing either); this raises ConfigError there."""
        if self.uses_api:
            raise ConfigError(
                f"register_durable_function({function_name!r}) works only with durable.api = 'orchestrator': "
                "on the target's durable-execution API the service invokes the function a chained invoke names. "
                f"Create {function_name!r} on the target (with DurableConfig for a durable handler), or set "
                "durable.api = 'orchestrator'"
            )
        self._functions[function_name] = as_durable_handler(handler)

    # -- Backend API
    def submit(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> LambdaFuture:
        """Start ``func`` as a durable execution with ``args[0]`` (or ``event=``) as its input."""
        arn = self.start(func, args[0] if args else kwargs.get("event", {}))
        return self.resume(arn)

    def start_on_api(self, func: Callable[..., Any], event: Any = None, *, name: str | None = None) -> str:
        """Start an execution on the durable-execution API (Invoke, Event); return its ARN.

        ``name`` (DurableExecutionName; default: a new task id) makes the start idempotent:
        the same name and payload return the same execution."""
        handler = as_durable_handler(func)
        function_name = self.function_name
        envelope = base64.b64encode(encode_call(self.session, handler)).decode("ascii")
        payload = json.dumps({HANDLER_KEY: envelope, INPUT_KEY: event if event is not None else {}})
        lam = self.session.target.client("lambda")
        out = lam.invoke(FunctionName=function_name, Qualifier="$LATEST", InvocationType="Event",
                         DurableExecutionName=name or f"lambdarun-{uuid.uuid4().hex}", Payload=payload.encode())
        arn = out.get("DurableExecutionArn")
        if not arn:
            raise ConfigError(
                f"Invoke of {function_name!r} started no durable execution: the function has no "
                "DurableConfig (it can only be set when a function is created). Delete it, or set "
                "durable.function_name to a new name, or durable.api = 'orchestrator'"
            )
        log.debug("durable execution started on the API", arn=arn, function=function_name)
        return arn

    def wait_on_api(self, arn: str) -> LambdaFuture:
        """A future of the execution ``arn`` on the durable-execution API: resolved when
        ``GetDurableExecution`` reports an end (polled through the session's poller)."""
        lam = self.session.target.client("lambda")
        future = LambdaFuture(arn)
        future.info["execution_arn"] = arn
        last: dict[str, Any] = {}

        def ended() -> bool:
            last.update(lam.get_durable_execution(DurableExecutionArn=arn))
            return last.get("Status") not in (None, "RUNNING", "PENDING", "PAUSED", "PAUSING")

        def wait() -> None:
            future.mark_running()
            try:
                self.session.poller.wait([ConditionHandle(ended)], timeout=None)
            except BaseException as exc:  # noqa: BLE001
                future.finish(exception=exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                return
            if last.get("Status") == "SUCCEEDED":
                future.finish(result_value({"Result": last.get("Result")}))
            else:
                error = last.get("Error") or {"ErrorType": f"Execution{str(last.get('Status')).title()}"}
                future.finish(exception=DurableExecutionFailed(
                    f"durable execution {arn} ended {last.get('Status')}: "
                    f"{error.get('ErrorType')}: {error.get('ErrorMessage')}", error=error, arn=arn))

        self._pool.submit(wait)
        future.set_canceller(lambda: lam.stop_durable_execution(DurableExecutionArn=arn))
        return future

    def start(self, func: Callable[..., Any], event: Any = None) -> str:
        """Create the execution (nothing runs yet); :meth:`resume` drives it. Returns its ARN.

        The handler envelopes are kept with the execution, so any process with the same
        settings can drive it (``lambdarun durable resume ARN``) if this one dies.

        On the durable-execution API (:attr:`uses_api`) the service runs it at once.
        """
        if self.uses_api:
            return self.start_on_api(func, event)
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

        On the durable-execution API (:attr:`uses_api`) the service drives every execution:
        this only waits for ``arn`` to end (``wait`` is unused).
        """
        if self.uses_api:
            return self.wait_on_api(arn)
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
        if self.uses_api:
            data = result.encode() if isinstance(result, str) else (result or b"")
            self.session.target.client("lambda").send_durable_execution_callback_success(
                CallbackId=callback_id, Result=data)
            return
        self.service.send_callback_success(callback_id, result)

    def send_callback_failure(self, callback_id: str, error: dict[str, Any] | None = None) -> None:
        if self.uses_api:
            self.session.target.client("lambda").send_durable_execution_callback_failure(
                CallbackId=callback_id, **({"Error": error} if error else {}))
            return
        self.service.send_callback_failure(callback_id, error)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        if self.uses_api:
            self.session.target.client("lambda").send_durable_execution_callback_heartbeat(CallbackId=callback_id)
            return
        self.service.send_callback_heartbeat(callback_id)

    def get_history(self, arn: str) -> dict[str, Any]:
        if self.uses_api:
            lam = self.session.target.client("lambda")
            events: list[dict[str, Any]] = []
            kw: dict[str, Any] = {}
            while True:
                page = lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True, **kw)
                events += page.get("Events") or []
                if not page.get("NextMarker"):
                    return {"Events": events}
                kw["Marker"] = page["NextMarker"]
        return self.service.get_history(arn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=False)
