"""In-process test runner (like ``aws_durable_execution_sdk_python_testing``) with time skipping.

    from lambdarun_durable.testing import DurableFunctionTestRunner

    with DurableFunctionTestRunner(handler=my_handler) as runner:
        result = runner.run(input={"order_id": "o1"})
        assert result.status is InvocationStatus.SUCCEEDED
        assert result.result_value == {...}

Waits and retry delays take no wall time: the runner's clock jumps to the next due
time. Callback deadlines are different: the runner first gives the test
``callback_grace`` real seconds to answer (``send_callback_*``); with
``callback_grace=None`` it never skips to a callback deadline by itself and time only
moves through :meth:`advance_time`.

This module is over ~500 lines because it holds the public API of AWS's testing package
(runners, the result model, the cloud runner) under one import path, as that package's
``runner`` module does, so a test ports by changing its imports only.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lambdarun_durable.execution import DurableInvocationInput, durable_execution, is_durable_handler
from lambdarun_durable.lambda_service import ErrorObject, InvocationStatus, OperationStatus, OperationType
from lambdarun_durable.history import history_events
from lambdarun_durable.orchestrator import Orchestrator
from lambdarun_durable.service import DurableService
from lambdarun_durable.records import decode_token, encode_token, fold, public_op
from lambdarun_durable.stores import SQLiteCheckpointStore


class VirtualClock:
    """A clock that starts at real time and only moves forward when told to."""

    def __init__(self, start: float | None = None) -> None:
        self._now = start if start is not None else time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def advance_to(self, t: float) -> None:
        with self._lock:
            self._now = max(self._now, t)


@dataclass
class TestLambdaContext:
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "test-function"
    invoked_function_arn: str = ""
    memory_limit_in_mb: str = "1024"
    log_group_name: str | None = None
    log_stream_name: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class DurableFunctionsTestError(Exception):
    """A test runner could not do what was asked (AWS testing package's name)."""


class RunnerClosedError(DurableFunctionsTestError):
    """The runner was closed while an execution still waited (for a callback, ...)."""


class ExecutionStatus(Enum):
    """The execution's own status (``GetDurableExecution``), beside the invocation status."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    TIMED_OUT = "TIMED_OUT"


_DETAILS = {
    "STEP": "StepDetails",
    "CONTEXT": "ContextDetails",
    "CALLBACK": "CallbackDetails",
    "CHAINED_INVOKE": "ChainedInvokeDetails",
    "WAIT": "WaitDetails",
    "EXECUTION": "ExecutionDetails",
}


@dataclass
class Operation:
    """An operation of the execution, as ``aws_durable_execution_sdk_python_testing`` has it.

    ``operation_type``/``status`` are the SDK's enums; timestamps are aware datetimes;
    ``result`` is the operation's serialized payload (a string, as on AWS). ``raw`` keeps
    the service-shaped operation dict.
    """

    operation_id: str
    operation_type: OperationType
    status: OperationStatus
    parent_id: str | None = field(default=None, kw_only=True)
    name: str | None = field(default=None, kw_only=True)
    sub_type: str | None = field(default=None, kw_only=True)
    start_timestamp: datetime.datetime | None = field(default=None, kw_only=True)
    end_timestamp: datetime.datetime | None = field(default=None, kw_only=True)
    raw: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    def _details(self) -> dict[str, Any]:
        return self.raw.get(_DETAILS.get(self.operation_type.value, ""), None) or {}


@dataclass
class ExecutionOperation(Operation):
    input_payload: str | None = None


@dataclass
class ContextOperation(Operation):
    child_operations: list[Operation] = field(default_factory=list)
    result: str | None = None
    error: ErrorObject | None = None

    def get_operation_by_name(self, name: str) -> Operation:
        for operation in self.child_operations:
            if operation.name == name:
                return operation
        raise DurableFunctionsTestError(f"Child Operation with name '{name}' not found")

    def get_step(self, name: str) -> StepOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_wait(self, name: str) -> WaitOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_context(self, name: str) -> ContextOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_callback(self, name: str) -> CallbackOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_invoke(self, name: str) -> InvokeOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_execution(self, name: str) -> ExecutionOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]


@dataclass
class StepOperation(ContextOperation):
    attempt: int = 0
    next_attempt_timestamp: datetime.datetime | None = None


@dataclass
class WaitOperation(Operation):
    scheduled_end_timestamp: datetime.datetime | None = None


@dataclass
class CallbackOperation(ContextOperation):
    callback_id: str | None = None


@dataclass
class InvokeOperation(Operation):
    result: str | None = None
    error: ErrorObject | None = None


def _ts(ms: Any) -> datetime.datetime | None:
    if ms is None:
        return None
    if isinstance(ms, datetime.datetime):
        return ms
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def create_operation(op: dict[str, Any], all_operations: list[dict[str, Any]] | None = None) -> Operation:
    """An :class:`Operation` (of the subclass for its type) from a service-shaped dict."""
    op_type = OperationType(op["Type"])
    common: dict[str, Any] = {
        "operation_id": op["Id"],
        "operation_type": op_type,
        "status": OperationStatus(op["Status"]),
        "parent_id": op.get("ParentId"),
        "name": op.get("Name"),
        "sub_type": op.get("SubType"),
        "start_timestamp": _ts(op.get("StartTimestamp")),
        "end_timestamp": _ts(op.get("EndTimestamp")),
        "raw": public_op(op),
    }
    details = op.get(_DETAILS.get(op_type.value, ""), None) or {}
    error = ErrorObject.from_dict(details["Error"]) if details.get("Error") else None

    def children() -> list[Operation]:
        return [create_operation(o, all_operations) for o in all_operations or () if o.get("ParentId") == op["Id"]]

    if op_type is OperationType.EXECUTION:
        return ExecutionOperation(**common, input_payload=details.get("InputPayload"))
    if op_type is OperationType.STEP:
        return StepOperation(
            **common, child_operations=children(), result=details.get("Result"), error=error,
            attempt=details.get("Attempt", 0), next_attempt_timestamp=_ts(details.get("NextAttemptTimestamp")),
        )
    if op_type is OperationType.WAIT:
        return WaitOperation(**common, scheduled_end_timestamp=_ts(details.get("ScheduledEndTimestamp")))
    if op_type is OperationType.CALLBACK:
        return CallbackOperation(
            **common, child_operations=children(), result=details.get("Result"), error=error,
            callback_id=details.get("CallbackId"),
        )
    if op_type is OperationType.CHAINED_INVOKE:
        return InvokeOperation(**common, result=details.get("Result"), error=error)
    return ContextOperation(**common, child_operations=children(), result=details.get("Result"), error=error)


@dataclass
class Invocation:
    """One invocation of the handler, from its ``InvocationCompleted`` history event."""

    request_id: str | None
    start_timestamp: datetime.datetime | None
    end_timestamp: datetime.datetime | None
    error: ErrorObject | None = None


@dataclass
class DurableFunctionTestResult:
    """The end of an execution: AWS testing package's fields, plus ``history``/``invocations``."""

    status: InvocationStatus
    operations: list[Operation]
    result: str | None = None
    error: ErrorObject | None = None
    execution_status: ExecutionStatus | None = None
    execution_arn: str = ""
    #: the GetDurableExecutionHistory events (service shape)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: every invocation of the handler, in order (``len(result.invocations)``: how many)
    invocations: list[Invocation] = field(default_factory=list)

    @property
    def result_value(self) -> Any:
        """The JSON-decoded ``result`` (lambdarun's convenience)."""
        return None if self.result in (None, "") else json.loads(self.result)

    @classmethod
    def from_execution_history(
        cls, execution: dict[str, Any], history: dict[str, Any] | list[dict[str, Any]]
    ) -> DurableFunctionTestResult:
        """Build a result from ``GetDurableExecution`` and ``GetDurableExecutionHistory`` answers."""
        events = history["Events"] if isinstance(history, dict) else list(history)
        status_text = execution.get("Status", "FAILED")
        svc_ops = events_to_operations(events)
        top = [
            create_operation(o, svc_ops) for o in svc_ops if o["Type"] != "EXECUTION" and not o.get("ParentId")
        ]
        err = execution.get("Error")
        return cls(
            status=InvocationStatus[status_text] if status_text in InvocationStatus.__members__ else InvocationStatus.FAILED,
            operations=top,
            result=execution.get("Result"),
            error=ErrorObject.from_dict(err) if err else None,
            execution_status=ExecutionStatus[status_text] if status_text in ExecutionStatus.__members__ else ExecutionStatus.FAILED,
            execution_arn=execution.get("DurableExecutionArn", ""),
            history=events,
            invocations=_invocations(events),
        )

    def get_operation_by_name(self, name: str) -> Operation:
        for operation in self.operations:
            if operation.name == name:
                return operation
        raise DurableFunctionsTestError(f"Operation with name '{name}' not found")

    def get_step(self, name: str) -> StepOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_wait(self, name: str) -> WaitOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_context(self, name: str) -> ContextOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_callback(self, name: str) -> CallbackOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_invoke(self, name: str) -> InvokeOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_execution(self, name: str) -> ExecutionOperation:
        return self.get_operation_by_name(name)  # type: ignore[return-value]

    def get_all_operations(self) -> list[Operation]:
        """Every operation, nested ones included (depth first, in execution order)."""
        out: list[Operation] = []
        stack = list(self.operations)
        while stack:
            op = stack.pop(0)
            out.append(op)
            stack[0:0] = getattr(op, "child_operations", None) or []
        return out

    def find_operation(self, name: str) -> Operation:
        """The first operation named ``name`` at any depth (lambdarun's convenience)."""
        for op in self.get_all_operations():
            if op.name == name:
                return op
        raise DurableFunctionsTestError(
            f"no operation named {name!r}; names: {[o.name for o in self.get_all_operations()]}"
        )


def _invocations(events: list[dict[str, Any]]) -> list[Invocation]:
    out = []
    for ev in events:
        if ev.get("EventType") != "InvocationCompleted":
            continue
        d = ev.get("InvocationCompletedDetails") or {}
        err = (d.get("Error") or {}).get("Payload") if isinstance(d.get("Error"), dict) else None
        out.append(
            Invocation(
                request_id=d.get("RequestId"),
                start_timestamp=_ts(d.get("StartTimestamp")),
                end_timestamp=_ts(d.get("EndTimestamp")),
                error=ErrorObject.from_dict(err) if err else None,
            )
        )
    return out


_EVENT_TYPES = {
    "Execution": "EXECUTION", "Context": "CONTEXT", "Step": "STEP", "Wait": "WAIT",
    "Callback": "CALLBACK", "ChainedInvoke": "CHAINED_INVOKE",
}
_EVENT_STATUS = {
    "Started": "STARTED", "Succeeded": "SUCCEEDED", "Failed": "FAILED", "TimedOut": "TIMED_OUT",
    "Stopped": "STOPPED", "Cancelled": "CANCELLED",
}


def events_to_operations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold history events (``GetDurableExecutionHistory``) into service-shaped operations."""
    ops: dict[str, dict[str, Any]] = {}
    for ev in events:
        etype = ev.get("EventType", "")
        if "Id" not in ev:
            continue
        kind = next((k for k in sorted(_EVENT_TYPES, key=len, reverse=True) if etype.startswith(k)), None)
        if kind is None:
            continue
        status = _EVENT_STATUS.get(etype[len(kind):])
        if status is None:
            continue
        op_type = _EVENT_TYPES[kind]
        op = ops.setdefault(ev["Id"], {"Id": ev["Id"], "Type": op_type})
        op["Status"] = status
        for key in ("Name", "ParentId", "SubType"):
            if ev.get(key):
                op[key] = ev[key]
        ts = ev.get("EventTimestamp")
        if status == "STARTED":
            op.setdefault("StartTimestamp", ts)
        else:
            op["EndTimestamp"] = ts
        details = ev.get(f"{etype}Details") or {}
        dkey = _DETAILS[op_type]
        d = op.setdefault(dkey, {})
        for src, dst in (("Result", "Result"), ("Error", "Error"), ("Input", "InputPayload")):
            value = details.get(src)
            if isinstance(value, dict) and "Payload" in value:
                d[dst] = value["Payload"]
        if "CallbackId" in details:
            d["CallbackId"] = details["CallbackId"]
        if "ScheduledEndTimestamp" in details:
            d["ScheduledEndTimestamp"] = details["ScheduledEndTimestamp"]
        retry = details.get("RetryDetails") or {}
        if "CurrentAttempt" in retry:
            d["Attempt"] = retry["CurrentAttempt"]
        if "NextAttemptDelaySeconds" in retry:
            d["NextAttemptDelaySeconds"] = retry["NextAttemptDelaySeconds"]
    return list(ops.values())


class DurableFunctionTestRunner:
    """Runs a ``@durable_execution`` handler to completion in this process."""

    def __init__(
        self,
        handler: Callable,
        poll_interval: float = 0.01,
        max_invocation_page_bytes: int | None = None,
        execution_timeout: int | None = None,
        invocation_timeout: int = 900,
        store: Any = None,
        skip_time: bool = True,  # noqa: FBT001, FBT002 - AWS's signature
        region: str = "us-west-2",
        *,
        callback_grace: float | None = 0.5,
        batch_records: int = 1000,
        checkpoint_batching: bool = False,
        function_name: str = "test-function",
    ) -> None:
        """Arguments up to ``region`` are AWS's runner's, in its order.

        ``execution_timeout``: the default of :meth:`run`'s (AWS's runner: 300; here none,
        so an execution waiting on a callback without deadlines waits until answered).
        ``max_invocation_page_bytes`` is accepted and unused (operations are handed over
        in-process). ``store``: a lambdarun checkpoint store (default: SQLite in a temporary
        folder, ``synchronous=NORMAL``). ``callback_grace``: real seconds the test gets to
        answer a callback before the virtual clock skips to its deadline (None: never).
        ``checkpoint_batching``: batch checkpoints instead of committing every operation.
        """
        if not is_durable_handler(handler):
            raise TypeError("handler must be decorated with @durable_execution")
        self._tmp = None
        if store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lambdarun-durable-")
            store = SQLiteCheckpointStore(f"{self._tmp.name}/durable.db", synchronous="NORMAL")
        self.store = store
        self.clock = VirtualClock() if skip_time else time.time
        self.skip_time = skip_time
        self.poll_interval = poll_interval
        self.execution_timeout = execution_timeout
        self.invocation_timeout = invocation_timeout
        self.region = region
        self.max_invocation_page_bytes = max_invocation_page_bytes
        self.service = DurableService(store, clock=self.clock)
        self.function_name = function_name
        self.functions: dict[str, Callable] = {function_name: handler}
        self.batch_records = batch_records
        self.checkpoint_batching = checkpoint_batching
        self.callback_grace = callback_grace
        self._threads: dict[str, threading.Thread] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, BaseException] = {}
        self._orchestrators: dict[str, Orchestrator] = {}
        self._closed = False

    # -- registration
    def register_durable_function(
        self, function_name: str, handler: Callable, execution_timeout: int | None = None, retention_period_days: int = 7
    ) -> DurableFunctionTestRunner:
        """Make ``context.invoke(function_name, ...)`` run ``handler`` as a chained execution.

        ``execution_timeout``/``retention_period_days`` are accepted for AWS's signature; the
        child runs under the runner's clock (its timeout is the service's to enforce).
        """
        if not is_durable_handler(handler):
            raise TypeError("register_durable_function needs a @durable_execution handler; use register_function")
        self.functions[function_name] = handler
        return self

    def register_function(self, function_name: str, handler: Callable) -> DurableFunctionTestRunner:
        """Make ``context.invoke(function_name, ...)`` call a plain (non-durable) ``handler``.

        It is called once with the JSON-decoded payload and a test Lambda context; its JSON
        result is the invoke's result.
        """

        @durable_execution
        def plain(event: Any, _ctx: Any) -> Any:
            return handler(event, TestLambdaContext(function_name=function_name))

        self.functions[function_name] = plain
        return self

    # -- lifecycle
    def __enter__(self) -> DurableFunctionTestRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        with self.service.changed:
            self.service.changed.notify_all()  # drivers waiting on a callback end
        for t in self._threads.values():
            t.join(timeout=10)
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- time
    def advance_time(self, seconds: float) -> None:
        """Move the virtual clock forward (skip_time mode) and wake the driver."""
        if isinstance(self.clock, VirtualClock):
            self.clock.advance(seconds)
        with self.service.changed:
            self.service.changed.notify_all()

    def _sleep_until(self, t: float) -> None:
        if isinstance(self.clock, VirtualClock):
            self.clock.advance_to(t)
        else:
            time.sleep(max(0.0, t - time.time()))

    # -- invoking
    def invoke_function(
        self, function_name: str, event: dict[str, Any], orchestrator: Orchestrator | None = None
    ) -> dict[str, Any]:
        handler = self.functions.get(function_name)
        if handler is None:
            return {
                "Status": "FAILED",
                "Error": {
                    "ErrorType": "ResourceNotFoundException",
                    "ErrorMessage": f"Function not found: {function_name}; register it with register_durable_function()",
                },
            }
        token = decode_token(event["CheckpointToken"])
        if token["s"] != self.store.url:
            raise ValueError(f"event for store {token['s']!r}, runner uses {self.store.url!r}")
        inv = DurableInvocationInput(
            durable_execution_arn=event["DurableExecutionArn"],
            checkpoint_token=event["CheckpointToken"],
            operations=None if event["InitialExecutionState"].get("NextMarker") else event["InitialExecutionState"]["Operations"],
            store=self.store,
            clock=self.clock,
            batch_records=self.batch_records,
            batching=self.checkpoint_batching,
            updated_operation_ids=list(event.get("UpdatedOperationIds") or []),
        )
        current = orchestrator.current if orchestrator is not None else None
        if inv.operations is None and current and current[0] == inv.durable_execution_arn:
            inv.operations = list(fold(current[1].records).values())  # skip the reload
            inv.checkpoint_token = encode_token(self.store.url, current[1].version, token["i"])
        return handler(inv, TestLambdaContext(function_name=function_name))

    def _orchestrator(self) -> Orchestrator:
        orch = Orchestrator(
            self.service,
            lambda name, event: self.invoke_function(name, event, orch),
            sleep_until=self._sleep_until,
            wait_external=lambda timeout: self._wait_for_work(orch, timeout),
            callback_grace=self.callback_grace,
        )
        return orch

    def _wait_for_work(self, orch: Orchestrator, timeout: float | None) -> bool:
        """Block until the suspended execution has something to do; True if it has.

        Something to do: the service completed an operation since the last invocation
        loaded it (a callback answered or failed, a chained invoke ended), the execution
        was closed (stopped), or a timer is due on the runner's clock (``advance_time``).
        A heartbeat only moves a deadline and wakes nothing, so a callback that waits for
        minutes costs no invocation until it is answered or a deadline passes. ``timeout``
        None waits for as long as it takes.
        """
        if orch.current is None:
            return True
        arn, loaded = orch.current
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.service.changed:
            while True:
                if self._closed:
                    raise RunnerClosedError("the test runner was closed while the execution waited")
                if self._has_work(arn, loaded.version):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.service.changed.wait(remaining)

    def _has_work(self, arn: str, version: int) -> bool:
        cp = self.store.load(arn)
        ops = fold(cp.records)
        for op in ops.values():
            if op["Type"] == "EXECUTION" and op["Status"] not in ("STARTED", "PENDING", "READY"):
                return True
        for rec in cp.records:
            op = rec.get("Op")
            if rec.get("V", 0) > version and rec.get("S") == "s" and op is not None:
                if op["Status"] not in ("STARTED", "PENDING"):
                    return True
        due = self.service.next_due_of(ops)
        return due is not None and due.at <= self.clock()

    def run_async(
        self,
        input: Any = None,  # noqa: A002
        execution_timeout: int | None = None,
        timeout: int | None = None,
        function_name: str | None = None,
        execution_name: str | None = None,
        account_id: str | None = None,
        tenant_id: str | None = None,
    ) -> str:
        """Start an execution and drive it in a background thread; return its ARN.

        ``input`` is encoded as AWS's runner does: a string that is already JSON is sent
        as is, anything else (a plain string, a dict, None) is JSON-encoded. ``timeout`` is
        AWS's deprecated name of ``execution_timeout``. ``account_id``/``tenant_id`` are
        accepted for AWS's signature.
        """
        if execution_timeout is None:
            execution_timeout = timeout if timeout is not None else self.execution_timeout
        fn = function_name or self.function_name
        if fn not in self.functions:
            self.functions[fn] = self.functions[self.function_name]
        arn = self.service.start_execution(
            fn, normalize_input(input), execution_name=execution_name, execution_timeout=execution_timeout
        )
        orch = self._orchestrator()
        self._orchestrators[arn] = orch

        def drive() -> None:
            try:
                self._results[arn] = orch.run(fn, arn)
            except BaseException as e:  # noqa: BLE001
                self._errors[arn] = e
            finally:
                with self.service.changed:
                    self.service.changed.notify_all()

        t = threading.Thread(target=drive, name=f"durable-driver-{arn[-8:]}", daemon=True)
        self._threads[arn] = t
        t.start()
        return arn

    def run(
        self,
        input: Any = None,  # noqa: A002
        execution_timeout: int | None = None,
        timeout: int | None = None,
        function_name: str | None = None,
        execution_name: str | None = None,
        account_id: str | None = None,
        tenant_id: str | None = None,
        *,
        wait_timeout: float | None = None,
    ) -> DurableFunctionTestResult:
        """Start an execution and wait for its end (AWS's signature; see :meth:`run_async`).

        The real-time wait is ``wait_timeout`` seconds, by default the execution timeout
        (as AWS's runner waits), or 60 s when the execution has none.
        """
        if execution_timeout is None:
            execution_timeout = timeout if timeout is not None else self.execution_timeout
        arn = self.run_async(
            input, execution_timeout=execution_timeout, function_name=function_name, execution_name=execution_name,
            account_id=account_id, tenant_id=tenant_id,
        )
        if wait_timeout is None:
            wait_timeout = max(float(execution_timeout or 60), 60.0)
        return self.wait_for_result(arn, timeout=wait_timeout)

    def wait_for_result(self, execution_arn: str, timeout: float = 60) -> DurableFunctionTestResult:
        t = self._threads.get(execution_arn)
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                raise TimeoutError(f"Execution {execution_arn} did not complete within {timeout}s")
        if execution_arn in self._errors:
            raise self._errors[execution_arn]
        return self._result(execution_arn)

    def _result(self, arn: str) -> DurableFunctionTestResult:
        cp = self.store.load(arn)
        all_ops = [public_op(op) for op in fold(cp.records).values()]
        top = [create_operation(op, all_ops) for op in all_ops if op["Type"] != "EXECUTION" and not op.get("ParentId")]
        response = self._results.get(arn) or {}
        st = cp.state
        status = st.get("Status")
        result = response.get("Result") if response.get("Result") not in (None, "") else st.get("Result")
        error = response.get("Error") or st.get("Error")
        history = history_events(cp.records)
        return DurableFunctionTestResult(
            status=InvocationStatus.SUCCEEDED if status == "SUCCEEDED" else InvocationStatus.FAILED
            if status in ("FAILED", "STOPPED", "TIMED_OUT")
            else InvocationStatus.PENDING,
            operations=top,
            result=result,
            error=ErrorObject.from_dict(error) if error else None,
            execution_status=ExecutionStatus[status] if status in ExecutionStatus.__members__ else ExecutionStatus.RUNNING,
            execution_arn=arn,
            history=history,
            invocations=_invocations(history),
        )

    # -- callbacks and history
    def send_callback_success(self, callback_id: str, result: str | bytes | None = None) -> None:
        """Complete a callback; an empty result is no result (``Callback.result()`` is None), as in AWS's runner."""
        self.service.send_callback_success(callback_id, result or None)

    def send_callback_failure(self, callback_id: str, error: ErrorObject | dict | None = None) -> None:
        self.service.send_callback_failure(callback_id, error)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self.service.send_callback_heartbeat(callback_id)

    def get_execution_history(self, execution_arn: str, include_execution_data: bool = True) -> dict[str, Any]:
        return self.service.get_history(execution_arn, include_execution_data=include_execution_data)

    def wait_for_callback(self, execution_arn: str, name: str | None = None, timeout: float = 30) -> str:
        """Block until a CallbackStarted event (optionally with ``name``) appears; return its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in reversed(self.service.get_history(execution_arn)["Events"]):
                if ev["EventType"] == "CallbackStarted" and (name is None or ev.get("Name") == name):
                    cb_id = ev["CallbackStartedDetails"]["CallbackId"]
                    op = self.service.operations(execution_arn).get(ev["Id"])
                    if op and op["Status"] == "STARTED":
                        return cb_id
            if execution_arn in self._results or execution_arn in self._errors:
                break
            time.sleep(0.01)
        raise TimeoutError(f"No pending callback{f' named {name!r}' if name else ''} in {execution_arn}")


class DurableChildContextTestRunner(DurableFunctionTestRunner):
    """Test a ``@durable_with_child_context`` block in isolation (AWS testing package's runner)."""

    def __init__(self, context_function: Callable[..., Any], *args: Any, skip_time: bool = True, **kwargs: Any) -> None:
        @durable_execution
        def handler(event: Any, context: Any) -> Any:
            return context_function(*args, **kwargs)(context)

        super().__init__(handler, skip_time=skip_time)


class DurableFunctionCloudTestRunner:
    """Runs a deployed durable function through the Lambda API and reads its end and history.

    AWS's cloud runner, to AWS's API (botocore's model): ``Invoke`` (RequestResponse or
    Event; the execution ARN from ``X-Amz-Durable-Execution-Arn``), ``GetDurableExecution``
    polled until the execution ends, ``GetDurableExecutionHistory`` (all pages, with
    execution data), ``SendDurableExecutionCallback*``. Point it at AWS (``region``) or at
    any endpoint speaking that API (``lambda_endpoint``: lambdarun's local target), or
    hand it a configured ``lambda_client``.
    """

    def __init__(
        self,
        function_name: str,
        region: str = "us-west-2",
        lambda_endpoint: str | None = None,
        poll_interval: float = 1.0,
        *,
        lambda_client: Any = None,
    ) -> None:
        self.function_name = function_name
        self.region = region
        self.lambda_endpoint = lambda_endpoint
        self.poll_interval = poll_interval
        if lambda_client is None:
            import boto3
            from botocore.config import Config

            lambda_client = boto3.client(
                "lambda", endpoint_url=lambda_endpoint, region_name=region, config=Config(parameter_validation=False)
            )
        self.lambda_client = lambda_client

    def __enter__(self) -> DurableFunctionCloudTestRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _invoke(self, input: Any, invocation_type: str, execution_name: str | None) -> dict[str, Any]:  # noqa: A002
        kwargs: dict[str, Any] = {
            "FunctionName": self.function_name,
            "InvocationType": invocation_type,
            "Payload": json.dumps(input),
        }
        if execution_name:
            kwargs["DurableExecutionName"] = execution_name
        try:
            response = self.lambda_client.invoke(**kwargs)
        except Exception as e:  # noqa: BLE001 - reported with the function's name
            raise DurableFunctionsTestError(f"Failed to invoke Lambda function {self.function_name}: {e}") from e
        expected = 200 if invocation_type == "RequestResponse" else 202
        if response.get("StatusCode") != expected:
            body = response["Payload"].read().decode("utf-8")
            raise DurableFunctionsTestError(f"Lambda invocation failed with status {response.get('StatusCode')}: {body}")
        arn = response.get("DurableExecutionArn")
        if not arn:
            raise DurableFunctionsTestError(
                f"No DurableExecutionArn in the Invoke response of {self.function_name}: is it a durable function "
                "(created with DurableConfig) and invoked with a qualifier?"
            )
        return response

    def run(
        self, input: Any = None, timeout: int = 60, *, execution_name: str | None = None  # noqa: A002
    ) -> DurableFunctionTestResult:
        """Invoke synchronously (``input`` is JSON-encoded), then wait for the execution's end."""
        response = self._invoke(input, "RequestResponse", execution_name)
        return self.wait_for_result(response["DurableExecutionArn"], timeout=timeout)

    def run_async(self, input: Any = None, timeout: int = 60, *, execution_name: str | None = None) -> str:  # noqa: A002
        """Invoke with ``Event`` (202) and return the execution ARN."""
        return self._invoke(input, "Event", execution_name)["DurableExecutionArn"]

    def pause_execution(self, execution_arn: str, timeout: float = 60) -> None:
        raise NotImplementedError("pause_execution() is not implemented for DurableFunctionCloudTestRunner")

    def resume_execution(self, execution_arn: str) -> None:
        raise NotImplementedError("resume_execution() is not implemented for DurableFunctionCloudTestRunner")

    def send_callback_success(self, callback_id: str, result: bytes | str | None = None) -> None:
        kwargs: dict[str, Any] = {"CallbackId": callback_id}
        if result is not None:
            kwargs["Result"] = result.encode() if isinstance(result, str) else result
        self._call("send_durable_execution_callback_success", **kwargs)

    def send_callback_failure(self, callback_id: str, error: ErrorObject | dict | None = None) -> None:
        kwargs: dict[str, Any] = {"CallbackId": callback_id}
        if error is not None:
            kwargs["Error"] = dict(error.to_dict() if isinstance(error, ErrorObject) else error)
        self._call("send_durable_execution_callback_failure", **kwargs)

    def send_callback_heartbeat(self, callback_id: str) -> None:
        self._call("send_durable_execution_callback_heartbeat", CallbackId=callback_id)

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.lambda_client, op)(**kwargs)
        except Exception as e:  # noqa: BLE001
            raise DurableFunctionsTestError(f"{op} failed for {self.function_name}: {e}") from e

    def _not_found(self, e: Exception) -> bool:
        return getattr(e, "response", {}).get("Error", {}).get("Code") == "ResourceNotFoundException"

    def _wait_for_completion(self, execution_arn: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                execution = self.lambda_client.get_durable_execution(DurableExecutionArn=execution_arn)
            except Exception as e:  # noqa: BLE001
                if self._not_found(e):  # an Event invoke's execution may not be visible yet
                    time.sleep(self.poll_interval)
                    continue
                raise DurableFunctionsTestError(f"Failed to get execution status: {e}") from e
            last = execution.get("Status")
            if last in ("SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED"):
                return execution
            time.sleep(self.poll_interval)
        raise TimeoutError(f"Execution did not complete within {timeout}s (last status: {last})")

    def fetch_history(self, execution_arn: str) -> list[dict[str, Any]]:
        """Every event of ``GetDurableExecutionHistory`` (all pages, execution data included)."""
        events: list[dict[str, Any]] = []
        marker = None
        while True:
            kwargs: dict[str, Any] = {"DurableExecutionArn": execution_arn, "IncludeExecutionData": True}
            if marker:
                kwargs["Marker"] = marker
            page = self.lambda_client.get_durable_execution_history(**kwargs)
            events.extend(page.get("Events", []))
            marker = page.get("NextMarker")
            if not marker:
                return events

    def wait_for_result(self, execution_arn: str, timeout: int = 60) -> DurableFunctionTestResult:
        execution = self._wait_for_completion(execution_arn, timeout)
        try:
            events = self.fetch_history(execution_arn)
        except Exception as e:  # noqa: BLE001
            raise DurableFunctionsTestError(f"Failed to fetch execution history: {e}") from e
        execution.setdefault("DurableExecutionArn", execution_arn)
        return DurableFunctionTestResult.from_execution_history(execution, events)

    def wait_for_callback(self, execution_arn: str, name: str | None = None, timeout: int = 60) -> str:
        """The id of a started, unanswered callback (``name``: that one), once its invocation ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = callback_id_from_events(self.fetch_history(execution_arn), name)
            except DurableFunctionsTestError:
                raise
            except Exception as e:  # noqa: BLE001
                if not self._not_found(e):
                    raise DurableFunctionsTestError(f"Failed to fetch execution history: {e}") from e
                found = None
            if found:
                return found
            time.sleep(self.poll_interval)
        raise TimeoutError(f"Callback did not become available within {timeout}s.")


def callback_id_from_events(events: list[dict[str, Any]], name: str | None = None) -> str | None:
    """AWS's rule: a started callback not yet answered whose creating invocation has ended."""
    started = [e for e in events if e.get("EventType") == "CallbackStarted"]
    done = {e.get("Id") for e in events if e.get("EventType") in ("CallbackSucceeded", "CallbackFailed", "CallbackTimedOut")}

    def ready(ev: dict[str, Any]) -> bool:
        return any(e.get("EventType") == "InvocationCompleted" for e in events[events.index(ev) + 1 :])

    if name is not None:
        for ev in started:
            if ev.get("Name") == name:
                if ev.get("Id") in done:
                    raise DurableFunctionsTestError(f"Callback {name} has already completed (succeeded/failed/timed out)")
                return (ev.get("CallbackStartedDetails") or {}).get("CallbackId") if ready(ev) else None
        return None
    active = [ev for ev in started if ev.get("Id") not in done and ready(ev)]
    return (active[-1].get("CallbackStartedDetails") or {}).get("CallbackId") if active else None


def normalize_input(value: Any) -> str:
    """The execution's input payload as AWS's runner makes it (``get_normalized_input``)."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except json.JSONDecodeError:
            pass
    return json.dumps(value)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)
